"""The quality gate: a generated item enters a data set only when its change reads as a defect.

Labels come from the pixels that changed, which cannot tell a defect from re-synthesised cloth: a
fill that repaints plain fabric inside the mask is labelled "defect" all the same, and teaches the
detector that fabric is a defect. The gate measures what the label claims, on the generated image
inside its label (changed pixels ∩ request mask), with the statistics of the real defects:

    contrast  |mean grey inside − mean grey of the 2-6 px ring around it|   (`defect_contrast`)
    texture   |log(std inside / std of the ring)|                           (`defect_texture_change`)

and compares it with a floor per defect type: the `percentile` (default 10th) of the same statistic
over the real training defects of that type (`QualityGate.calibrate`). An item passes when the
statistics in `statistics` reach their floors (`require`: "any" of them or "all"); a label with no
pixel fails ("nothing changed"); a type without real defects has no floor and passes (said in
`uncalibrated`).

The runner (`defectfill.generators.runner`) asks the gate about the candidates of a request in
selection order and keeps the first that passes; when none does, it generates the request again
with seed `seed + a * RETRY_SEED_STRIDE` (attempt a = 1..max_retries, same mask), and after the
last attempt records the request in `rejected.jsonl` instead of the manifest: deterministic, and a
resumed run skips it like a finished one. `quality_gate.json` sums it up per defect type.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from defectfill.data.sample import DefectSample
from defectfill.errors import ConfigError
from defectfill.io_utils import Manifest, atomic_write_json, atomic_write_text

STATISTICS = ("contrast", "texture")
REJECTED_NAME = "rejected.jsonl"
SUMMARY_NAME = "quality_gate.json"
RETRY_SEED_STRIDE = 1_000_003  # a prime above any plan's request count: retry seeds never meet request seeds


@dataclass
class QualityGateConfig:
    """Options of the quality gate (YAML: `load_config(QualityGateConfig, path)`).

    enabled: off = every item enters (the gate only measures, nothing is rejected or retried).
    statistics: which of STATISTICS are gated.
    require: "any" (an item passes when one statistic reaches its floor) or "all".
    percentile: the floor of a statistic = this percentile of it over the real defects of the type.
    max_retries: new seeds tried after the first attempt before the request is skipped.
    ring_inner, ring_outer: the ring around the label the statistics compare with (px).
    """

    enabled: bool = True
    statistics: list[str] = field(default_factory=lambda: ["contrast"])
    require: str = "any"
    percentile: float = 10.0
    max_retries: int = 2
    ring_inner: int = 2
    ring_outer: int = 6

    def __post_init__(self) -> None:
        unknown = sorted(set(self.statistics) - set(STATISTICS))
        if unknown or not self.statistics:
            raise ConfigError(f"quality_gate.statistics: found {self.statistics}; expected a non-empty subset of "
                              f"{list(STATISTICS)}")
        if self.require not in ("any", "all"):
            raise ConfigError(f"quality_gate.require: found {self.require!r}; expected 'any' or 'all'")
        if not 0.0 <= float(self.percentile) <= 100.0:
            raise ConfigError(f"quality_gate.percentile: found {self.percentile}; expected a value in [0, 100]")
        if int(self.max_retries) < 0:
            raise ConfigError(f"quality_gate.max_retries: found {self.max_retries}; expected >= 0")
        if not 0 <= int(self.ring_inner) < int(self.ring_outer):
            raise ConfigError(f"quality_gate ring: found inner {self.ring_inner}, outer {self.ring_outer}; "
                              "expected 0 <= ring_inner < ring_outer")


def defect_statistics(image: np.ndarray, region: np.ndarray, config: QualityGateConfig) -> dict[str, float | None]:
    """{"contrast": |contrast to the ring|, "texture": |log std ratio to the ring|} of `region` in
    `image` ((H, W[, 3]) uint8, (H, W) bool); None where the region or its ring is empty."""
    from defectfill.metrics.generation import defect_contrast, defect_texture_change

    ring = {"inner": config.ring_inner, "outer": config.ring_outer}
    values = {"contrast": defect_contrast(image, region, **ring), "texture": defect_texture_change(image, region, **ring)}
    return {name: None if value is None else abs(value) for name, value in values.items()}


@dataclass
class Verdict:
    passed: bool
    reason: str  # "passed", "uncalibrated", "gate off", "nothing changed", "below floor: contrast 1.2 < 9.8"
    statistics: dict[str, float | None]

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reason": self.reason, "statistics": self.statistics}


@dataclass
class QualityGate:
    """A calibrated gate: `floors` {defect_type: {statistic: floor}}, `real_defects` {type: count}."""

    config: QualityGateConfig
    floors: dict[str, dict[str, float]]
    real_defects: dict[str, int] = field(default_factory=dict)

    @classmethod
    def calibrate(cls, real_defects: Sequence[DefectSample], config: QualityGateConfig | None = None) -> QualityGate:
        """Floors from the real defects (good samples and empty masks are ignored): per type and
        statistic, the `config.percentile` of the statistic over that type's defects."""
        config = config or QualityGateConfig()
        values: dict[str, dict[str, list[float]]] = {}
        for sample in real_defects:
            if sample.is_good or not sample.mask.any():
                continue
            per_type = values.setdefault(sample.defect_type, {name: [] for name in STATISTICS})
            for name, value in defect_statistics(sample.image, sample.mask, config).items():
                if value is not None:
                    per_type[name].append(value)
        floors = {t: {name: float(np.percentile(v, config.percentile)) for name, v in stats.items() if v}
                  for t, stats in values.items()}
        counts = {t: len(stats["contrast"]) for t, stats in values.items()}
        return cls(config=config, floors=floors, real_defects=counts)

    def check(self, image: np.ndarray, label: np.ndarray, defect_type: str) -> Verdict:
        """Does the change `label` ((H, W) bool: changed pixels ∩ request) of `image` read as a defect?"""
        label = np.asarray(label, bool)
        stats = defect_statistics(image, label, self.config) if label.any() else dict.fromkeys(STATISTICS)
        if not self.config.enabled:
            return Verdict(True, "gate off", stats)
        if not label.any():
            return Verdict(False, "nothing changed", stats)
        floors = self.floors.get(defect_type, {})
        gated = [name for name in self.config.statistics if name in floors]
        if not gated:
            return Verdict(True, "uncalibrated", stats)
        below = [name for name in gated if stats[name] is None or stats[name] < floors[name]]
        passed = len(below) < len(gated) if self.config.require == "any" else not below
        if passed:
            return Verdict(True, "passed", stats)
        detail = ", ".join(f"{n} {stats[n] if stats[n] is not None else float('nan'):.3g} < {floors[n]:.3g}"
                           for n in below)
        return Verdict(False, f"below floor: {detail}", stats)

    def as_dict(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "floors": self.floors, "real_defects": self.real_defects,
                "uncalibrated_types": "types with no floor pass unchecked"}


