"""The bad-input matrix: every case x every entry point gives the project's own error (a DefectfillError
naming the file and the fix) or a documented conversion, and nothing is written to the output folder.

Entry points: the image loader, the dataset readers (MVTec layout), `defectfill data info`,
`defectfill generate` (in-process, cut-paste), every registered generator's `generate` (cut-paste and a
tiny DefectFill), `defectfill train` and the bench config. The table of outcomes is in
/work/notes/issue-23.md (docs: DEVELOPING.md "Bad input").
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from defectfill.cli import main
from defectfill.data.images import DataWarning, load_image, load_mask
from defectfill.data.readers import read_dataset
from defectfill.errors import ConfigError, DataError, DefectfillError, GenerationError

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------- bad files
def _png_header(width: int, height: int) -> bytes:
    """A PNG holding only its header: what PIL reads before decoding (a forged or huge image)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IEND", b""))


def _encoded(fmt: str, array: np.ndarray | None = None, mode: str | None = None) -> bytes:
    array = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8) if array is None else array
    buf = io.BytesIO()
    img = Image.fromarray(array)
    (img.convert(mode) if mode else img).save(buf, fmt)
    return buf.getvalue()


# case -> bytes of a file that cannot be used (the error must name the file)
BAD_FILES = {
    "zero-byte.png": lambda: b"",
    "zero-byte.jpg": lambda: b"",
    "zero-byte.tif": lambda: b"",
    "truncated.png": lambda: _encoded("PNG")[:200],
    "truncated.jpg": lambda: _encoded("JPEG")[:300],
    "truncated.tif": lambda: _encoded("TIFF")[:300],
    "not-an-image.png": lambda: b"hello, this is text",
    "huge-20000x20000.png": lambda: _png_header(20000, 20000),
}

# case -> (file bytes, conversion note key or None): read with a documented conversion
CONVERTED_FILES = {
    "one-pixel.png": (lambda: _encoded("PNG", np.full((1, 1, 3), 90, np.uint8)), None),
    "grey.png": (lambda: _encoded("PNG", mode="L"), None),  # greyscale fabric: normal, flagged on the sample
    "palette.png": (lambda: _encoded("PNG", mode="P"), "palette"),
    "rgba.png": (lambda: _encoded("PNG", mode="RGBA"), "alpha_dropped"),
    "cmyk.jpg": (lambda: _encoded("JPEG", mode="CMYK"), "cmyk"),
    "16-bit.png": (lambda: _encoded("PNG", (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)),
                   "high_bit_depth"),
    "name with spaces é ü 布.png": (lambda: _encoded("PNG"), None),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_image_files_are_refused_naming_the_file(case, tmp_path):
    path = tmp_path / "dir with space ü" / case
    path.parent.mkdir()
    path.write_bytes(BAD_FILES[case]())
    with pytest.raises(DataError) as err:
        load_image(path)
    message = str(err.value)
    assert str(path) in message
    assert ("re-export" in message or "cut it into smaller images" in message or "DEFECTFILL_MAX_PIXELS" in message)
    with pytest.raises(DataError, match="re-export|smaller images"):
        load_mask(path)


def test_pixel_limit_is_configurable_and_checked_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "ok.png"
    path.write_bytes(_encoded("PNG"))
    assert load_image(path).shape == (64, 64, 3)
    monkeypatch.setenv("DEFECTFILL_MAX_PIXELS", "4000")
    with pytest.raises(DataError, match=r"64x64 = 4,096 pixels, above the limit of 4,000 \(refused before decoding\)"):
        load_image(path)
    forged = tmp_path / "forged.png"  # 12000 x 12000 below PIL's bomb limit, header only: decoding would fail
    forged.write_bytes(_png_header(12000, 12000))
    monkeypatch.setenv("DEFECTFILL_MAX_PIXELS", str(10**8))
    with pytest.raises(DataError, match="144,000,000 pixels, above the limit of 100,000,000"):
        load_image(forged)


def test_label_maps_of_the_segmenter_and_the_report_go_through_the_pixel_limit(tmp_path, monkeypatch):
    """The segmenter's class masks (downstream.datasets) and the report's contact sheet read label PNGs
    through data.images' limited opener: a forged huge header is refused before decoding."""
    from defectfill.downstream.datasets import load_class_mask
    from defectfill.report.html import synthetic_contact_sheet

    forged = tmp_path / "masks" / "train" / "a.png"
    forged.parent.mkdir(parents=True)
    forged.write_bytes(_png_header(12000, 12000))  # below PIL's own bomb limit: only ours stops it
    with pytest.raises(DataError, match=r"a\.png: image is 12000x12000 .* \(refused before decoding\)"):
        load_class_mask(forged, num_classes=3)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "images" / "train").mkdir(parents=True)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "images" / "train" / "a.png")
    (tmp_path / "index.jsonl").write_text(json.dumps({"file": "images/train/a.png", "origin": "synthetic",
                                                      "defect_type": "stain"}) + "\n")
    with pytest.raises(DataError, match=r"a\.png: image is 12000x12000 .* \(refused before decoding\)"):
        synthetic_contact_sheet({"dataset_dir": str(tmp_path)}, tmp_path / "sheet.png")
    small = tmp_path / "small.png"
    Image.fromarray(np.full((64, 64), 2, np.uint8)).save(small)
    assert load_class_mask(small, num_classes=3).max() == 2  # class indices kept, not binarised
    monkeypatch.setenv("DEFECTFILL_MAX_PIXELS", "4000")  # the same configurable limit as load_image
    with pytest.raises(DataError, match="4,096 pixels, above the limit of 4,000"):
        load_class_mask(small, num_classes=3)


