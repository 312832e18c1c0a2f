"""`BenchConfig`: every setting of a benchmark run (configs/bench_*.yaml), in one typed place.

The bench reuses the configs of the stages it runs instead of copying their fields:

- `generators.<name>` holds each generator's own typed options (`defectfill.generators.registry`);
  e.g. `generators.defectfill.train_config` names a DefectFill training YAML
  (configs/defectfill_tiny.yaml, configs/defectfill_sd2.yaml) and `train_overrides` changes some
  of its fields;
- `downstream.config` names a downstream YAML (configs/downstream_*.yaml) and
  `downstream.overrides` changes some of its fields (dotted keys, e.g. `deeplab.epochs`); its
  `classes` are always the bench's defect types.

Relative paths are looked up next to the bench YAML, then in the working directory, then in the
repository root (so `defectfill demo` works from any folder). `load_bench_config` loads the whole
chain, so an unknown key anywhere (bench, training or downstream overrides) fails at load time
with the list of valid keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from defectfill.config import REPO_ROOT, load_config, resolve_path
from defectfill.downstream.pretrain import SimulatorOnlyConfig
from defectfill.errors import ConfigError
from defectfill.generators.quality import QualityGateConfig

REAL_ONLY = "real_only"
SIMULATOR_ONLY = "simulator_only"  # the segmenter trained on simulator renders alone (downstream.pretrain)


@dataclass
class SplitRule:
    """How one folder splits into source (labelled defects of other fabrics), target and test.

    rule "fabric": `pattern` (a regex searched in each file stem) names the fabric in its group
        `fabric`; images of `source_fabrics` give the source defects, the others are the target
        (new) fabric: its good images train every arm, `test_good_fraction` of them and all its
        defect images are the test set.
    rule "alternate" / "halves" (one fabric): stems sorted; even positions (or the first half) train,
        the others test; the training defects are the source.
    """

    rule: Literal["fabric", "alternate", "halves"] = "fabric"
    pattern: str = r"(?P<fabric>\d+)"
    source_fabrics: list[str] = field(default_factory=list)
    test_good_fraction: float = 0.25


@dataclass
class FoldersConfig:
    """The user's own data, in any layout the readers know (MVTec, image + mask, COCO, YOLO, AITEX,
    images/ + annotations/): `source` + `target_good` + `target_test` folders, or one `folder` split by
    `split`. Relative paths: next to the bench YAML, the working directory, the repository root."""

    source: str | None = None  # labelled defects on the source (old) fabrics
    target_good: str | None = None  # good images of the new fabric (subfolders are read too)
    target_test: str | None = None  # labelled test images of the new fabric
    folder: str | None = None  # or one folder holding everything, split by `split`
    split: SplitRule = field(default_factory=SplitRule)
    layout: str = "auto"
    defect_type: str = "defect"  # the class of image + mask folders that name none
    # an image declared defective without a usable mask (all-black, missing): "good" keeps it as a good
    # image, "skip" leaves it out, "error" stops (in a test set it always stops)
    unlabelled: Literal["good", "skip", "error"] = "good"
    image_size: int | None = None  # resize every image to this square side (None: keep the size)
    max_train_images: int | None = None  # quick checks: the first N source defects / good images (None: all)
    max_test_images: int | None = None  # quick checks: the first N test images (None: all)
    tile: int | None = None  # strips: train on tiles of this side, generate into good tiles, stitch predictions
    tile_overlap: int = 32
    keep_good_ratio: float = 0.25  # share of the defect-free training tiles kept


@dataclass
class DataConfig:
    """The data of the protocol: the fabric simulator (DESIGN §6; counts of good/test images are per
    texture) or, with `kind: folders`, the user's own folders (`folders`; class names from the data)."""

    kind: Literal["simulator", "folders"] = "simulator"
    folders: FoldersConfig = field(default_factory=FoldersConfig)
    source_textures: list[str] = field(default_factory=lambda: ["plain", "twill"])
    target_textures: list[str] = field(default_factory=lambda: ["satin", "rib"])
    defect_types: list[str] = field(default_factory=lambda: ["stain", "hole", "broken_end"])
    image_size: int = 96
    source_defects_per_type: int = 10  # labelled real defects per type, in total over the source textures
    source_good: int = 0  # good images per source texture added to every arm's training set
    target_good: int = 20  # good training images per target texture (also what defects are generated into)
    test_defects_per_type: int = 10  # per target texture
    test_good: int = 5  # per target texture
    gray: bool = False


