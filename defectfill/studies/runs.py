"""What a study reads from a finished bench run folder: its config and data, its seeds."""

from __future__ import annotations

from pathlib import Path


def bench_of(run_dir: Path):
    """(BenchConfig, BenchData) of a bench run folder (its bench_config.yaml; data read as the bench
    did). The relative paths it names (downstream config, data folder) are looked up as for a config
    in the repository's configs/ folder: there, in the working directory, in the repository root."""
    from defectfill.bench.config import BenchConfig
    from defectfill.bench.protocol import load_protocol_data
    from defectfill.config import REPO_ROOT, load_config
    from defectfill.errors import ConfigError

    path = Path(run_dir) / "bench_config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no bench_config.yaml; pass a folder written by `defectfill bench`")
    config = load_config(BenchConfig, path)
    config.source = str(REPO_ROOT / "configs" / path.name)
    return config, load_protocol_data(config, Path(run_dir))


def run_seeds(run_dir: Path) -> list[int]:
    """The seeds a bench run holds (its seed-<s> folders: a run may add seeds later)."""
    seeds = sorted(int(p.name.removeprefix("seed-")) for p in Path(run_dir).glob("seed-*") if p.name[5:].isdigit())
    if not seeds:
        from defectfill.errors import ConfigError

        raise ConfigError(f"{run_dir}: no seed-<s> folder; pass a bench run folder with finished seeds")
    return seeds