def test_every_image_file_is_opened_by_data_images_only():
    """One home for decoding image files (the pixel limit and the project's errors): no Image.open,
    cv2.imread or imageio anywhere else in the product."""
    import re

    pattern = re.compile(r"Image\.open\(|cv2\.imread|imageio|PIL\.Image\.open|torchvision\.io\.(read|decode)_image")
    found = [f"{p.relative_to(REPO)}:{n}" for d in ("defectfill", "gan_baselines", "train_scripts")
             for p in sorted((REPO / d).rglob("*.py")) if p != REPO / "defectfill" / "data" / "images.py"
             for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line.split("#")[0])]
    assert found == [], f"open images through defectfill.data.images (load_image / load_mask / load_label_map): {found}"


@pytest.mark.parametrize("case", sorted(CONVERTED_FILES))
def test_unusual_image_files_are_converted_and_say_so(case, tmp_path):
    make, note = CONVERTED_FILES[case]
    path = tmp_path / case
    path.write_bytes(make())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = load_image(path)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    said = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    if note is None:
        assert said == []
    else:
        from defectfill.data.images import CONVERSIONS

        assert said == [f"{path}: {CONVERSIONS[note]}"]


MASK_CASES = {  # mask array (image 64x64) -> expected: "error: <regex>" or the number of defect pixels
    "other-size": (np.zeros((32, 64), np.uint8), "error: mask size 64x32 .* differs from its image 64x64"),
    "non-binary": (np.where(np.arange(64)[None, :] < 10, 200, np.where(np.arange(64)[None, :] < 12, 60, 0))
                   .repeat(64, 0).astype(np.uint8), 640),
    "empty": (np.zeros((64, 64), np.uint8), "error: mask is empty but a defect is declared"),
    "all-ones": (np.full((64, 64), 255, np.uint8), 4096),
}


@pytest.mark.parametrize("case", sorted(MASK_CASES))
def test_mask_files(case, tmp_path):
    array, expected = MASK_CASES[case]
    path = tmp_path / f"{case}.png"
    Image.fromarray(array).save(path)
    if isinstance(expected, str):
        with pytest.raises(DataError, match=expected[len("error: "):]) as err:
            load_mask(path, shape=(64, 64), allow_empty=False)
        assert str(path) in str(err.value)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            assert int(load_mask(path, shape=(64, 64), allow_empty=False).sum()) == expected


