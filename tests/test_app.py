"""`defectfill app`: the curation folder, request checks, run folders, and the launched app driven
through `gradio_client` on localhost with tiny real models (DefectFill 64 px, 2 steps; cut-paste)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers_app import launch_app, make_run_folder, manifest_lines, shared_world, written_files
from PIL import Image

from defectfill.app.curation import CURATION_KEYS, CurationRequest, CurationSet
from defectfill.app.requests import candidate_tiles, editor_value, mask_layer, request_from_editor
from defectfill.app.runs import read_run_folder
from defectfill.data.images import load_image, load_mask, save_image, save_mask
from defectfill.errors import DataError
from defectfill.generators.manifest import read_generation_manifest
from gan_baselines.cutpaste import CutPaste


def _fabric(seed: int = 0, size: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(90, 160, (size, size, 3), dtype=np.uint8)


def _cutpaste_result(image: np.ndarray, mask: np.ndarray, k: int = 3):
    from defectfill.data.sample import DefectSample

    real = _fabric(7)
    real_mask = np.zeros(real.shape[:2], bool)
    real_mask[10:20, 12:30] = True
    real[real_mask] = 20
    model = CutPaste().fit([DefectSample(real, real_mask, "stain")])
    return model.generate(image, mask, defect_type="stain", num_candidates=k, generator=0)


def _request(image, mask, seed=0):
    return CurationRequest(image=image, mask=mask, defect_type="stain", generator="cutpaste", model="m", seed=seed,
                           source_name="bolt_12.png")


# ------------------------------------------------------------------------------------ curation
def test_curation_set_accepts_exactly_the_chosen_candidates_resumes_and_exports(tmp_path):
    image, mask = _fabric(), np.zeros((48, 48), bool)
    mask[14:30, 18:34] = True
    result = _cutpaste_result(image, mask)
    dataset = CurationSet(tmp_path / "set")
    done = dataset.decide(_request(image, mask), result, accept=[0, 2], reject=[1])
    assert done == {"accepted": [0, 2], "rejected": [1], "skipped": []}
    records = manifest_lines(tmp_path / "set")
    assert [r["candidate"] for r in records] == [0, 2] and all(tuple(r) == CURATION_KEYS for r in records)
    assert [r["image"] for r in records] == ["images/bolt_12__stain_00000.png", "images/bolt_12__stain_00001.png"]
    for record, index in zip(records, [0, 2]):
        np.testing.assert_array_equal(load_image(tmp_path / "set" / record["image"]), result.candidates[index])
        np.testing.assert_array_equal(load_mask(tmp_path / "set" / record["changed_mask"]), result.changed_masks[index])
        np.testing.assert_array_equal(load_mask(tmp_path / "set" / record["request_mask"]), mask)
        assert record["boxes"] == result.boxes[index].tolist() and record["score"] == pytest.approx(result.scores[index])
    np.testing.assert_array_equal(load_image(tmp_path / "set" / records[0]["source_image"]), image)
    # the folder is a generation folder: the downstream stage reads it as any generator's output
    items = read_generation_manifest(tmp_path / "set")
    assert [i.generator for i in items] == ["cutpaste", "cutpaste"]

    # re-opening resumes: the same decisions are no-ops, new ones continue the numbering
    reopened = CurationSet(tmp_path / "set")
    assert len(reopened) == 2 and len(reopened.rejected) == 1 and reopened.counts() == {"stain": 2}
    assert reopened.decide(_request(image, mask), result, accept=[0, 2], reject=[1])["skipped"] == [0, 1, 2]
    other = _cutpaste_result(image, mask)
    reopened.decide(_request(image, mask, seed=5), other, accept=[1], reject=[])
    assert [r["image"] for r in manifest_lines(tmp_path / "set")][-1] == "images/bolt_12__stain_00002.png"
    assert "3 accepted (stain 3), 1 rejected" in reopened.summary()

    # a second page or app on the same folder: it re-reads the manifest under the folder's lock
    other_app = CurationSet(tmp_path / "set")
    reopened.decide(_request(image, mask, seed=6), other, accept=[0], reject=[])
    other_app.decide(_request(image, mask, seed=7), other, accept=[0], reject=[])
    names = [r["image"] for r in manifest_lines(tmp_path / "set")]
    assert len(names) == len(set(names)) == 5 and not (tmp_path / "set" / ".defectfill.lock").exists()
    reopened.reload()

    paths = reopened.export()
    data_yaml = paths["yolo"].read_text()
    assert "stain" in data_yaml
    labels = sorted((tmp_path / "set" / "export" / "yolo" / "labels" / "train").glob("*.txt"))
    assert len(labels) == 5 and all(p.read_text().startswith("0 ") for p in labels)
    coco = json.loads(paths["coco"].read_text())
    assert len(coco["images"]) == 5 and coco["categories"][0]["name"] == "stain"
    assert len(coco["annotations"]) == sum(len(r["boxes"]) for r in manifest_lines(tmp_path / "set"))


def test_curation_set_refuses_bad_candidates_and_writes_nothing(tmp_path):
    image, mask = _fabric(), np.zeros((48, 48), bool)
    mask[5:15, 5:15] = True
    result = _cutpaste_result(image, mask, k=2)
    dataset = CurationSet(tmp_path / "set")
    with pytest.raises(DataError, match="not in 0..1"):
        dataset.decide(_request(image, mask), result, accept=[0, 2], reject=[])
    with pytest.raises(DataError, match="both accepted and rejected"):
        dataset.decide(_request(image, mask), result, accept=[0], reject=[0])
    assert written_files(tmp_path / "set") == []
    with pytest.raises(DataError, match="nothing accepted yet"):
        dataset.export()


# ------------------------------------------------------------------------------------ requests
def test_request_from_editor_reads_strokes_and_refuses_bad_masks(tmp_path):
    image = _fabric(size=32)
    mask = np.zeros((32, 32), bool)
    mask[3:9, 4:20] = True
    got_image, got_mask = request_from_editor(editor_value(np.dstack([image, np.full((32, 32), 255, np.uint8)]), mask))
    np.testing.assert_array_equal(got_image, image)
    np.testing.assert_array_equal(got_mask, mask)
    assert mask_layer(mask)[..., 3].astype(bool).sum() == mask.sum()
    with pytest.raises(DataError, match="the mask is empty"):
        request_from_editor(editor_value(image))
    with pytest.raises(DataError, match="no good image"):
        request_from_editor({"background": None, "layers": []})
    save_mask(tmp_path / "other.png", np.ones((16, 32), bool))
    with pytest.raises(DataError, match="mask size 32x16 .* differs from its image 32x32"):
        request_from_editor(editor_value(image), tmp_path / "other.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="not a readable image"):
        request_from_editor(editor_value(image), tmp_path / "broken.png")


def test_candidate_tiles_outline_changed_pixels_and_crop_a_strip():
    strip = np.concatenate([_fabric(s, 48) for s in range(8)], axis=1)  # 48 x 384 "line-scan" strip
    mask = np.zeros(strip.shape[:2], bool)
    mask[20:30, 300:316] = True
    result = _cutpaste_result(strip, mask, k=2)
    tiles = candidate_tiles(result)
    assert [t[0].shape for t in tiles] == [(48, 96, 3)] * 2  # the part of the strip around the defect
    assert tiles[result.selected[0]][1].endswith("(selected)") and "mean_abs_diff_in_mask" in tiles[0][1]
    red = np.all(tiles[0][0] == (255, 0, 0), axis=-1)
    assert red.any() == bool(result.changed_masks[0].any())


def test_read_run_folder_lists_table_plots_and_sheets(tmp_path):
    view = read_run_folder(make_run_folder(tmp_path / "run"))
    assert view.kind == "bench" and view.title == "tiny-bench" and "cutpaste | 0.456" in view.table
    assert [c for _, c in view.plots] == ["plots/f_measure_per_class.png"]
    assert [c for _, c in view.sheets] == ["sheets/cutpaste.png"] and view.notes == ["a note for the page"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no bench.json, summary.json, results.json or table.md"):
        read_run_folder(tmp_path / "empty")


# ----------------------------------------------------------------------- the app on localhost
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return shared_world(tmp_path_factory)


def _editor_files(client_file, image_path: Path, mask: np.ndarray, tmp: Path) -> dict:
    save_image(tmp / "layer.png", mask_layer(mask))
    return {"background": client_file(str(image_path)), "layers": [client_file(str(tmp / "layer.png"))],
            "composite": None}


def test_app_api_generate_accept_two_resume(world, tmp_path):
    from gradio_client import Client, handle_file

    data = tmp_path / "curated"
    launched = launch_app(world, data)
    try:
        client = Client(launched.url, verbose=False)
        _, message = client.predict("fabric_0.png", api_name="/pick_image")
        assert message == "Loaded fabric_0.png (64x64)."
        mask = np.zeros((64, 64), bool)
        mask[20:36, 22:42] = True
        value = _editor_files(handle_file, world["images"] / "fabric_0.png", mask, tmp_path)
        model = "defectfill: model"
        tiles, choices, message = client.predict(value, None, model, "stain", 3, 0, 2, 7.5, api_name="/generate")
        assert len(tiles) == 3 and "3 candidates in" in message, message
        assert [c[1] for c in choices["choices"]] == ["#1", "#2", "#3"] and "(selected)" in str(choices)
        said, summary = client.predict(str(data), ["#1", "#3"], api_name="/decide")
        assert said.startswith("accepted #1, #3; rejected 1"), said
        assert "2 accepted (stain 2), 1 rejected" in summary

        records = manifest_lines(data)
        assert [r["candidate"] for r in records] == [0, 2] and {r["generator"] for r in records} == {"defectfill"}
        assert sorted(p.name for p in (data / "images").iterdir()) == [
            "fabric_0__stain_00000.png", "fabric_0__stain_00001.png"]
        for record in records:
            np.testing.assert_array_equal(load_mask(data / record["request_mask"]), mask)
            out = load_image(data / record["image"])
            good = load_image(world["images"] / "fabric_0.png")
            np.testing.assert_array_equal(out[~mask], good[~mask])  # only the mask was painted
            assert not np.array_equal(out, good)
        # deciding again writes nothing
        said, _ = client.predict(str(data), ["#1", "#3"], api_name="/decide")
        assert "3 decided before" in said and len(manifest_lines(data)) == 2

        # errors: the project's message in the page, nothing written
        before = written_files(data)
        save_mask(tmp_path / "small_mask.png", np.ones((32, 64), bool))
        _, _, message = client.predict(value, handle_file(str(tmp_path / "small_mask.png")), model, "stain", 3, 0, 2,
                                       7.5, api_name="/generate")
        assert message.startswith("**Error:**") and "mask size 64x32 (WxH) differs from its image 64x64" in message
        (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
        _, message = client.predict(handle_file(str(tmp_path / "broken.png")), api_name="/load_image")
        assert message.startswith("**Error:**") and "broken.png: not a readable image" in message
        _, _, message = client.predict({**value, "layers": []}, None, model, "stain", 3, 0, 2, 7.5,
                                       api_name="/generate")
        assert "the mask is empty" in message
        assert written_files(data) == before

        # cut-paste, a proposed mask, the export and the runs tab through the same API
        proposed, message = client.predict(value, "hole", 4, "procedural", api_name="/propose")
        assert message.startswith("Proposed a hole mask"), message
        proposed_alpha = np.asarray(Image.open(proposed["layers"][0]))[..., 3]
        assert 0 < (proposed_alpha > 0).sum() < 64 * 64 // 4  # a small hole, painted on the editor's layer
        _, _, message = client.predict(value, None, f"cutpaste: {world['real'].name}", "hole", 2, 1, 2, 7.5,
                                       api_name="/generate")
        assert "2 candidates in" in message, message
        message = client.predict(str(data), api_name="/export")
        assert message.startswith("Exported YOLO") and (data / "export" / "coco" / "annotations.json").is_file()
        table, plots, sheets, message = client.predict(str(world["run"]), api_name="/open_run")
        assert "cutpaste | 0.456" in table and len(plots) == 1 and len(sheets) == 1
    finally:
        launched.demo.close()

    # re-opening the folder (a new app) resumes it: same count, numbering goes on
    reopened = launch_app(world, data)
    try:
        client = Client(reopened.url, verbose=False)
        summary, _ = client.predict(str(data), api_name="/open_dataset")
        assert "2 accepted (stain 2), 1 rejected" in summary
        value = _editor_files(handle_file, world["images"] / "fabric_1.png", mask, tmp_path)
        client.predict(value, None, "defectfill: model", "stain", 2, 9, 2, 7.5, api_name="/generate")
        said, summary = client.predict(str(data), ["#2"], api_name="/decide")
        assert said.startswith("accepted #2;") and "3 accepted" in summary
        assert manifest_lines(data)[-1]["image"] == "images/upload__stain_00002.png"
    finally:
        reopened.demo.close()


def test_app_command_is_listed_and_needs_a_model(capsys):
    from defectfill.cli import build_parser, main

    assert "make and curate defects by hand in a browser" in build_parser().format_help()
    assert main(["app", "--data", "x"]) == 1
    assert "--model: give at least one trained generator folder" in capsys.readouterr().err
