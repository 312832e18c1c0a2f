"""defectfill.data.aitex on a tiny AITEX-like folder (512x64 strips) holding every known quirk."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from defectfill.data.aitex import defect_name, parse_name, read_aitex
from defectfill.data.images import DataWarning
from defectfill.data.readers import ReadReport, detect_layout, read_dataset
from defectfill.errors import DataError

H, W = 64, 512


def _strip(rng):
    return rng.integers(60, 200, size=(H, W), dtype=np.uint8)


def _save(path, arr, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode=mode).save(path)


def _mask(x0, y0, x1, y1):
    m = np.zeros((H, W), np.uint8)
    m[y0:y1, x0:x1] = 255
    return m


@pytest.fixture()
def aitex_dir(tmp_path):
    rng = np.random.default_rng(0)
    d, m, g = tmp_path / "Defect_images", tmp_path / "Mask_images", tmp_path / "NoDefect_images"
    # clean: broken_end, one mask
    _save(d / "0001_002_00.png", _strip(rng))
    _save(m / "0001_002_00_mask.png", _mask(100, 0, 104, 64))
    # two mask files -> union
    _save(d / "0002_019_01.png", _strip(rng))
    _save(m / "0002_019_01_mask1.png", _mask(10, 10, 20, 20))
    _save(m / "0002_019_01_mask2.png", _mask(300, 30, 320, 40))
    # anti-aliased mask edges
    soft = _mask(200, 20, 230, 40).astype(np.float32)
    soft[19, 200:230] = 90  # faint edge: background
    soft[40, 200:230] = 200  # strong edge: defect
    _save(d / "0003_030_02.png", _strip(rng))
    _save(m / "0003_030_02_mask.png", soft.astype(np.uint8))
    # mask and image in greyscale+alpha (LA) mode
    _save(d / "0004_006_03.png", np.dstack([_strip(rng), np.full((H, W), 255, np.uint8)]), mode="LA")
    _save(m / "0004_006_03_mask.png", np.dstack([_mask(50, 5, 60, 60), np.full((H, W), 255, np.uint8)]), mode="LA")
    # all-black mask
    _save(d / "0005_010_04.png", _strip(rng))
    _save(m / "0005_010_04_mask.png", np.zeros((H, W), np.uint8))
    # no mask at all
    _save(d / "0006_016_05.png", _strip(rng))
    # unknown defect code
    _save(d / "0007_099_06.png", _strip(rng))
    _save(m / "0007_099_06_mask.png", _mask(400, 10, 420, 30))
    # a mask with no image
    _save(m / "0099_002_00_mask.png", _mask(1, 1, 5, 5))
    # good strips in fabric folders, one of them 3796/8 wide like the odd real strip
    _save(g / "2311694-2040n7u" / "0001_000_00.png", _strip(rng))
    _save(g / "2311694-2040n7u" / "0002_000_00.png", _strip(rng))
    _save(g / "2608691-202020u" / "0003_000_01.png", rng.integers(0, 255, size=(H, 474), dtype=np.uint8))
    return tmp_path


def test_read_aitex_quirks_counted_not_dropped_silently(aitex_dir):
    report = ReadReport()
    with pytest.warns(DataWarning) as caught:
        samples = read_aitex(aitex_dir, report=report)
    by_name = {s.meta["name"]: s for s in samples}
    defects = {n: s for n, s in by_name.items() if not s.is_good}
    assert sorted(defects) == ["0001_002_00", "0002_019_01", "0003_030_02", "0004_006_03", "0007_099_06"]
    assert defects["0001_002_00"].defect_type == "broken_end"
    assert defects["0002_019_01"].defect_type == "fuzzyball"
    assert defects["0003_030_02"].defect_type == "nep"
    assert defects["0004_006_03"].defect_type == "broken_yarn"
    assert defects["0007_099_06"].defect_type == "code_099"
    # union of the two mask files
    union = (_mask(10, 10, 20, 20) | _mask(300, 30, 320, 40)) > 0
    np.testing.assert_array_equal(defects["0002_019_01"].mask, union)
    assert defects["0002_019_01"].meta["mask_files"] == ["0002_019_01_mask1.png", "0002_019_01_mask2.png"]
    # anti-aliased: faint edge dropped, strong edge kept
    expected = _mask(200, 20, 230, 41) > 0
    np.testing.assert_array_equal(defects["0003_030_02"].mask, expected)
    np.testing.assert_array_equal(defects["0004_006_03"].mask, _mask(50, 5, 60, 60) > 0)
    assert all(s.is_gray and s.image.shape == (H, s.image.shape[1], 3) for s in samples)
    assert defects["0001_002_00"].meta["fabric"] == "00" and defects["0001_002_00"].meta["code"] == "002"
    goods = [s for s in samples if s.is_good]
    assert len(goods) == 3 and {s.meta["fabric_folder"] for s in goods} == {"2311694-2040n7u", "2608691-202020u"}
    assert {s.size for s in goods} == {(H, W), (H, 474)}
    # every quirk counted
    assert report.counts["mask_union"] == 1
    assert report.counts["nonbinary_mask"] == 1
    assert report.counts["mask_with_alpha"] == 1 and report.counts["alpha_dropped"] == 1
    assert report.counts["empty_mask"] == 1 and report.counts["missing_mask"] == 1
    assert report.counts["unknown_code"] == 1 and report.counts["orphan_mask"] == 1
    assert report.counts["grayscale"] == len(samples) + 2  # the two skipped strips were read too
    assert len(report.skipped) == 2
    assert any("0005_010_04" in s for s in report.skipped) and any("0006_016_05" in s for s in report.skipped)
    # anti-aliasing is said once, with its count
    messages = [str(c.message) for c in caught]
    assert sum("thresholded at > 127" in m for m in messages) == 1
    assert any(m.startswith("1 file(s): defect image without a mask") for m in messages)
    text = "\n".join(report.lines())
    assert "empty_mask" in text and "missing_mask" in text and "0006_016_05" in text


def test_read_aitex_policies_and_layout(aitex_dir):
    assert detect_layout(aitex_dir) == "aitex"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        assert len(read_dataset(aitex_dir)) == 8
        assert len(read_aitex(aitex_dir, include_good=False)) == 5
        kept = read_aitex(aitex_dir, include_good=False, unlabelled="good")
    assert len(kept) == 7 and sum(s.is_good for s in kept) == 2
    with pytest.raises(DataError, match=r"0005_010_04_mask\.png: all-black mask"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        read_aitex(aitex_dir, unlabelled="error")


def test_mask_of_other_size_is_an_error(aitex_dir):
    _save(aitex_dir / "Mask_images" / "0001_002_00_mask.png", np.zeros((H, W // 2), np.uint8))
    with pytest.raises(DataError, match=r"0001_002_00_mask\.png.*256x64.*512x64"):
        read_aitex(aitex_dir)


def test_names_and_codes():
    assert parse_name("0044_019_04") == {"image": "0044", "code": "019", "fabric": "04"}
    assert parse_name("0044_019") is None and parse_name("a044_019_04") is None
    assert defect_name("027") == "knots" and defect_name("000") == "good" and defect_name("123") == "code_123"
    with pytest.raises(DataError, match="not an AITEX folder"):
        read_aitex("/nonexistent-aitex-folder")


def test_unparsed_names_are_skipped_and_listed(aitex_dir):
    _save(aitex_dir / "Defect_images" / "scan 12.png", np.zeros((H, W), np.uint8))
    report = ReadReport()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        samples = read_aitex(aitex_dir, report=report, include_good=False)
    assert len(samples) == 5 and report.counts["unparsed_name"] == 1
    assert any("scan 12.png" in line and "nnnn_ddd_ff" in line for line in report.skipped)


def test_defect_strips_without_masks_are_flagged_and_counted_per_code(tmp_path, capsys):
    """A folder of nnnn_ddd_ff strips and no masks reads as good images: warned loudly, with the fix,
    and `data info` counts the names per fabric code (ff) and per defect code (ddd)."""
    import json

    from defectfill.cli import main
    from defectfill.data.aitex import code_counts

    rng = np.random.default_rng(5)
    for name in ("0001_002_01", "0002_019_01", "0003_019_02", "0004_000_02", "0005_000_02"):
        _save(tmp_path / f"{name}.png", _strip(rng))
    assert detect_layout(tmp_path) == "good"
    report = ReadReport()
    with pytest.warns(DataWarning, match=r"3 file\(s\): .*AITEX defect code.*read as a GOOD image.*Mask_images"):
        samples = read_dataset(tmp_path, report=report)
    assert report.counts["defect_code_no_mask"] == 3 and all(s.is_good for s in samples)
    assert samples[0].meta["declared_code"] == "002" and samples[0].meta["fabric"] == "01"
    fabrics, codes = code_counts(s.meta["name"] for s in samples)
    assert fabrics == {"01": 2, "02": 3} and codes == {"002": 1, "019": 2, "000": 2}
    assert main(["data", "info", str(tmp_path), "--json", str(tmp_path / "info.json")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("WARNING: 3 of 5 file names carry an AITEX defect code")
    assert "Fix: put the defect strips in Defect_images/" in out
    assert "fabric codes (nnnn_ddd_ff names, ff): 01 x2, 02 x3" in out
    assert "000 good x2, 002 broken_end x1, 019 fuzzyball x2" in out
    summary = json.loads((tmp_path / "info.json").read_text())
    assert summary["fabric_codes"] == {"01": 2, "02": 3} and summary["defect_codes"]["019"] == 2
    assert main(["data", "convert", str(tmp_path), "--to", "mvtec", "--out", str(tmp_path / "o")]) == 0
    assert "WARNING: 3 of 5" in capsys.readouterr().err


def test_data_info_counts_fabric_codes_of_an_aitex_folder(aitex_dir, capsys):
    from defectfill.cli import main

    assert main(["data", "info", str(aitex_dir)]) == 0
    out = capsys.readouterr().out
    assert not out.startswith("WARNING")  # the defects here have their masks (or are skipped and listed)
    # read: 4 defects with masks + 099 (unknown code) + 3 good strips; 0005 (black mask), 0006 (no mask) skipped
    assert "fabric codes (nnnn_ddd_ff names, ff): 00 x3, 01 x2, 02 x1, 03 x1, 06 x1" in out