# ---------------------------------------------------------------- readers, data info, generate (CLI)
@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from helpers_defectfill_training import make_mvtec_dataset

    root = tmp_path_factory.mktemp("matrix")
    ds = make_mvtec_dataset(root / "ds", {"stain": 2})
    good = root / "good"
    good.mkdir()
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(60, 200, (64, 64, 3), dtype=np.uint8)).save(
            good / f"good_{i}.png")
    return ds, good


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_in_a_dataset_reader_and_data_info(case, dataset, tmp_path, capsys):
    ds, _ = dataset
    bad = tmp_path / "bad dataset é"
    shutil.copytree(ds, bad)
    target = bad / "test" / "stain" / "005.png"
    target.write_bytes(BAD_FILES[case]())
    with pytest.raises(DataError, match="re-export|smaller images") as err:
        read_dataset(bad)
    assert str(target) in str(err.value)
    assert main(["data", "info", str(bad)]) == 1
    assert str(target) in capsys.readouterr().err
    out = tmp_path / "converted"
    assert main(["data", "convert", str(bad), "--to", "coco", "--out", str(out)]) == 1
    assert str(target) in capsys.readouterr().err
    assert _tree(out) == [], "data convert wrote into its output folder before refusing"


def test_a_dataset_where_every_image_is_unreadable(dataset, tmp_path, capsys):
    ds, _ = dataset
    bad = tmp_path / "all-bad"
    shutil.copytree(ds, bad)
    for path in bad.rglob("*.png"):
        path.write_bytes(b"")
    with pytest.raises(DataError, match="not a readable image"):
        read_dataset(bad)
    assert main(["data", "info", str(bad)]) == 1
    assert "not a readable image" in capsys.readouterr().err
    out = tmp_path / "out"
    assert main(["generate", "--generator", "cutpaste", "--model", str(bad), "--images", str(bad / "train" / "good"),
                 "--defect-type", "stain", "--out", str(out)]) == 1
    assert "cannot be used" in capsys.readouterr().err and not out.exists()


def _generate(ds: Path, images: Path, out: Path, *extra: str) -> int:
    return main(["generate", "--generator", "cutpaste", "--model", str(ds), "--images", str(images),
                 "--defect-type", "stain", "--out", str(out), "--num-candidates", "1", "--masks", "procedural",
                 *extra])


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_generate_refuses_a_bad_good_image_before_writing(case, dataset, tmp_path, capsys):
    ds, good = dataset
    images = tmp_path / "good images ü"
    shutil.copytree(good, images)
    (images / case).write_bytes(BAD_FILES[case]())  # sorted among the readable ones
    out = tmp_path / "out"
    assert _generate(ds, images, out) == 1
    err = capsys.readouterr().err
    assert "defectfill generate: error:" in err and str(images / case) in err
    assert _tree(out) == [], "generate wrote into its output folder before refusing"


@pytest.mark.parametrize("case", sorted(CONVERTED_FILES))
def test_generate_converts_unusual_good_images(case, dataset, tmp_path, capsys):
    ds, _ = dataset
    images = tmp_path / "good"
    images.mkdir()
    (images / case).write_bytes(CONVERTED_FILES[case][0]())
    out = tmp_path / "out é"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        rc = _generate(ds, images, out)
    if case == "one-pixel.png":  # no room for a defect: refused with the reason
        assert rc == 1 and _tree(out) == []
        assert "too small for mask proposals" in capsys.readouterr().err
        return
    assert rc == 0
    from defectfill.generators.manifest import read_generation_manifest

    (item,) = read_generation_manifest(out)
    image, changed = item.load()
    assert image.shape[:2] == changed.shape == (64, 64)


@pytest.mark.parametrize("argv_tail, message", [
    (["--defect-type", "scratchh"], "is not known to the model"),
    (["--option", "feathr=2"], "feathr"),
    (["--real-masks", "/nonexistent/masks", "--masks", "real"], "nonexistent"),
    (["--num-candidates", "0"], "num_candidates"),
])
def test_generate_cli_argument_errors_write_nothing(argv_tail, message, dataset, tmp_path, capsys):
    ds, good = dataset
    out = tmp_path / "new" / "out"
    argv = ["generate", "--generator", "cutpaste", "--model", str(ds), "--images", str(good), "--out", str(out),
            "--masks", "procedural"]
    if "--defect-type" not in argv_tail:
        argv += ["--defect-type", "stain"]
    if "--masks" in argv_tail:
        argv.remove("--masks"), argv.remove("procedural")
    assert main(argv + argv_tail) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