@dataclass
class GenerationBudget:
    """The budget every synthetic arm gets: same count per class, same requests, same seeds."""

    synthetic_per_class: int = 20
    num_candidates: int = 4  # candidates per request; each generator keeps its own best
    masks: Literal["auto", "real", "procedural"] = "auto"  # auto: shapes from the source masks
    # where synthetic defects go: the target good images (a new fabric), or every training image
    # (one fabric: real defects stay labelled, new ones keep `clearance_px` away), `per_image` each
    into: Literal["target_good", "training_images"] = "target_good"
    per_image: int = 1
    clearance_px: int = 4
    # every arm's items must read as defects (`defectfill.generators.quality`), floors calibrated on
    # the real source defects; off by default (the runs in the README were made without it)
    quality_gate: QualityGateConfig = field(default_factory=lambda: QualityGateConfig(enabled=False))


@dataclass
class DownstreamRef:
    config: str = "downstream_tiny.yaml"
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class BenchConfig:
    name: str = "bench"
    seed: int = 0  # the data (simulator) and the generators' training
    # every arm runs once per seed (requests, masks, generation and the detectors' training); empty: [seed]
    seeds: list[int] = field(default_factory=list)
    # torch CPU threads (0: torch's default). On a machine shared with other jobs, 1 thread avoids
    # OpenMP stalls that made a DefectFill step ~12x slower with 2 threads on 2 busy cores.
    num_threads: int = 0
    arms: list[str] = field(default_factory=lambda: [REAL_ONLY, "cutpaste", "defectfill"])
    data: DataConfig = field(default_factory=DataConfig)
    generation: GenerationBudget = field(default_factory=GenerationBudget)
    # each generator's own options, {registered name: {option: value}} (defectfill.generators.registry;
    # unknown names and keys rejected at load time); a generator not named here gets its defaults
    generators: dict[str, dict[str, Any]] = field(default_factory=dict)
    downstream: DownstreamRef = field(default_factory=DownstreamRef)
    # the renders and budget of the `simulator_only` arm (used when it is in `arms`)
    simulator_only: SimulatorOnlyConfig = field(default_factory=SimulatorOnlyConfig)
    source: str = ""  # the YAML this config was read from (set by load_bench_config)

    def validate(self) -> BenchConfig:
        from defectfill.generators.registry import available_generators

        d = self.data
        problems = []
        known = [REAL_ONLY, *available_generators()]
        unknown = [a for a in self.arms if a not in [*known, SIMULATOR_ONLY]]
        if unknown:
            problems.append(f"arms: unknown arm(s) {unknown}; known arms are {[*known, SIMULATOR_ONLY]} (real_only, "
                            "simulator_only and the registered generators)")
        if len(set(self.arms)) != len(self.arms) or not self.arms:
            problems.append(f"arms: must be a non-empty list of distinct names, found {self.arms}")
        for name in self.generators:
            if name not in known[1:]:
                problems.append(f"generators: {name!r} is not a registered generator ({known[1:]})")
        if d.kind == "simulator":
            problems += _simulator_problems(d)
            if SIMULATOR_ONLY in self.arms:
                try:
                    self.simulator_only.check(d.defect_types)
                except ConfigError as exc:
                    problems.append(str(exc))
        else:
            problems += _folder_problems(d.folders)
        if len(set(self.seeds)) != len(self.seeds):
            problems.append(f"seeds: {self.seeds} must be distinct")
        if self.num_threads < 0:
            problems.append(f"num_threads must be >= 0 (0: torch's default), found {self.num_threads}")
        g = self.generation
        if g.synthetic_per_class < 1 or g.num_candidates < 1 or g.per_image < 1 or g.clearance_px < 0:
            problems.append("generation: synthetic_per_class, num_candidates and per_image must be >= 1, "
                            "clearance_px >= 0")
        if problems:
            where = self.source or "bench config"
            raise ConfigError(f"{where}: " + "; ".join(problems))
        return self

    @property
    def synthetic_arms(self) -> list[str]:
        return [a for a in self.arms if a not in (REAL_ONLY, SIMULATOR_ONLY)]

    @property
    def run_seeds(self) -> list[int]:
        return list(self.seeds) or [self.seed]

    @property
    def config_dir(self) -> Path | None:
        return Path(self.source).parent if self.source else None

    def options_for(self, name: str) -> Any:
        """Generator `name`'s typed options (its `generators:` entry over its defaults), checked."""
        from defectfill.generators.registry import check_options

        return check_options(name, dict(self.generators.get(name, {})), self.config_dir)


