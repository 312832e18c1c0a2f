"""Contact sheets of DGT and ICPR'20 samples on the simulated protocol (64 px), beside real defects.

    nice -n 10 python benchmarks/gan_contact_sheets.py --data runs/openset_loto/data-seed0 \
        --dgt_model runs/openset_loto/model-seed0-stain/model --out runs/gan_sheets --icpr_steps 300

The DGT model is one trained by `openset_loto.py` (its known types); ICPR'20 is trained here on
the same source defects of the same types (CPU time printed). Every generated sample puts a real
source mask of its type into a good *target* image (the defect transfer the bench asks for).
Sheet rows per type: real source defects, DGT, ICPR'20; masks outlined in red.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from defectfill.bench.protocol import BenchData
from defectfill.viz import save_contact_sheet
from gan_baselines.data import to_tensor_images, to_uint8_images
from gan_baselines.dgt.model import DGT
from gan_baselines.icpr20.config import ICPR20Config
from gan_baselines.icpr20.train import train_icpr20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--dgt_model", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--icpr_steps", type=int, default=300)
    parser.add_argument("--per_type", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = BenchData(args.data / "source", args.data / "target_train", args.data / "target_test")
    dgt = DGT.from_pretrained(str(args.dgt_model)).eval()
    types = dgt.defect_types
    defects = [s for s in data.source_defects() if s.defect_type in types]
    good = [s.image for s in data.target_good()]
    config = ICPR20Config(max_train_steps=args.icpr_steps, seed=args.seed, validation_steps=0)
    config.model.defect_types = list(types)
    t0 = time.process_time()
    icpr = train_icpr20(config, defects, args.out / "icpr20").eval()
    icpr_cpu = time.process_time() - t0
    rng = np.random.default_rng(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    images, masks, captions = [], [], []
    for label, defect_type in enumerate(types):
        own = [s for s in defects if s.defect_type == defect_type]
        real = [own[i] for i in rng.permutation(len(own))[:args.per_type]]
        picks = [own[i] for i in rng.integers(0, len(own), args.per_type)]
        goods = [good[i] for i in rng.integers(0, len(good), args.per_type)]
        n = to_tensor_images(np.stack(goods))
        m = torch.stack([torch.from_numpy(s.mask.astype(np.float32))[None] for s in picks])
        y = torch.full((args.per_type,), label, dtype=torch.long)
        with torch.no_grad():
            fore, back = dgt.codes(m, y, g)
            by_dgt = to_uint8_images(dgt.generate(n, fore, back))
            by_icpr = to_uint8_images(icpr(n, m, torch.full((args.per_type,), icpr.defect_types.index(defect_type)), g))
        for name, rows, row_masks in (("real", [s.image for s in real], [s.mask for s in real]),
                                      ("dgt", list(by_dgt), [s.mask for s in picks]),
                                      ("icpr20", list(by_icpr), [s.mask for s in picks])):
            images += rows
            masks += row_masks
            captions += [f"{name} {defect_type}"] * len(rows)
    sheet = save_contact_sheet(args.out / "sheet_outlined.png", images, masks, captions, ncols=args.per_type, tile=96)
    plain = save_contact_sheet(args.out / "sheet.png", images, None, captions, ncols=args.per_type, tile=96)
    info = {"types": types, "icpr20_train_cpu_s": round(icpr_cpu, 1), "icpr20_steps": args.icpr_steps,
            "sheets": [str(sheet), str(plain)]}
    (args.out / "info.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info))


if __name__ == "__main__":
    main()