# ----------------------------------------------------------------------- every generator's generate()
@pytest.fixture(scope="module")
def generators(tmp_path_factory):
    from helpers_defectfill_training import in_memory_samples
    from test_generate import build_tiny_model_dir

    from defectfill.models.defectfill import DefectFill
    from gan_baselines.cutpaste import CutPaste

    torch.set_num_threads(1)
    _, model_dir = build_tiny_model_dir(tmp_path_factory.mktemp("tiny-df"))
    defectfill = DefectFill.from_pretrained(model_dir, selection_metric="ms-ssim-distance")
    cutpaste = CutPaste().fit(in_memory_samples({"stain": 2}, size=64)["stain"])
    old = os.umask(0o022)  # and a saved model folder, for the file-mode check below
    try:
        saved = defectfill.save_pretrained(tmp_path_factory.mktemp("saved") / "model")
    finally:
        os.umask(old)
    return {"cutpaste": cutpaste, "defectfill": defectfill, "saved": saved}


def test_a_saved_defectfill_model_is_readable_by_others(generators):
    """save_pretrained stages in a mkdtemp folder (0700) and safetensors writes 0600 files: both get the umask."""
    saved = generators["saved"]
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in [saved, *saved.iterdir()]}
    assert modes == {p.name: oct(0o755 if p.is_dir() else 0o644) for p in [saved, *saved.iterdir()]}
    assert sum(p.suffix == ".safetensors" for p in saved.iterdir()) >= 2


def _image() -> np.ndarray:
    return np.random.default_rng(0).integers(60, 200, (64, 64, 3), dtype=np.uint8)


def _mask() -> np.ndarray:
    m = np.zeros((64, 64), bool)
    m[24:40, 24:40] = True
    return m


def _nan_image():
    a = _image() / 255.0
    a[3, 3, 0] = np.nan
    return a


def _inf_tensor():
    t = torch.from_numpy(_image() / 255.0).permute(2, 0, 1).float()
    t[0, 5, 5] = float("inf")
    return t


def _nan_mask():
    m = _mask().astype(np.float32)
    m[0, 0] = np.nan
    return m


# case -> (image, mask, defect_type, error regex or None (= generates, labels inside the mask))
ARRAY_CASES = {
    "nan-in-float-image": (_nan_image, _mask, "stain", "NaN/inf value"),
    "inf-in-torch-tensor": (_inf_tensor, _mask, "stain", "NaN/inf value"),
    "nan-in-mask": (_image, _nan_mask, "stain", "NaN/inf value"),
    "float-image-out-of-range": (lambda: _image() * 2.0, _mask, "stain", r"must lie in \[0, 1\]"),
    "mask-of-another-size": (_image, lambda: _mask()[:32], "stain", "mask is 64x32 .* but image is 64x64"),
    "empty-mask": (_image, lambda: np.zeros((64, 64), bool), "stain", "mask is empty"),
    "unknown-defect-type": (_image, _mask, "scratchh", "'scratchh' is not known"),
    "5-d-array": (lambda: _image()[None, None], _mask, "stain", "expected an"),
    "all-ones-mask": (_image, lambda: np.ones((64, 64), bool), "stain", None),
    "non-binary-mask": (_image, lambda: _mask().astype(np.uint8) * 200 + 20 * (~_mask()), "stain", None),
    "16-bit-array": (lambda: _image().astype(np.uint16) * 257, _mask, "stain", None),
    "greyscale-2d": (lambda: _image()[..., 0], _mask, "stain", None),
    "rgba-array": (lambda: np.dstack([_image(), np.full((64, 64), 255, np.uint8)]), _mask, "stain", None),
}


