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
from defectfill.errors import ConfigError

REAL_ONLY = "real_only"


@dataclass
class DataConfig:
    """The simulated protocol (DESIGN §6). Counts of good/test images are per texture."""

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
    source: str = ""  # the YAML this config was read from (set by load_bench_config)

    def validate(self) -> BenchConfig:
        from defectfill.data.fabric import check_defect_type, check_texture
        from defectfill.errors import DataError
        from defectfill.generators.registry import available_generators

        d = self.data
        problems = []
        known = [REAL_ONLY, *available_generators()]
        unknown = [a for a in self.arms if a not in known]
        if unknown:
            problems.append(f"arms: unknown arm(s) {unknown}; known arms are {known} (real_only and the registered "
                            "generators)")
        if len(set(self.arms)) != len(self.arms) or not self.arms:
            problems.append(f"arms: must be a non-empty list of distinct names, found {self.arms}")
        for name in self.generators:
            if name not in known[1:]:
                problems.append(f"generators: {name!r} is not a registered generator ({known[1:]})")
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
        if len(set(self.seeds)) != len(self.seeds):
            problems.append(f"seeds: {self.seeds} must be distinct")
        if self.num_threads < 0:
            problems.append(f"num_threads must be >= 0 (0: torch's default), found {self.num_threads}")
        if self.generation.synthetic_per_class < 1 or self.generation.num_candidates < 1:
            problems.append("generation: synthetic_per_class and num_candidates must be >= 1")
        if problems:
            where = self.source or "bench config"
            raise ConfigError(f"{where}: " + "; ".join(problems))
        return self

    @property
    def synthetic_arms(self) -> list[str]:
        return [a for a in self.arms if a != REAL_ONLY]

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


def _require(value: str, base: Path | None, what: str) -> Path:
    path = resolve_path(value, base)
    if path is None:
        raise ConfigError(f"{what}: {value!r} not found (looked next to the bench config, in the working directory "
                          f"and in {REPO_ROOT}); pass an existing file")
    return path


def downstream_config_for(config: BenchConfig, seed: int | None = None):
    """The downstream config: `downstream.config` + `overrides`, classes = the bench's defect types,
    the detectors' seed = `seed` (default: the first of the run's seeds)."""
    from defectfill.downstream.config import load_downstream_config

    base = Path(config.source).parent if config.source else None
    path = _require(config.downstream.config, base, "downstream.config")
    overrides = {**config.downstream.overrides, "classes": list(config.data.defect_types),
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
