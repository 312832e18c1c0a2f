"""The data of the benchmark protocol (DESIGN §6): simulated (`simulate_protocol`, below) or the
user's own folders (`load_folder_data`, at the end); both give the same methods to the bench.

Simulated, with `defectfill.data.fabric`:

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

from dataclasses import dataclass, field
from pathlib import Path

from defectfill.bench.config import BenchConfig
from defectfill.data.sample import DefectSample
from defectfill.errors import DataError


@dataclass
class BenchData:
    """The simulated protocol's three folders (module docstring)."""

    source_dir: Path
    target_train_dir: Path
    target_test_dir: Path
    defect_types: list[str] = field(default_factory=list)
    tiling = None  # simulated images are never strips
    # read once: requests (per seed and type), every generator's training and the sheets use them
    _source_defects: list[DefectSample] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def description(self) -> dict:
        return {"simulator": {"source": str(self.source_dir), "target_train": str(self.target_train_dir),
                              "target_test": str(self.target_test_dir)}}

    def training_images(self) -> list[DefectSample]:
        return self.real_training_samples()

    def source_defects(self) -> list[DefectSample]:
        from defectfill.data.readers import read_mvtec

        if self._source_defects is None:
            self._source_defects = [s for s in read_mvtec(self.source_dir, "test") if not s.is_good]
        return list(self._source_defects)

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
    data = BenchData(source, target_train, target_test, list(d.defect_types))
    found = {t: 0 for t in d.defect_types}
    for sample in data.source_defects():
        found[sample.defect_type] = found.get(sample.defect_type, 0) + 1
    missing = [t for t, n in found.items() if n == 0]
    if missing:
        raise DataError(f"{source}: no labelled source defect of type(s) {missing}; raise data.source_defects_per_type")
    return data


# ------------------------------------------------------------------------------ the user's own folders
def resize_sample(sample: DefectSample, size: int) -> DefectSample:
    """`sample` resized to a `size` x `size` square (area interpolation when shrinking; the mask by
    `masks.resize_mask`, keeping even the smallest defect); grey stays exactly grey."""
    import cv2
    import numpy as np

    from defectfill.masks import resize_mask

    if sample.size == (size, size):
        return sample
    shrink = size < min(sample.size)
    image = cv2.resize(sample.image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    if sample.is_gray:
        image = np.repeat(image[..., :1], 3, axis=2)
    mask = resize_mask(sample.mask, (size, size), mode="area", keep_nonempty=True) if sample.mask.any() \
        else np.zeros((size, size), bool)
    return DefectSample(image, mask, sample.defect_type, source=sample.source, mask_source=sample.mask_source,
                        is_gray=sample.is_gray, meta=dict(sample.meta))


def _name(sample: DefectSample) -> str:
    return str(sample.meta.get("name") or (Path(sample.source).stem if sample.source else "?"))


def _read(path: Path, what: str, defect_type: str, layout: str, *, test: bool = False,
          unlabelled: str = "good") -> list[DefectSample]:
    """Every sample of a folder (any reader layout; a folder of good images is read with its
    subfolders); for a test set, a declared defect without a usable mask is an error."""
    from defectfill.data.images import IMAGE_SUFFIXES, load_image_with_info
    from defectfill.data.readers import ReadReport, detect_layout, read_dataset

    if not path.exists():
        raise DataError(f"data.folders.{what}: {path} does not exist; pass the folder of {what.replace('_', ' ')}")
    try:
        kind = detect_layout(path) if layout == "auto" else layout
    except DataError:
        has_images = any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.rglob("*"))
        if what != "target_good" or not has_images:
            raise
        kind = "good"  # good images only in subfolders
    if kind == "good":  # good images, in subfolders too (one per capture day, camera, ...)
        import numpy as np

        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        samples = []
        for file in files:
            image, is_gray = load_image_with_info(file)
            samples.append(DefectSample(image, np.zeros(image.shape[:2], bool), "good", source=file, is_gray=is_gray,
                                        meta={"name": str(file.relative_to(path).with_suffix(""))}))
        return samples
    report = ReadReport()
    kwargs: dict = {"defect_type": defect_type} if kind == "folder" else {}
    if kind in ("folder", "mvtec", "aitex"):
        kwargs["unlabelled"] = "skip" if test else unlabelled
    samples = read_dataset(path, kind, report=report, **kwargs)
    missing = report.counts.get("missing_mask", 0) + report.counts.get("empty_mask", 0)
    if test and missing:
        raise DataError(f"data.folders.{what} {path}: {missing} test image(s) declare a defect but have no usable mask "
                        f"({'; '.join(report.skipped[:5])}); a test set needs every mask: add them or move the images "
                        "out")
    return samples