@pytest.mark.parametrize("name", ["cutpaste", "defectfill"])
@pytest.mark.parametrize("case", sorted(ARRAY_CASES))
def test_generator_generate_matrix(case, name, generators):
    make_image, make_mask, defect_type, error = ARRAY_CASES[case]
    generator = generators[name]
    kwargs = {"num_inference_steps": 2} if name == "defectfill" else {}
    call = lambda: generator.generate(make_image(), make_mask(), defect_type=defect_type,
                                      num_candidates=1, generator=0, **kwargs)
    if error is not None:
        with pytest.raises(GenerationError, match=error):
            call()
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        result = call()
    image = result.image if hasattr(result, "image") else result.candidates[0]
    assert image.shape[:2] == (64, 64) and image.dtype == np.uint8
    request = np.asarray(make_mask()).astype(bool)
    assert not (result.changed_mask & ~request).any()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(h=st.integers(1, 40), w=st.integers(1, 40), dtype=st.sampled_from(["uint8", "uint16", "float32", "bool", "int64"]),
       seed=st.integers(0, 2**31 - 1))
def test_cutpaste_generate_any_shape_and_dtype_is_served_or_refused_clearly(h, w, dtype, seed, generators):
    """Hypothesis: any small image/mask of any dtype either generates (labels inside the mask, pixels outside
    it unchanged) or raises the project's GenerationError; nothing else escapes."""
    rng = np.random.default_rng(seed)
    if dtype == "float32":
        image = rng.random((h, w, 3)).astype(np.float32)
    elif dtype == "bool":
        image = rng.random((h, w)) > 0.5
    else:
        image = rng.integers(0, 65535 if dtype == "uint16" else 256, (h, w, 3)).astype(dtype)
    mask = rng.random((h, w)) > 0.7
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            result = generators["cutpaste"].generate(image, mask, defect_type="stain", num_candidates=1, generator=seed)
    except DefectfillError as exc:
        assert isinstance(exc, GenerationError) and str(exc)
        return
    assert result.image.shape == ((h, w, 3) if image.ndim == 3 else (h, w))  # greyscale in, greyscale out
    assert not (result.changed_mask & ~mask).any()


# ------------------------------------------------------------------------------ configs: bench, train
CONFIG_CASES = {
    "bad-yaml": ("name: x\n  arms: [a, b\n", "not valid YAML"),
    "unknown-key": ("name: micro\nnot_a_key: 3\n", "not_a_key"),
    "not-a-mapping": ("- just\n- a list\n", "mapping|dict|expected"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bench_config_errors(case, tmp_path, capsys):
    text, message = CONFIG_CASES[case]
    config = tmp_path / "my configs ü" / f"{case}.yaml"
    config.parent.mkdir()
    config.write_text(text)
    out = tmp_path / "out"
    from defectfill.bench.config import load_bench_config

    with pytest.raises(ConfigError, match=message) as err:
        load_bench_config(config)
    assert str(config) in str(err.value)
    assert main(["bench", "--config", str(config), "--out", str(out)]) == 1
    assert "error" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_train_config_errors_write_nothing(case, dataset, tmp_path, capsys):
    text = CONFIG_CASES[case][0]
    base = (REPO / "configs" / "defectfill_tiny.yaml").read_text()
    config = tmp_path / f"{case}.yaml"
    config.write_text(text if case != "unknown-key" else base + "\nnot_a_key: 3\n")
    out = tmp_path / "out"
    assert main(["train", "--config", str(config), "--train_data_dir", str(dataset[0]), "--output_dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert "defectfill train: error:" in err and not out.exists()
    if case == "unknown-key":
        assert "not_a_key" in err


def test_train_on_a_dataset_where_every_image_is_unreadable_writes_nothing(dataset, tmp_path, capsys):
    ds, _ = dataset
    bad = tmp_path / "all-bad"
    shutil.copytree(ds, bad)
    for path in bad.rglob("*.png"):
        path.write_bytes(b"")
    out = tmp_path / "out"
    assert main(["train", "--config", str(REPO / "configs" / "defectfill_tiny.yaml"), "--train_data_dir", str(bad),
                 "--output_dir", str(out), "--pretrained_model_name_or_path", str(tmp_path / "no-base")]) == 1
    err = capsys.readouterr().err
    assert "defectfill train: error:" in err and "all-bad" in err
    assert not out.exists()
