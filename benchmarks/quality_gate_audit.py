"""What the quality gate would have rejected in finished generation folders (no generation run).

Calibrates `QualityGate` on the real defects of a dataset (any layout the readers know) and checks
the kept item of every manifest line (its label inside the request, as the runner checks it), per
generation folder and defect type. The runner would retry those items with new seeds; this audit
counts how many first attempts fail, i.e. how many items of an existing arm do not read as defects.

    PYTHONPATH=. .venv/bin/python benchmarks/quality_gate_audit.py \\
        --real /work/runs/demo-2seeds/data/source \\
        /work/runs/demo-2seeds/seed-0/generated/defectfill /work/runs/demo-2seeds/seed-0/generated/cutpaste
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="generation folders (manifest.jsonl)")
    parser.add_argument("--real", type=Path, required=True, help="real labelled defects to calibrate on")
    parser.add_argument("--defect-type", default=None, help="the class of an image+mask folder (it names none)")
    parser.add_argument("--percentile", type=float, default=10.0)
    parser.add_argument("--statistics", default="contrast")
    args = parser.parse_args()

    from defectfill.data.images import load_mask
    from defectfill.data.readers import read_dataset
    from defectfill.generators.manifest import read_generation_manifest
    from defectfill.generators.quality import QualityGate, QualityGateConfig

    config = QualityGateConfig(statistics=args.statistics.split(","), percentile=args.percentile)
    typed = {"defect_type": args.defect_type} if args.defect_type else {}
    gate = QualityGate.calibrate([s for s in read_dataset(args.real, **typed) if not s.is_good], config)
    result = {"real": str(args.real), "gate": gate.as_dict(), "folders": {}}
    for folder in args.folders:
        per_type: dict[str, dict] = {}
        for item in read_generation_manifest(folder):
            image, label = item.load()
            region = label & load_mask(item.request_mask, shape=label.shape)
            verdict = gate.check(image, region, item.defect_type)
            row = per_type.setdefault(item.defect_type, {"items": 0, "rejected": 0, "reasons": {}, "contrast": []})
            row["items"] += 1
            row["rejected"] += int(not verdict.passed)
            reason = verdict.reason.split(":")[0]
            row["reasons"][reason] = row["reasons"].get(reason, 0) + 1
            if verdict.statistics["contrast"] is not None:
                row["contrast"].append(verdict.statistics["contrast"])
        for row in per_type.values():
            values = row.pop("contrast")
            row["abs_contrast_median"] = float(np.median(values)) if values else None
            row["rejected_fraction"] = row["rejected"] / row["items"]
        result["folders"][str(folder)] = dict(sorted(per_type.items()))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
