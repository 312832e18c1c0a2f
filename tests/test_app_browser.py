"""`defectfill app` in a real browser: headless Debian chromium driven by Playwright (no browser
download: `executable_path` points at the system chromium; `make test` installs it with apt).

The test paints a mask with the mouse, generates with a tiny DefectFill model, ticks two
candidates, saves, and checks the page (DOM) and the files written; then a mask file of another
size shows the project's message and writes nothing, and the Runs tab shows a run folder.
Screenshots go to $DEFECTFILL_APP_SCREENSHOTS (default: the test's tmp folder).

A missing chromium or Playwright FAILS this test (it is never skipped): run `make browser`.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from helpers_app import launch_app, manifest_lines, shared_world, written_files

from defectfill.data.images import load_image, load_mask, save_mask

TIMEOUT_MS = 60_000


def chromium_path() -> str:
    path = os.environ.get("DEFECTFILL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("no chromium found: the browser test needs Debian's chromium; run `make browser` "
                    "(apt-get install chromium) or set DEFECTFILL_CHROMIUM to a Chromium binary")
    return path


def _shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("DEFECTFILL_APP_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _zoom_settled(page) -> str:
    """Wait until the editor's zoom read-out (its last line, e.g. "450%") holds still: after an image
    loads, the editor animates its zoom to fit (36% -> 450% for 64 px) and drops strokes until then."""
    last, still = None, 0
    for _ in range(200):
        zoom = page.locator("#editor").inner_text().split("\n")[-1]
        still, last = (still + 1 if zoom == last else 0), zoom
        if still >= 3 and zoom.endswith("%"):
            return zoom
        page.wait_for_timeout(300)
    pytest.fail(f"the editor's zoom never settled (last read {last!r})")


def _paint(page, points: list[tuple[float, float]], tries: int = 3) -> None:
    """One brush stroke through `points` (screen px from the editor's centre, where the image sits).
    Few mouse events on purpose: software-rendered chromium on a busy 2-core machine spends ~1 s on
    each. The editor's Undo button turns on with the first stroke it keeps; checked, and repeated
    along the same path if the stroke was dropped."""
    undo = page.locator("#editor button[aria-label='Undo']")
    for _ in range(tries):
        box = page.locator("#editor canvas").first.bounding_box()
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(cx + points[0][0], cy + points[0][1])
        page.mouse.down()
        for x, y in points[1:]:
            page.mouse.move(cx + x, cy + y)
        page.mouse.up()
        page.wait_for_timeout(300)
        if undo.is_enabled():
            return
    pytest.fail(f"the editor did not take a brush stroke in {tries} tries (its Undo button stayed disabled)")


def test_browser_paint_generate_accept_and_error(tmp_path, tmp_path_factory):
    executable = chromium_path()
    try:
        from playwright.sync_api import expect, sync_playwright
    except ModuleNotFoundError:
        pytest.fail("Playwright for Python is missing: pip install -e '.[dev]' (it is in the dev extra)")
    world = shared_world(tmp_path_factory)
    data = tmp_path / "curated"
    shots = _shots(tmp_path)
    launched = launch_app(world, data)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"])
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            expect.set_options(timeout=TIMEOUT_MS)
            page.goto(launched.url)
            page.locator("#defect-type input").click()
            page.get_by_role("option", name="stain").click()
            page.locator("#good-file input[type=file]").set_input_files(str(world["images"] / "fabric_0.png"))
            expect(page.locator("#message")).to_contain_text("Loaded fabric_0.png (64x64)")
            # the editor shows the image (its "Upload an image" placeholder goes) before it takes strokes
            expect(page.locator("#editor")).not_to_contain_text("Upload an image")
            _zoom_settled(page)
            _paint(page, [(-40, -20), (0, 0), (40, 20)])
            page.screenshot(path=str(shots / "1_mask_painted.png"))

            started = time.perf_counter()
            page.click("#generate")
            expect(page.locator("#message")).to_contain_text("3 candidates in")
            expect(page.locator("#candidates img")).to_have_count(3)
            click_to_candidates = time.perf_counter() - started
            expect(page.locator("#candidates")).to_contain_text("(selected)")
            page.screenshot(path=str(shots / "2_candidates.png"), full_page=True)

            page.locator("#accept label", has_text="#1").click()
            page.locator("#accept label", has_text="#3").click()
            page.click("#save")
            expect(page.locator("#message")).to_contain_text("accepted #1, #3; rejected 1")
            expect(page.locator("#dataset")).to_contain_text("2 accepted (stain 2), 1 rejected")
            page.screenshot(path=str(shots / "3_accepted.png"), full_page=True)

            records = manifest_lines(data)
            assert [r["candidate"] for r in records] == [0, 2]
            assert [r["image"] for r in records] == ["images/fabric_0__stain_00000.png",
                                                      "images/fabric_0__stain_00001.png"]
            good = load_image(world["images"] / "fabric_0.png")
            # the good image came through the browser unchanged (PNG, lossless)
            np.testing.assert_array_equal(load_image(data / records[0]["source_image"]), good)
            mask = load_mask(data / records[0]["request_mask"])
            ys, xs = np.nonzero(mask)
            # the stroke runs from upper left to lower right of the image centre
            assert mask.sum() >= 10 and 10 < xs.mean() < 54 and 10 < ys.mean() < 54
            assert np.corrcoef(xs, ys)[0, 1] > 0.5, "the painted stroke goes down to the right"
            for record in records:
                out = load_image(data / record["image"])
                np.testing.assert_array_equal(out[~mask], good[~mask])

            # a mask file of another size: the project's message in the page, nothing written
            before = written_files(data)
            save_mask(tmp_path / "mask_32x64.png", np.ones((32, 64), bool))
            page.locator("#mask-file input[type=file]").set_input_files(str(tmp_path / "mask_32x64.png"))
            page.wait_for_timeout(500)
            page.click("#generate")
            expect(page.locator("#message")).to_contain_text("mask size 64x32 (WxH) differs from its image 64x64")
            page.screenshot(path=str(shots / "4_error_mask_size.png"), full_page=True)
            page.click("#save")  # the old candidates are already decided: nothing new
            expect(page.locator("#message")).to_contain_text("decided before")
            assert written_files(data) == before

            page.get_by_role("tab", name="Runs").click()
            expect(page.locator("#run-table")).to_contain_text("tiny-bench")
            expect(page.locator("#run-table table")).to_contain_text("0.456")
            expect(page.locator("#run-plots img")).to_have_count(1)
            expect(page.locator("#run-sheets img")).to_have_count(1)
            page.screenshot(path=str(shots / "5_runs_tab.png"), full_page=True)
            page.reload()  # a new visit shows what the data set folder holds now
            expect(page.locator("#dataset")).to_contain_text("2 accepted (stain 2), 1 rejected")
            browser.close()
    finally:
        launched.demo.close()
    print(f"click to 3 candidates (tiny model, 2 steps): {click_to_candidates:.2f} s; screenshots in {shots}")
