"""AITEX Fabric Image Database (AFID) reader (Silvestre-Blanes et al., AUTEX Res. J. 2019).

Layout: `Defect_images/nnnn_ddd_ff.png` (nnnn image id, ddd defect code, ff fabric code), masks
`Mask_images/nnnn_ddd_ff_mask.png` or several `..._mask1.png`, `..._mask2.png` (their union is
the label), good images `NoDefect_images/<fabric folder>/nnnn_000_ff.png`. Strips are 4096x256
greyscale (one is 3796 wide); tile them with `defectfill.data.tiling` for a model.

The public copies have quirks, each met here with a count in the `ReadReport` and never a crash
or a silent drop: anti-aliased mask edges (thresholded at 127, warned once with the count), masks
and images in greyscale+alpha (LA) mode, an all-black mask, a defect image without any mask (both
skipped by default and listed in `report.skipped`), unknown defect codes (named `code_<ddd>`),
masks without an image and file names outside the nnnn_ddd_ff pattern.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from defectfill.data.images import list_images
from defectfill.data.reading import ReadReport, check_policy, read_image, read_mask, unlabelled_sample
from defectfill.data.sample import DefectSample
from defectfill.errors import DataError

__all__ = ["DEFECT_CODES", "code_counts", "defect_name", "parse_name", "read_aitex"]

# The AITEX defect codes (dataset paper, Table 2). 036 appears once in the public copy.
DEFECT_CODES: dict[str, str] = {
    "002": "broken_end",
    "006": "broken_yarn",
    "010": "broken_pick",
    "016": "weft_curling",
    "019": "fuzzyball",
    "022": "cut_selvage",
    "023": "crease",
    "025": "warp_ball",
    "027": "knots",
    "029": "contamination",
    "030": "nep",
    "036": "weft_crack",
}
GOOD_CODE = "000"
NAME_PATTERN = re.compile(r"^(?P<image>\d{4})_(?P<code>\d{3})_(?P<fabric>\d{2})$")
MASK_PATTERN = re.compile(r"^(?P<stem>\d{4}_\d{3}_\d{2})_mask(?P<part>\d*)$")


def parse_name(stem: str) -> dict[str, str] | None:
    """"0044_019_04" -> {"image": "0044", "code": "019", "fabric": "04"}; None when it does not match."""
    match = NAME_PATTERN.match(stem)
    return match.groupdict() if match else None


def defect_name(code: str) -> str:
    """AITEX defect code -> class name; unknown codes become `code_<ddd>`."""
    if code == GOOD_CODE:
        return "good"
    return DEFECT_CODES.get(code, f"code_{code}")


def code_counts(names: Iterable[str]) -> tuple[Counter, Counter]:
    """Counts per fabric code (ff) and per defect code (ddd) over the names of the form nnnn_ddd_ff
    (others ignored): what a line-scan set's file names say about it, masks or not."""
    fabrics: Counter = Counter()
    codes: Counter = Counter()
    for name in names:
        parsed = parse_name(str(name))
        if parsed is not None:
            fabrics[parsed["fabric"]] += 1
            codes[parsed["code"]] += 1
    return fabrics, codes


def _masks_by_stem(mask_dir: Path, report: ReadReport) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    if not mask_dir.is_dir():
        return found
    for path in list_images(mask_dir):
        match = MASK_PATTERN.match(path.stem)
        if match is None:
            report.note("unparsed_name", path)
            continue
        found.setdefault(match["stem"], []).append(path)
    return found


def read_aitex(
    root: str | Path,
    report: ReadReport | None = None,
    include_good: bool = True,
    unlabelled: str = "skip",
) -> list[DefectSample]:
    """Read an AITEX folder -> defect samples (with masks) and, with `include_good`, good strips.

    unlabelled: a defect image whose mask is missing or all black is "skip"ped (default; counted
    and listed in `report.skipped`), kept as "good" (not advised: the image does hold a defect),
    or an "error".
    """
    root = Path(root)
    check_policy(unlabelled)
    defect_dir, mask_dir, good_dir = root / "Defect_images", root / "Mask_images", root / "NoDefect_images"
    if not defect_dir.is_dir() and not good_dir.is_dir():
        raise DataError(
            f"{root}: not an AITEX folder; expected Defect_images/nnnn_ddd_ff.png, "
            f"Mask_images/nnnn_ddd_ff_mask.png and NoDefect_images/<fabric>/*.png"
        )
    report = report if report is not None else ReadReport()
    report.layout, report.root = report.layout or "aitex", report.root or root
    masks = _masks_by_stem(mask_dir, report)
    samples: list[DefectSample] = []
    seen: set[str] = set()
    for image_path in list_images(defect_dir) if defect_dir.is_dir() else []:
        parsed = parse_name(image_path.stem)
        if parsed is None:
            report.skip("unparsed_name", image_path)
            continue
        if image_path.stem in seen:
            raise DataError(f"{image_path}: duplicate image name {image_path.stem!r}; remove one of the copies")
        seen.add(image_path.stem)
        kind = defect_name(parsed["code"])
        if kind.startswith("code_"):
            report.note("unknown_code", image_path)
        image, is_gray = read_image(image_path, report)
        meta = {"name": image_path.stem, "layout": "aitex", **parsed}
        mask_paths = sorted(masks.get(image_path.stem, []))
        mask = np.zeros(image.shape[:2], dtype=bool)
        if not mask_paths:
            kind = unlabelled_sample("missing_mask", image_path, unlabelled, report,
                               f"expected {mask_dir / (image_path.stem + '_mask.png')}")
        else:
            if len(mask_paths) > 1:
                report.note("mask_union", image_path)
            for mask_path in mask_paths:
                mask |= read_mask(mask_path, image.shape[:2], report)
            if not mask.any():
                kind = unlabelled_sample("empty_mask", mask_paths[0], unlabelled, report,
                                   "draw the defect in the mask or move the image to NoDefect_images")
        if kind == "skip":
            continue
        if kind == "good":
            mask, mask_paths = np.zeros_like(mask), []
        meta["mask_files"] = [p.name for p in mask_paths]
        samples.append(DefectSample(image, mask, kind, source=image_path,
                                    mask_source=mask_paths[0] if mask_paths else None, is_gray=is_gray, meta=meta))
    for stem, paths in sorted(masks.items()):
        if stem not in seen:
            for path in paths:
                report.note("orphan_mask", path)
    if include_good and good_dir.is_dir():
        folders = [good_dir] + sorted(d for d in good_dir.iterdir() if d.is_dir())
        for folder in folders:
            for image_path in list_images(folder):
                parsed = parse_name(image_path.stem) or {}
                image, is_gray = read_image(image_path, report)
                meta = {"name": image_path.stem, "layout": "aitex", **parsed}
                if folder != good_dir:
                    meta["fabric_folder"] = folder.name
                if parsed.get("code", GOOD_CODE) != GOOD_CODE:
                    meta["declared_code"] = parsed["code"]  # a defect code in the good folder: trust the folder
                samples.append(DefectSample(image, np.zeros(image.shape[:2], dtype=bool), "good",
                                            source=image_path, is_gray=is_gray, meta=meta))
    report.raise_unlabelled()
    report.warn_new()
    return samples