def _split_by_fabric(samples: list[DefectSample], rule, folder: Path, seed: int):
    import re

    import numpy as np

    pattern = re.compile(rule.pattern)
    fabric_of, unmatched = {}, []
    for i, sample in enumerate(samples):
        stem = Path(sample.source).stem if sample.source else _name(sample)
        match = pattern.search(stem)
        if match is None or match.group("fabric") is None:
            unmatched.append(stem)
        else:
            fabric_of[i] = match.group("fabric")
    if unmatched:
        raise DataError(f"data.folders.split.pattern {rule.pattern!r} finds no fabric in {len(unmatched)} file name(s) "
                        f"of {folder} (e.g. {unmatched[:3]}); fix the pattern (its group (?P<fabric>...) names the "
                        "fabric)")
    fabrics = sorted(set(fabric_of.values()))
    source = [samples[i] for i, f in fabric_of.items() if f in rule.source_fabrics and not samples[i].is_good]
    target = [samples[i] for i, f in fabric_of.items() if f not in rule.source_fabrics]
    if not source:
        raise DataError(f"data.folders.split: the source fabrics {rule.source_fabrics} hold no labelled defect in "
                        f"{folder}; fabrics found: {fabrics}")
    if not target:
        raise DataError(f"data.folders.split: every fabric of {folder} ({fabrics}) is a source fabric; leave at least "
                        "one out as the new (target) fabric")
    goods = [s for s in target if s.is_good]
    order = np.random.default_rng(seed).permutation(len(goods))
    n_test = round(rule.test_good_fraction * len(goods))
    test_good = [goods[i] for i in sorted(order[:n_test])]
    target_good = [goods[i] for i in sorted(order[n_test:])]
    test = [s for s in target if not s.is_good] + test_good
    return source, target_good, test, {"fabrics": fabrics, "source_fabrics": list(rule.source_fabrics)}


@dataclass
class FolderData:
    """The protocol on the user's own folders (`data.kind: folders`), read and checked up front."""

    source: list[DefectSample]  # labelled defects (other fabrics, or the training half of one fabric)
    target_good: list[DefectSample]  # good images of the new fabric: every arm trains on them
    test: list[DefectSample]
    defect_types: list[str]
    extra_training: list[DefectSample]  # training images that are neither (one-fabric split: none)
    description: dict
    tiling: object | None = None  # realdata.strips.StripTiling when the images are strips
    source_dir: Path | None = None  # the defects are in memory: generators train from them

    def source_defects(self) -> list[DefectSample]:
        return [s for s in self.source if not s.is_good]

    def source_masks(self, defect_type: str) -> list:
        return [s.mask for s in self.source_defects() if s.defect_type == defect_type]

    def real_training_samples(self) -> list[DefectSample]:
        return self.source + self.extra_training + self.target_good

    def test_samples(self) -> list[DefectSample]:
        return self.test

    def target_good_paths(self) -> list:
        """Where synthetic defects go: the good images (good tiles of strips), in memory."""
        if self.tiling is None:
            return list(self.target_good)
        import numpy as np

        from defectfill.data.tiling import tile_image

        tiles = []
        for strip in self.target_good:
            images, offsets = tile_image(strip.image, self.tiling.tile, self.tiling.overlap)
            for image, (x, y) in zip(images, offsets):
                tiles.append(DefectSample(image, np.zeros(image.shape[:2], bool), "good", source=strip.source,
                                          is_gray=strip.is_gray, meta={"name": f"{_name(strip)}_x{x}_y{y}"}))
        return tiles

    def training_images(self) -> list[DefectSample]:
        return self.real_training_samples()


