"""What every dataset reader shares: the `ReadReport` of quirks met, and reading one image or mask
into it (`defectfill.data.readers`, `defectfill.data.aitex`)."""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from defectfill.data.images import CONVERSIONS, DataWarning, decode_image, decode_mask
from defectfill.errors import DataError

# What each counted quirk means, for the report and the warnings. Conversions come from images.py.
QUIRKS: dict[str, str] = {
    **CONVERSIONS,
    "missing_mask": "defect image without a mask file: skipped (add the mask, or move the image to good)",
    "empty_mask": "all-black mask where a defect is declared: skipped (draw the defect, or move the image to good)",
    "unlabelled_as_good": "image without a defect label kept as a good image (unlabelled='good')",
    "mask_union": "several mask files for one image: their union used",
    "mask_from_boxes": "labels are boxes only: masks are the filled boxes (flagged meta['mask_from_boxes'])",
    "clipped_label": "label up to 1 px (or 0.1 %) outside the image: clipped to the image",
    "no_label_file": "image without a label file: read as a good (background) image",
    "no_annotations": "image without annotations: read as a good image",
    "unknown_code": "unknown defect code: named code_<ddd>",
    "orphan_mask": "mask file without a defect image: ignored",
    "unparsed_name": "file name not of the form nnnn_ddd_ff: skipped (rename it)",
    "defect_code_no_mask": "file name carries an AITEX defect code (nnnn_ddd_ff, ddd != 000) but no mask was "
                           "found: read as a GOOD image. If it holds a defect, put it in Defect_images/ with its "
                           "mask in Mask_images/<stem>_mask.png (AITEX layout) or beside it as <stem>_mask.png; "
                           "if it is good, rename it nnnn_000_ff",
    "unnamed_class": "image+mask folder that does not name its defect class: labelled 'defect' (name it: "
                     "defect_type=, `--defect-type NAME`, or folder_defect_type: in the training config)",
}
# Quirks that are normal for their layout: counted, not warned.
QUIET = {"grayscale", "no_label_file", "no_annotations", "mask_union", "mask_from_boxes"}
UNLABELLED_POLICIES = ("skip", "good", "error")
EXAMPLES_PER_QUIRK = 5
MAX_LISTED = 20  # files named in one error message


@dataclass
class ReadReport:
    """What a reader met, with counts: the basis of `defectfill data info` and of the warnings."""

    layout: str = ""
    root: Path | None = None
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # "file: reason", every skipped image
    unlabelled_errors: list[str] = field(default_factory=list)  # unlabelled="error": raised together
    _warned: Counter = field(default_factory=Counter, repr=False)

    def note(self, quirk: str, file: Any) -> None:
        """Count one occurrence of `quirk` at `file`."""
        self.counts[quirk] += 1
        examples = self.examples.setdefault(quirk, [])
        if len(examples) < EXAMPLES_PER_QUIRK:
            examples.append(str(file))

    def skip(self, quirk: str, file: Any) -> None:
        """Count `quirk` and record that `file` is not among the samples, and why."""
        self.note(quirk, file)
        self.skipped.append(f"{file}: {QUIRKS.get(quirk, quirk)}")

    def raise_unlabelled(self) -> None:
        """With unlabelled="error": one DataError naming every defect image without a usable mask
        (a reader collects them all first, so that one run shows the whole list to fix)."""
        if not self.unlabelled_errors:
            return
        lines = self.unlabelled_errors
        shown = "\n".join("  " + line for line in lines[:MAX_LISTED])
        more = f"\n  ... and {len(lines) - MAX_LISTED} more" if len(lines) > MAX_LISTED else ""
        self.unlabelled_errors = []
        raise DataError(
            f"{self.root}: {len(lines)} defect image(s) without a usable mask:\n{shown}{more}\n"
            f"Fix: add (or draw) the masks, or read with unlabelled='skip' (left out, counted; "
            f"`--unlabelled skip`) or unlabelled='good'"
        )

    def warn_new(self) -> None:
        """One DataWarning per quirk kind met since the last call, with its count and an example."""
        for quirk, count in sorted(self.counts.items()):
            new = count - self._warned[quirk]
            if new > 0 and quirk not in QUIET:
                example = self.examples.get(quirk, ["?"])[0]
                warnings.warn(
                    f"{new} file(s): {QUIRKS.get(quirk, quirk)} (e.g. {example})", DataWarning, stacklevel=3
                )
            self._warned[quirk] = count

    def lines(self) -> list[str]:
        """Human-readable summary, one quirk a line."""
        out = []
        for quirk, count in sorted(self.counts.items()):
            out.append(f"{count:6d}  {quirk}: {QUIRKS.get(quirk, quirk)}  (e.g. {self.examples[quirk][0]})")
        return out


def check_policy(unlabelled: str) -> None:
    if unlabelled not in UNLABELLED_POLICIES:
        raise DataError(f"unlabelled={unlabelled!r}: expected one of {list(UNLABELLED_POLICIES)}")


def read_image(path: Path, report: ReadReport) -> tuple[np.ndarray, bool]:
    image, info = decode_image(path)
    for key in info.conversions:
        report.note(key, path)
    return image, info.is_gray


def read_mask(path: Path, shape: tuple[int, int], report: ReadReport) -> np.ndarray:
    mask, info = decode_mask(path, shape)
    for key in info.conversions:
        report.note(key, path)
    return mask


def unlabelled_sample(
    quirk: str, image_path: Path, policy: str, report: ReadReport, fix: str
) -> str:
    """Apply the policy for a declared defect without a usable mask; returns "skip" or "good".
    "error" is recorded and raised, with every other such file, by `ReadReport.raise_unlabelled`."""
    if policy == "error":
        report.unlabelled_errors.append(f"{image_path}: {QUIRKS[quirk].split(':')[0]}; {fix}")
        return "skip"
    if policy == "skip":
        report.skip(quirk, image_path)
        return "skip"
    report.note(quirk, image_path)
    report.note("unlabelled_as_good", image_path)
    return "good"