def retry_seed(seed: int, attempt: int) -> int:
    """The generation seed of attempt `attempt` (0 = the request's own seed)."""
    return int(seed) + int(attempt) * RETRY_SEED_STRIDE


def rejected_path(out_dir: Path, rank: int | None = None) -> Path:
    return out_dir / (REJECTED_NAME if rank is None else f"rejected.rank{rank}.jsonl")


def rejected_names(out_dir: str | Path) -> set[str]:
    """Requests (by output name) the gate skipped, in the merged file or any rank's shard."""
    out_dir = Path(out_dir)
    names: set[str] = set()
    for path in [rejected_path(out_dir), *sorted(out_dir.glob("rejected.rank*.jsonl"))]:
        names.update(str(r.get("name")) for r in Manifest(path, key="name"))
    return names


def merge_rejected(out_dir: str | Path) -> None:
    """Merge the ranks' rejected shards into `rejected.jsonl` (each request once), then delete them."""
    import json

    out_dir = Path(out_dir)
    shards = sorted(out_dir.glob("rejected.rank*.jsonl"))
    if not shards:
        return
    records: dict[str, dict[str, Any]] = {}
    for path in [rejected_path(out_dir), *shards]:
        for record in Manifest(path, key="name"):
            records.setdefault(str(record["name"]), record)
    atomic_write_text(rejected_path(out_dir), "".join(json.dumps(records[k]) + "\n" for k in sorted(records)))
    for shard in shards:
        shard.unlink(missing_ok=True)


def write_summary(out_dir: str | Path, gate: QualityGate) -> dict[str, Any]:
    """`quality_gate.json`: the gate (config, floors) and, per defect type, the items accepted at the
    first attempt, accepted after a retry, and rejected (skipped); computed from the files, so a
    resumed run counts what every run did."""
    from defectfill.generators.manifest import MANIFEST_NAME

    out_dir = Path(out_dir)
    per_type: dict[str, dict[str, int]] = {}

    def row(defect_type: str) -> dict[str, int]:
        return per_type.setdefault(defect_type, {"accepted": 0, "accepted_after_retry": 0, "rejected": 0})

    for record in Manifest(out_dir / MANIFEST_NAME, key="image"):
        attempts = int((record.get("quality") or {}).get("attempts", 1))
        row(str(record["defect_type"]))["accepted" if attempts == 1 else "accepted_after_retry"] += 1
    for record in Manifest(rejected_path(out_dir), key="name"):
        row(str(record["defect_type"]))["rejected"] += 1
    summary = {**gate.as_dict(), "per_type": dict(sorted(per_type.items())),
               "rejected": sum(r["rejected"] for r in per_type.values()),
               "accepted_after_retry": sum(r["accepted_after_retry"] for r in per_type.values())}
    atomic_write_json(out_dir / SUMMARY_NAME, summary)
    return summary
