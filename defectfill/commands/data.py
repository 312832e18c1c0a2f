"""`defectfill data`: inspect (`info`) or convert (`convert`) a defect dataset.

`data info DIR` reads the dataset with the reader its layout needs (MVTec-AD, image+mask folder,
COCO, YOLO, AITEX) and prints what it found: layout, images, masks, classes with counts, sizes,
greyscale, and every quirk met with its count. `data convert SRC --to mvtec|coco|yolo|masks --out DIR`
writes it in another layout, optionally cut into tiles first (`--tile`, for long strips). Before
writing, boxes with fewer than `--min-box-px` defect pixels (default 4) are dropped and, with
`--merge-boxes PX`, near boxes of one class merged (`writers.tidy_boxes`); `--to mvtec` holds out
`--test-good` of the good images as test/good (`writers.hold_out_good`).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

FORMATS = ("mvtec", "coco", "yolo", "masks")


def _add_read_arguments(parser: argparse.ArgumentParser) -> None:
    from defectfill.data.readers import LAYOUTS, UNLABELLED_POLICIES

    parser.add_argument("--layout", default="auto", choices=("auto",) + LAYOUTS,
                        help="dataset layout (default: detected)")
    parser.add_argument("--defect-type", default=None,
                        help="class name for image+mask folders, whose files do not name it "
                             "(default: 'defect', warned)")
    parser.add_argument("--images-dir", type=Path, default=None,
                        help="COCO: the folder holding the images (default: images/ beside the JSON, else "
                             "its folder; file_names like images/a.png are also found from the JSON's folder)")
    parser.add_argument("--unlabelled", default="skip", choices=UNLABELLED_POLICIES,
                        help="a declared defect with a missing or empty mask: skip it (counted), keep it as "
                             "good, or stop with an error (default: skip)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from defectfill.data.writers import MIN_BOX_PX

    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    info = sub.add_parser("info", help="print what the reader finds in a dataset",
                          description="print layout, images, masks, classes, sizes and quirks of a dataset")
    info.add_argument("path", type=Path, help="dataset folder (or COCO .json)")
    _add_read_arguments(info)
    info.add_argument("--json", type=Path, default=None, help="also write the summary to this JSON file")

    convert = sub.add_parser("convert", help="write a dataset in another layout",
                             description="read a dataset and write it as MVTec-AD, COCO, YOLO or image+mask folders")
    convert.add_argument("path", type=Path, help="source dataset folder (or COCO .json)")
    convert.add_argument("--to", required=True, choices=FORMATS, help="output layout")
    convert.add_argument("--out", type=Path, required=True, help="output folder")
    _add_read_arguments(convert)
    convert.add_argument("--classes", nargs="+", default=None, metavar="NAME",
                         help="class names in order (YOLO ids / COCO categories); default: the classes found, sorted")
    convert.add_argument("--split", default="train", help="YOLO split to write (default: train)")
    convert.add_argument("--test-good", type=float, default=0.2, metavar="FRACTION",
                         help="mvtec: share of the good images written to test/good instead of train/good, drawn "
                              "with --seed in whole strips (the tiles of one strip stay together); a source with "
                              "its own train/test split keeps it (default 0.2)")
    convert.add_argument("--tile", type=int, default=None, metavar="PX",
                         help="cut every image into PX x PX tiles first (long strips, e.g. AITEX 4096x256)")
    convert.add_argument("--overlap", type=int, default=32, help="tile overlap in pixels (default 32)")
    convert.add_argument("--keep-good", type=float, default=0.25,
                         help="fraction of defect-free tiles kept (default 0.25)")
    convert.add_argument("--seed", type=int, default=0, help="seed of the good-tile sampling")
    convert.add_argument("--min-box-px", type=int, default=MIN_BOX_PX, metavar="N",
                         help="drop every box (a mask component, or a piece of one in a tile) holding fewer than N "
                              "defect pixels, and clear those pixels; an image or tile left without a box is left "
                              f"out (default {MIN_BOX_PX}: 1-3 px specks are mask residue; 1 keeps every box with a defect "
                              "pixel: a strip box clipped to a tile can hold none)")
    convert.add_argument("--merge-boxes", type=int, default=None, metavar="PX",
                         help="merge boxes of one class at most PX pixels apart into their enclosing box (the "
                              "pieces of a broken yarn; 0 merges touching boxes); default: no merging")


def read(args: argparse.Namespace):
    """Read the dataset named by the arguments -> (samples, report); warnings are left to the report."""
    from defectfill.data.images import DataWarning
    from defectfill.data.readers import ReadReport, detect_layout, read_dataset

    layout = detect_layout(args.path) if args.layout == "auto" else args.layout
    kwargs: dict[str, Any] = {}
    if layout in ("mvtec", "folder", "coco", "aitex"):
        kwargs["unlabelled"] = args.unlabelled
    if layout == "folder" and args.defect_type:
        kwargs["defect_type"] = args.defect_type
    if layout == "coco" and args.images_dir is not None:
        kwargs["images_dir"] = args.images_dir
    report = ReadReport()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # the summary prints every quirk with its count
        samples = read_dataset(args.path, layout=layout, report=report, **kwargs)
    return samples, report


def summarize(samples: list, report) -> dict[str, Any]:
    """A JSON-safe summary of a read dataset."""
    from defectfill.data.aitex import code_counts
    from defectfill.data.writers import sample_labels

    images_per_class: Counter = Counter(s.defect_type for s in samples)
    instances: Counter = Counter()
    for s in samples:
        instances.update(sample_labels(s)[1])
    sizes = Counter(f"{s.size[1]}x{s.size[0]}" for s in samples)
    splits = Counter(str(s.meta.get("split", "-")) for s in samples)
    fabrics, codes = code_counts(str(s.meta.get("name", "")) for s in samples)
    return {
        "layout": report.layout,
        "path": str(report.root),
        "images": len(samples),
        "defect_images": sum(not s.is_good for s in samples),
        "good_images": sum(s.is_good for s in samples),
        "pixel_masks": sum((not s.is_good) and not s.meta.get("mask_from_boxes") for s in samples),
        "box_only_masks": sum(bool(s.meta.get("mask_from_boxes")) for s in samples),
        "images_per_class": dict(sorted(images_per_class.items())),
        "instances_per_class": dict(sorted(instances.items())),
        "sizes_wxh": dict(sizes.most_common()),
        "greyscale_images": sum(s.is_gray for s in samples),
        "splits": dict(sorted(splits.items())),
        "fabric_codes": dict(sorted(fabrics.items())),  # AITEX-style names nnnn_ddd_ff: per ff
        "defect_codes": dict(sorted(codes.items())),  # and per ddd ("000": good)
        "quirks": dict(sorted(report.counts.items())),
        "skipped": list(report.skipped),
    }


def loud_warnings(summary: dict[str, Any]) -> list[str]:
    """What must not scroll by unseen: defect strips about to be used as good images."""
    unmasked = summary["quirks"].get("defect_code_no_mask", 0)
    if not unmasked:
        return []
    warning = (f"WARNING: {unmasked} of {summary['images']} file names carry an AITEX defect code "
               f"(nnnn_ddd_ff, ddd != 000) but no mask was found: they are read as GOOD images.")
    fix = ("  Fix: put the defect strips in Defect_images/ and their masks in Mask_images/<stem>_mask.png "
           "(AITEX layout), or the masks beside them as <stem>_mask.png; rename good strips nnnn_000_ff.")
    return [warning, fix]


def format_summary(summary: dict[str, Any], report) -> str:
    from defectfill.data.aitex import defect_name

    lines = loud_warnings(summary)
    lines += [
        f"layout:      {summary['layout']}  ({summary['path']})",
        f"images:      {summary['images']}  ({summary['defect_images']} defect, {summary['good_images']} good)",
        f"masks:       {summary['pixel_masks']} pixel masks, {summary['box_only_masks']} box-only (filled boxes)",
        f"greyscale:   {summary['greyscale_images']} of {summary['images']}",
        "sizes (WxH): " + ", ".join(f"{k} x{v}" for k, v in summary["sizes_wxh"].items()),
    ]
    if set(summary["splits"]) != {"-"}:
        lines.append("splits:      " + ", ".join(f"{k} {v}" for k, v in summary["splits"].items()))
    if summary["fabric_codes"]:
        lines.append("fabric codes (nnnn_ddd_ff names, ff): "
                     + ", ".join(f"{k} x{v}" for k, v in summary["fabric_codes"].items()))
        lines.append("defect codes (ddd):   "
                     + ", ".join(f"{k} {defect_name(k)} x{v}" for k, v in summary["defect_codes"].items()))
    lines.append("classes:     images / instances")
    for name, count in summary["images_per_class"].items():
        lines.append(f"  {name:24s} {count:6d} / {summary['instances_per_class'].get(name, 0)}")
    for name in sorted(set(summary["instances_per_class"]) - set(summary["images_per_class"])):
        lines.append(f"  {name:24s} {0:6d} / {summary['instances_per_class'][name]}")
    quirks = report.lines()
    lines.append("quirks:" + ("      none" if not quirks else ""))
    lines += ["  " + q for q in quirks]
    if summary["skipped"]:
        lines.append(f"skipped:     {len(summary['skipped'])} image(s)")
        lines += ["  " + s for s in summary["skipped"][:20]]
        if len(summary["skipped"]) > 20:
            lines.append(f"  ... and {len(summary['skipped']) - 20} more")
    return "\n".join(lines)


def _tile_all(samples: list, args: argparse.Namespace) -> list:
    import numpy as np

    from defectfill.data.tiling import TilingStats, tile_sample

    rng = np.random.default_rng(args.seed)
    stats = TilingStats()
    tiles = []
    for s in samples:
        tiles += tile_sample(s, tile=args.tile, overlap=args.overlap, keep_good_ratio=args.keep_good,
                             rng=rng, stats=stats)
    print(f"tiles: {stats.defect_tiles} with defects, {stats.good_tiles} good of {stats.good_tiles_seen}, "
          f"{stats.sliver_only_tiles} sliver-only left out, {stats.slivers_dropped} box slivers dropped, "
          f"{stats.padded_tiles} padded")
    return tiles


def _tidy_all(samples: list, args: argparse.Namespace, what: str) -> list:
    """`tidy_boxes` over every sample; one line on what it changed."""
    from defectfill.data.writers import tidy_boxes

    out, dropped, merged, left_out = [], 0, 0, 0
    for s in samples:
        tidy, d, m = tidy_boxes(s, min_box_px=args.min_box_px, merge_gap=args.merge_boxes)
        dropped, merged = dropped + d, merged + m
        if tidy is None:
            left_out += 1
        else:
            out.append(tidy)
    merging = f"merged {merged} (gap {args.merge_boxes} px)" if args.merge_boxes is not None else "no merging"
    print(f"boxes ({what}): {dropped} under {args.min_box_px} defect px dropped, {merging}; "
          f"{left_out} {what} left without a box left out")
    return out


def run(args: argparse.Namespace) -> int:
    if args.data_command == "convert":
        from defectfill.locks import output_lock

        with output_lock(args.out, command="data convert"):  # a second run on --out refuses
            return _run(args)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    from defectfill.io_utils import atomic_write_json

    samples, report = read(args)
    summary = summarize(samples, report)
    if args.data_command == "info":
        print(format_summary(summary, report))
        if args.json is not None:
            atomic_write_json(args.json, summary)
        return 0

    from defectfill.data.writers import hold_out_good, write_coco, write_masks, write_mvtec, write_yolo
    from defectfill.errors import DataError

    if not samples:
        raise DataError(f"{args.path}: no samples read; nothing to convert (see `defectfill data info {args.path}`)")
    for line in loud_warnings(summary):
        print(line, file=sys.stderr)
    samples = _tidy_all(samples, args, "images")
    if args.tile is not None:
        samples = _tidy_all(_tile_all(samples, args), args, "tiles")
    out: Path = args.out
    if args.to == "mvtec":
        samples, held_out = hold_out_good(samples, args.test_good, seed=args.seed)
        in_test = sum(s.is_good and s.meta.get("split") == "test" for s in samples)
        print(f"test/good: {in_test} good images ({held_out} held out: a {args.test_good:g} share of the "
              f"{'strips' if args.tile else 'images'} without a split of their own, drawn with seed {args.seed}); "
              f"train/good: {sum(s.is_good for s in samples) - in_test}"
              + ("; too few good images to hold any out (train/good keeps at least one)"
                 if held_out == 0 and args.test_good > 0 and in_test == 0 else ""))
        write_mvtec(samples, out)
    elif args.to == "coco":
        write_coco(samples, out / "instances.json", out / "images", class_names=args.classes)
    elif args.to == "yolo":
        write_yolo(samples, out, class_names=args.classes, split=args.split)
    else:
        write_masks(samples, out, class_names=args.classes)
    print(f"read {summary['images']} images ({summary['layout']}, {len(report.skipped)} skipped); "
          f"wrote {len(samples)} samples as {args.to} to {out}")
    return 0
