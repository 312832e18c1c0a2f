"""`defectfill app` in headless chromium: seconds from the Generate click to the k candidates on the page.

Starts the real command (`python -m defectfill.cli app ...`) in a subprocess, then for each
IMAGE:STEPS argument opens a fresh page, picks the image from --images, paints a short stroke,
clicks Generate and waits for the k candidates; ticks the first, saves, and finally exports.
Prints one JSON line per click (browser seconds and the seconds the page reports for `generate`)
and appends them to OUT/timings.jsonl; screenshots go to OUT/.

    python benchmarks/app_click_to_candidates.py --model runs/concept --images good/ --out runs/app-measure \\
        sim64.png:50 sim64.png:25 strip.png:25

Needs Debian's chromium (`make browser`) and Playwright for Python (in the dev extra).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from test_app_browser import _paint, _zoom_settled  # the browser test's stroke helpers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="passed to defectfill app --model")
    parser.add_argument("--images", required=True, help="folder of good images (defectfill app --images)")
    parser.add_argument("--out", type=Path, default=Path("runs/app-measure"))
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--port", type=int, default=7890)
    parser.add_argument("--num-threads", type=int, default=1)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("plan", nargs="+", metavar="IMAGE:STEPS")
    args = parser.parse_args()
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect, sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{args.port}/"
    models = [arg for m in args.model for arg in ("--model", m)]
    command = [sys.executable, "-m", "defectfill.cli", "app", *models,
               "--images", args.images, "--data", str(args.out / "curated"), "--port", str(args.port),
               "--num-candidates", str(args.k), "--num-threads", str(args.num_threads)]
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    started = time.perf_counter()
    with open(args.out / "app.log", "w") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    results = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            expect.set_options(timeout=600_000)
            page.set_default_timeout(600_000)
            for _ in range(300):
                try:
                    page.goto(url)
                    break
                except PlaywrightError:  # the server is still loading its first model
                    time.sleep(1)
            print(f"page up {time.perf_counter() - started:.1f} s after the command started", flush=True)
            current = None
            for i, item in enumerate(args.plan):
                name, steps = item.rsplit(":", 1)
                if name != current:
                    page.goto(url)  # a fresh page per image: the editor starts empty
                    page.locator("#pick-image input").click()
                    page.get_by_role("option", name=name).click()
                    expect(page.locator("#message")).to_contain_text(f"Loaded {name}")
                    expect(page.locator("#editor")).not_to_contain_text("Upload an image")
                    zoom = _zoom_settled(page)
                    _paint(page, [(-30, -6), (0, 0), (30, 6)])
                    current = name
                for elem, value in (("steps", steps), ("guidance", args.guidance), ("seed", i)):
                    box = page.locator(f"#{elem} input[type=number]")
                    box.fill(str(value))
                    box.press("Enter")
                t0 = time.perf_counter()
                page.click("#generate")
                expect(page.locator("#message")).to_contain_text(f"{args.k} candidates in")
                expect(page.locator("#candidates img")).to_have_count(args.k)
                seconds = time.perf_counter() - t0
                message = page.locator("#message").inner_text()
                page.screenshot(path=str(args.out / f"{i}_{Path(name).stem}_{steps}steps.png"), full_page=True)
                page.locator("#accept label").first.click()
                page.click("#save")
                expect(page.locator("#message")).to_contain_text("accepted #1")
                results.append({"image": name, "steps": int(steps), "guidance": args.guidance, "k": args.k,
                                "zoom": zoom, "click_to_candidates_s": round(seconds, 2), "message": message})
                print(json.dumps(results[-1]), flush=True)
            page.click("#export")
            expect(page.locator("#message")).to_contain_text("Exported YOLO")
            page.screenshot(path=str(args.out / "exported.png"), full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(30)
    with open(args.out / "timings.jsonl", "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
