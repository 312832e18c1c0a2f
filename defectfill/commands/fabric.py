"""`defectfill fabric`: simulate a fabric-defect dataset in the MVTec-AD layout.

Writes train/good, test/good, test/<type>, ground_truth/<type>/<name>_mask.png, manifest.jsonl
(one line per image, with boxes) and contact_sheet.png (defect samples with mask outlines).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from defectfill.data.fabric import DEFECT_TYPES, SIMPLE_TEXTURES

    parser.add_argument("--out", type=Path, required=True, help="output folder (created; a rerun resumes)")
    parser.add_argument("--textures", nargs="+", default=list(SIMPLE_TEXTURES), metavar="TEXTURE",
                        help="fabric textures (simple: plain twill satin rib; complex: check print herringbone "
                             "jacquard); default: the simple set")
    parser.add_argument("--defects", nargs="+", default=list(DEFECT_TYPES), metavar="TYPE",
                        help=f"defect types (default: all of {' '.join(DEFECT_TYPES)})")
    parser.add_argument("--n-good", type=int, default=20,
                        help="good images per texture in train/good (and as many in test/good unless --n-good-test)")
    parser.add_argument("--n-good-test", type=int, default=None, help="good images per texture in test/good")
    parser.add_argument("--n-defect", type=int, default=5, help="defect images per texture and defect type")
    parser.add_argument("--size", type=int, nargs="+", default=[256], metavar="PX",
                        help="image side, or height width (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (every image seed derives from it)")
    parser.add_argument("--gray", action="store_true", help="greyscale fabric replicated to 3 channels (line-scan)")
    parser.add_argument("--sheet-max", type=int, default=48, help="at most this many images on contact_sheet.png")


def write_dataset_sheet(out_dir: Path, max_images: int = 48) -> Path | None:
    """contact_sheet.png of a simulated dataset: defect images (one of each type per texture first)
    with mask outlines, then good ones; None when the manifest is empty."""
    from defectfill.data.images import load_image, load_mask
    from defectfill.io_utils import read_jsonl
    from defectfill.viz import save_contact_sheet

    records = read_jsonl(out_dir / "manifest.jsonl")
    defects = [r for r in records if r["mask"]]
    goods = [r for r in records if not r["mask"]]
    # round-robin over (texture, type) so a small sheet still shows every kind
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in defects:
        groups.setdefault((r["texture"], r["defect_type"]), []).append(r)
    ordered: list[dict] = []
    depth = 0
    while len(ordered) < len(defects):
        for members in groups.values():
            if depth < len(members):
                ordered.append(members[depth])
        depth += 1
    chosen = (ordered + goods)[:max_images]
    if not chosen:
        return None
    images = [load_image(out_dir / r["image"]) for r in chosen]
    masks = [load_mask(out_dir / r["mask"]) if r["mask"] else None for r in chosen]
    captions = [f"{r['texture']} {r['defect_type']}" for r in chosen]
    return save_contact_sheet(out_dir / "contact_sheet.png", images, masks, captions, ncols=8, tile=128)


def run(args: argparse.Namespace) -> int:
    from defectfill.data.fabric import simulate_dataset
    from defectfill.errors import DataError
    from defectfill.locks import output_lock

    if len(args.size) not in (1, 2):
        raise DataError(f"--size: give one side or height width, found {args.size}")
    size = args.size[0] if len(args.size) == 1 else (args.size[0], args.size[1])
    n_good_test = args.n_good if args.n_good_test is None else args.n_good_test
    start = time.perf_counter()
    with output_lock(args.out, command="fabric"):  # a second run on --out refuses (a rerun resumes)
        out = simulate_dataset(
            args.out, args.textures, args.defects, n_good_train=args.n_good, n_good_test=n_good_test,
            n_defect_per_type=args.n_defect, size=size, seed=args.seed, gray=args.gray,
        )
        sheet = write_dataset_sheet(out, args.sheet_max)
    n = sum(1 for line in (out / "manifest.jsonl").read_text().splitlines() if line.strip())
    print(f"wrote {n} images to {out} in {time.perf_counter() - start:.1f} s"
          + (f"; contact sheet {sheet}" if sheet else ""))
    return 0
