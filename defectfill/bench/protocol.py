"""The data split of the benchmark protocol (DESIGN §6), simulated with `defectfill.data.fabric`.

    source/        MVTec-AD folder: a few labelled defects per type on the *source* textures
                   (test/<type>/, ground_truth/<type>/), plus optional good images (train/good/)
    target_train/  good images of the *target* textures only (train/good/): the new fabric, as a
                   user has it; every arm trains on them, every generator puts defects into them
    target_test/   defects of every type on the target textures + good target images (test/):
                   the evaluation set, never seen by any arm or generator

The three folders are written by `simulate_dataset` (resumable, deterministic from the seed); the
target test images use the simulator's test split seeds, so they never repeat a training image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from defectfill.bench.config import BenchConfig
from defectfill.data.sample import DefectSample
from defectfill.errors import DataError


@dataclass
class BenchData:
    source_dir: Path
    target_train_dir: Path
    target_test_dir: Path

    def source_defects(self) -> list[DefectSample]:
        from defectfill.data.readers import read_mvtec

        return [s for s in read_mvtec(self.source_dir, "test") if not s.is_good]

    def source_good(self) -> list[DefectSample]:
        from defectfill.data.readers import read_mvtec

        if not (self.source_dir / "train").is_dir():
            return []
        return [s for s in read_mvtec(self.source_dir, "train") if s.is_good]

    def target_good_paths(self) -> list[Path]:
        from defectfill.data.images import list_images

        return list_images(self.target_train_dir / "train" / "good")

    def target_good(self) -> list[DefectSample]:
        from defectfill.data.readers import read_mvtec

        return read_mvtec(self.target_train_dir, "train")

    def real_training_samples(self) -> list[DefectSample]:
        """What every arm trains on before synthesis: the source defects (+ source good images)
        and the target good images."""
        return self.source_defects() + self.source_good() + self.target_good()

    def test_samples(self) -> list[DefectSample]:
        from defectfill.data.readers import read_mvtec

        return read_mvtec(self.target_test_dir, "test")

    def source_masks(self, defect_type: str) -> list:
        return [s.mask for s in self.source_defects() if s.defect_type == defect_type]


def _shares(total: int, parts: int) -> list[int]:
    """`total` split into `parts` counts differing by at most one (the first ones larger)."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def simulate_protocol(config: BenchConfig, data_dir: str | Path) -> BenchData:
    """Write (or complete) the three folders of the protocol under `data_dir`."""
    from defectfill.data.fabric import simulate_dataset

    d = config.data
    data_dir = Path(data_dir)
    common = {"size": d.image_size, "seed": config.seed, "gray": d.gray}
    source = data_dir / "source"
    for texture, count in zip(d.source_textures, _shares(d.source_defects_per_type, len(d.source_textures))):
        simulate_dataset(source, [texture], d.defect_types, n_good_train=d.source_good, n_good_test=0,
                         n_defect_per_type=count, **common)
    target_train = simulate_dataset(data_dir / "target_train", d.target_textures, [], n_good_train=d.target_good,
                                    n_good_test=0, n_defect_per_type=0, **common)
    target_test = simulate_dataset(data_dir / "target_test", d.target_textures, d.defect_types, n_good_train=0,
                                   n_good_test=d.test_good, n_defect_per_type=d.test_defects_per_type, **common)
    data = BenchData(source, target_train, target_test)
    found = {t: 0 for t in d.defect_types}
    for sample in data.source_defects():
        found[sample.defect_type] = found.get(sample.defect_type, 0) + 1
    missing = [t for t, n in found.items() if n == 0]
    if missing:
        raise DataError(f"{source}: no labelled source defect of type(s) {missing}; raise data.source_defects_per_type")
    return data