def load_folder_data(config: BenchConfig) -> FolderData:
    """Read, split, resize and check the user's folders (`data.folders`) before anything runs or is written."""
    from defectfill.config import resolve_path

    f = config.data.folders
    base = config.config_dir

    def path(value: str, what: str) -> Path:
        found = resolve_path(value, base)
        if found is None:
            raise DataError(f"data.folders.{what}: {value!r} not found (looked next to the bench config, in the working "
                            "directory and in the repository root); pass an existing folder")
        return found

    extra: list[DefectSample] = []
    if f.folder is not None:
        folder = path(f.folder, "folder")
        samples = _read(folder, "folder", f.defect_type, f.layout, unlabelled=f.unlabelled)
        if f.split.rule == "fabric":
            source, target_good, test, description = _split_by_fabric(samples, f.split, folder, config.seed)
        else:
            ordered = sorted(samples, key=_name)
            if f.split.rule == "alternate":
                train, test = ordered[0::2], ordered[1::2]
            else:
                half = (len(ordered) + 1) // 2
                train, test = ordered[:half], ordered[half:]
            source = [s for s in train if not s.is_good]
            target_good = [s for s in train if s.is_good]
            description = {"rule": f.split.rule, "train": [_name(s) for s in train], "test": [_name(s) for s in test]}
        missing = [s for s in test if not s.is_good and not s.mask.any()]
        if missing:
            raise DataError(f"data.folders.folder {folder}: {len(missing)} test image(s) without a mask "
                            f"({[_name(s) for s in missing[:5]]}); a test set needs every mask")
        description = {"folder": str(folder), **description}
    else:
        source = [s for s in _read(path(f.source, "source"), "source", f.defect_type, f.layout,
                                   unlabelled=f.unlabelled) if not s.is_good]
        target_good = [s for s in _read(path(f.target_good, "target_good"), "target_good", f.defect_type, f.layout,
                                        unlabelled=f.unlabelled) if s.is_good]
        test = _read(path(f.target_test, "target_test"), "target_test", f.defect_type, f.layout, test=True)
        description = {"source": f.source, "target_good": f.target_good, "target_test": f.target_test}
    source, target_good, test = source[: f.max_train_images], target_good[: f.max_train_images], test[: f.max_test_images]
    if f.image_size is not None:
        source, target_good, test = ([resize_sample(s, f.image_size) for s in group] for group in (source, target_good, test))
    source_types = sorted({s.defect_type for s in source if not s.is_good})
    test_types = sorted({s.defect_type for s in test if not s.is_good})
    if not source_types:
        raise DataError("data.folders: the source holds no labelled defect; every generator learns from a few")
    if not test:
        raise DataError("data.folders: the test set is empty; pass labelled test images of the new fabric")
    unseen = [t for t in test_types if t not in source_types]
    if unseen:
        raise DataError(f"data.folders: the test set holds defect type(s) {unseen} that no source defect has "
                        f"(source types: {source_types}); no arm could learn them: add source defects of those types "
                        "or leave those test images out")
    if config.generation.into == "target_good" and not target_good:
        raise DataError("data.folders: no good image of the new fabric to put synthetic defects into; add some, or set "
                        "generation.into: training_images")
    tiling = None
    if f.tile is not None:
        from defectfill.realdata.strips import StripTiling

        tiling = StripTiling(tile=f.tile, overlap=f.tile_overlap, keep_good_ratio=f.keep_good_ratio)
        small = [_name(s) for s in [*source, *target_good, *test] if min(s.size) < f.tile]
        if small:
            raise DataError(f"data.folders.tile: {len(small)} image(s) are smaller than the tile ({f.tile} px) on one "
                            f"side (e.g. {small[:3]}); lower `tile` to the smallest image side or leave them out")
    description["counts"] = {"source_defects": len(source), "target_good": len(target_good), "test": len(test),
                             "test_defects": sum(not s.is_good for s in test)}
    return FolderData(source, target_good, test, source_types, extra, description, tiling)


def load_protocol_data(config: BenchConfig, out_dir: Path):
    """The protocol's data: simulated into out_dir/data, or the user's folders (read, nothing written)."""
    if config.data.kind == "folders":
        return load_folder_data(config)
    return simulate_protocol(config, out_dir / "data")
