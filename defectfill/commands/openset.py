"""`defectfill openset`: find defects with a trained DGT model (DIS + DFC) and say, per region,
which known type it is or "unknown defect" (the open-set classifier, gan_baselines.dgt)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", type=Path, nargs="+", help="image files or folders of images")
    parser.add_argument("--model", type=Path, required=True,
                        help="trained DGT model folder (train_scripts/train_dgt.py --output_dir X: X/model)")
    parser.add_argument("--out", type=Path, required=True, help="writes predictions.jsonl and sheet.png here")
    parser.add_argument("--heat_threshold", type=float, default=None, help="DIS heat map cut (default: the model's)")
    parser.add_argument("--min_area", type=int, default=None, help="smallest region in px (default: the model's)")
    parser.add_argument("--device", default="cpu")


def run(args: argparse.Namespace) -> int:
    from defectfill.data.images import list_images
    from defectfill.errors import DataError
    from defectfill.locks import output_lock

    paths = [p for item in args.images for p in (list_images(item) if item.is_dir() else [item])]
    if not paths:
        raise DataError(f"{[str(p) for p in args.images]}: no images found; pass image files or folders")
    with output_lock(args.out, command="openset"):  # a second run on --out refuses
        return _detect(args, paths)


def _detect(args: argparse.Namespace, paths: list) -> int:
    import json
    from collections import Counter

    from defectfill.data.images import load_image
    from defectfill.io_utils import atomic_write_text
    from defectfill.viz import save_contact_sheet
    from gan_baselines.dgt.model import DGT
    from gan_baselines.dgt.openset import WeibullOpenSet, detect_defects

    model = DGT.from_pretrained(str(args.model)).to(args.device).eval()
    openset = WeibullOpenSet.load(args.model)
    heat = openset.config.heat_threshold if args.heat_threshold is None else args.heat_threshold
    min_area = openset.config.min_region_area if args.min_area is None else args.min_area
    args.out.mkdir(parents=True, exist_ok=True)
    records = []
    counts: Counter = Counter()
    images, masks, captions = [], [], []
    for path in paths:
        image = load_image(path)
        regions = detect_defects(model, openset, image, heat, min_area)
        counts.update(r.label for r in regions)
        records.append({"image": str(path), "regions": [
            {"box": list(r.box), "label": r.label, "closed_set_type": r.closed_set_type,
             "unknown_score": round(r.unknown_score, 4), "max_softmax": round(r.max_softmax, 4)} for r in regions]})
        if len(images) < 48:
            union = regions[0].mask.copy() if regions else None
            for r in regions[1:]:
                union |= r.mask
            images.append(image)
            masks.append(union)
            captions.append(", ".join(sorted({r.label for r in regions})) or "no defect")
    atomic_write_text(args.out / "predictions.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    save_contact_sheet(args.out / "sheet.png", images, masks, captions)
    print(f"{len(paths)} images, {sum(counts.values())} regions: " +
          (", ".join(f"{k}: {v}" for k, v in counts.most_common()) or "none"))
    print(f"wrote {args.out / 'predictions.jsonl'} and {args.out / 'sheet.png'}")
    return 0