def _simulator_problems(d: DataConfig) -> list[str]:
    from defectfill.data.fabric import check_defect_type, check_texture
    from defectfill.errors import DataError

    problems = []
    try:
        for texture in [*d.source_textures, *d.target_textures]:
            check_texture(texture, "data.*_textures")
        for defect_type in d.defect_types:
            check_defect_type(defect_type, "data.defect_types")
    except DataError as exc:  # re-raised below as a config problem
        problems.append(str(exc))
    overlap = sorted(set(d.source_textures) & set(d.target_textures))
    if overlap:
        problems.append(f"data: textures {overlap} are both source and target; the target fabrics must be new")
    if not d.source_textures or not d.target_textures or not d.defect_types:
        problems.append("data: source_textures, target_textures and defect_types must be non-empty")
    if len(set(d.defect_types)) != len(d.defect_types):
        problems.append(f"data.defect_types: repeated names in {d.defect_types}")
    if d.image_size < 32:
        problems.append(f"data.image_size must be >= 32, found {d.image_size}")
    if d.source_defects_per_type < len(d.source_textures):
        problems.append(f"data.source_defects_per_type ({d.source_defects_per_type}) must be >= the number of "
                        f"source textures ({len(d.source_textures)}), so that each has at least one defect")
    for name in ("target_good", "test_defects_per_type"):
        if getattr(d, name) < 1:
            problems.append(f"data.{name} must be >= 1, found {getattr(d, name)}")
    for name in ("source_good", "test_good"):
        if getattr(d, name) < 0:
            problems.append(f"data.{name} must be >= 0, found {getattr(d, name)}")
    return problems


def _folder_problems(f: FoldersConfig) -> list[str]:
    import re

    problems = []
    separate = [f.source, f.target_good, f.target_test]
    if f.folder is None and None in separate:
        problems.append("data.folders: name `folder` (split by `split`) or all of `source`, `target_good` and "
                        "`target_test`")
    if f.folder is not None and any(v is not None for v in separate):
        problems.append("data.folders: name either `folder` or `source` / `target_good` / `target_test`, not both")
    if f.folder is not None and f.split.rule == "fabric":
        try:
            if "fabric" not in re.compile(f.split.pattern).groupindex:
                problems.append(f"data.folders.split.pattern {f.split.pattern!r} has no group (?P<fabric>...)")
        except re.error as exc:
            problems.append(f"data.folders.split.pattern {f.split.pattern!r} is not a regular expression: {exc}")
        if not f.split.source_fabrics:
            problems.append("data.folders.split.source_fabrics: name the fabric codes whose defects are the source")
    if not 0 <= f.split.test_good_fraction < 1:
        problems.append(f"data.folders.split.test_good_fraction must lie in [0, 1), found {f.split.test_good_fraction}")
    if f.image_size is not None and (f.image_size < 32 or f.image_size % 8):
        problems.append(f"data.folders.image_size must be a multiple of 8 and >= 32, found {f.image_size}")
    if f.tile is not None and (f.tile < 32 or not 0 <= f.tile_overlap < f.tile):
        problems.append(f"data.folders: need tile >= 32 and 0 <= tile_overlap < tile, found {f.tile}, {f.tile_overlap}")
    return problems


def _require(value: str, base: Path | None, what: str) -> Path:
    path = resolve_path(value, base)
    if path is None:
        raise ConfigError(f"{what}: {value!r} not found (looked next to the bench config, in the working directory "
                          f"and in {REPO_ROOT}); pass an existing file")
    return path


def downstream_config_for(config: BenchConfig, seed: int | None = None, classes: list[str] | None = None):
    """The downstream config: `downstream.config` + `overrides`, classes = the bench's defect types
    (`classes`: the ones found in the user's data), the detectors' seed = `seed` (default: the first
    of the run's seeds)."""
    from defectfill.downstream.config import load_downstream_config

    base = Path(config.source).parent if config.source else None
    path = _require(config.downstream.config, base, "downstream.config")
    overrides = {**config.downstream.overrides, "classes": list(classes or config.data.defect_types),
                 "seed": int(config.run_seeds[0] if seed is None else seed)}
    return load_downstream_config(path, overrides=overrides)


def load_bench_config(path: str | Path, overrides: dict[str, Any] | None = None) -> BenchConfig:
    """Read a bench YAML (unknown keys rejected) and check the configs it names load too."""
    path = Path(path)
    config = load_config(BenchConfig, path, overrides)
    config.source = str(path.resolve())
    config.validate()
    downstream_config_for(config)
    for name in config.synthetic_arms:  # every generator's options parse and check before any work
        config.options_for(name)
    return config
