"""`run_bench(config, out_dir)`: the benchmark protocol end to end, resumable at every step.

    simulate the protocol's data (source defects, target good, target test)      data/
    per synthetic arm: build its registered generator (DefectFill trains here),   generators/, generated/<arm>/
      generate the same requests (images, masks, seeds) into target good images
      (`defectfill.generators`: registry, request planner, runner)
    per arm: assemble real (+ synthetic) data, fine-tune the same detector and    arms/<arm>/
      segmenter with the same budget and seeds, evaluate on the target test set
    report: results.json (every arm), table.md, plots, sheets, report.html,       ./
      bench.json (protocol, base model, goal check, seconds per stage)

What is finished is never recomputed: the simulator skips the images its manifest lists, a
complete generation folder skips its generator (and the DefectFill training inside it), a
trained concept folder is not retrained, a finished arm (arms/<arm>/results.json) is read back.
The run folder remembers its config; resuming with a different one is refused.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from defectfill.bench.config import REAL_ONLY, SIMULATOR_ONLY, BenchConfig, downstream_config_for
from defectfill.bench.protocol import BenchData, load_protocol_data
from defectfill.bench.stages import StageLog
from defectfill.config import to_dict
from defectfill.downstream.config import MODELS
from defectfill.errors import ConfigError
from defectfill.generators.manifest import generation_complete
from defectfill.generators.requests import MaskPolicy, Request, plan_requests
from defectfill.io_utils import atomic_write_json, atomic_write_text

CONFIG_NAME = "bench_config.yaml"
SUMMARY_NAME = "bench.json"
# the product's goal on the target fabrics (mean pixel F-measure of DeepLabV3, in points = F x 100)
GOAL_POINTS = {REAL_ONLY: 10.0, "cutpaste": 5.0}


# fields that may change between runs in one folder: arms are independent folders (an arm can be
# added or left out later); threads change speed, not results
_RESUMABLE_FIELDS = ("source", "arms", "num_threads", "seeds")


def _with_defaults(saved: dict, defaults: dict) -> dict:
    """`saved` with every key it lacks taken from `defaults`, section by section."""
    out = dict(saved)
    for key, value in defaults.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, dict) and isinstance(out[key], dict) and value:
            out[key] = _with_defaults(out[key], value)
    return out


def _check_same_config(config: BenchConfig, out_dir: Path) -> None:
    path = out_dir / CONFIG_NAME
    current = {k: v for k, v in to_dict(config).items() if k not in _RESUMABLE_FIELDS}
    if path.is_file():
        # a key or section added to the config after the run was made counts as its default
        saved = _with_defaults(yaml.safe_load(path.read_text()) or {}, to_dict(BenchConfig()))
        saved = {k: v for k, v in saved.items() if k not in _RESUMABLE_FIELDS}
        if saved != current:
            changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
            raise ConfigError(
                f"{out_dir}: holds a bench run with another config (differs in {changed}); resuming would mix "
                f"the two. Pass a new --out folder, or delete {out_dir} to start again")
    else:
        atomic_write_text(path, yaml.safe_dump(current, sort_keys=False))


def code_version() -> dict[str, Any]:
    """The code a run was made with: {"version", "commit" (git HEAD of the source tree, None outside a
    git checkout), "dirty" (uncommitted changes to tracked files)}. Two bench runs of different code can
    differ for that reason alone (`defectfill compare` says so)."""
    import subprocess

    from defectfill import __version__

    root = Path(__file__).resolve().parents[2]
    commit = dirty = None
    if (root / ".git").exists():
        try:
            git = ["git", "-C", str(root)]
            commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                    check=True).stdout.strip() or None
            dirty = bool(subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                        text=True, timeout=10, check=True).stdout.strip())
        except (OSError, subprocess.SubprocessError):
            commit = dirty = None
    return {"version": __version__, "commit": commit, "dirty": dirty}


def mean_f(result: dict) -> float | None:
    return (result.get("deeplab") or {}).get("mean_f_measure")


def goal_check(results: list[dict]) -> dict[str, Any]:
    """DefectFill's mean pixel F vs each baseline, in points, against GOAL_POINTS."""
    by_arm = {r["arm"]: r for r in results}
    out: dict[str, Any] = {"metric": "DeepLabV3 mean pixel F-measure x 100 on the target test set"}
    target = mean_f(by_arm["defectfill"]) if "defectfill" in by_arm else None
    if target is None:
        out["met"] = None
        return out
    met = True
    for baseline, needed in GOAL_POINTS.items():
        value = mean_f(by_arm[baseline]) if baseline in by_arm else None
        if value is None:
            continue
        gain = 100.0 * (target - value)
        out[f"vs_{baseline}"] = {"gain_points": round(gain, 2), "needed_points": needed, "met": gain >= needed}
        met = met and gain >= needed
    out["met"] = met if any(k.startswith("vs_") for k in out) else None
    return out


def _sheet(path: Path, samples: list, max_images: int = 32) -> Path | None:
    from defectfill.viz import save_contact_sheet

    chosen = [s for s in samples if not s.is_good][:max_images]
    if not chosen:
        return None
    return save_contact_sheet(path, [s.image for s in chosen], [s.mask for s in chosen],
                              [s.defect_type for s in chosen], ncols=8, tile=96)


def _crop_around(image: np.ndarray, mask: np.ndarray, min_side: int = 32) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    side = int(max(min_side, 2 * max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)))
    side = min(side, *image.shape[:2])
    y0 = int(np.clip(round(cy - side / 2), 0, image.shape[0] - side))
    x0 = int(np.clip(round(cx - side / 2), 0, image.shape[1] - side))
    return image[y0 : y0 + side, x0 : x0 + side]


def write_crops_sheet(train: list, generated: dict[str, Path], path: Path, per_row: int = 8) -> Path:
    """Rows of crops: real training defects, then each synthetic arm's defects (around the request
    masks); no outlines, so that the defects are seen as they are."""
    from defectfill.data.images import load_image, load_mask
    from defectfill.generators.manifest import read_generation_manifest
    from defectfill.masks import connected_components
    from defectfill.viz import save_contact_sheet

    images, captions = [], []
    real = []
    for sample in train:
        if sample.mask.any():
            labels, count = connected_components(sample.mask)
            sizes = [(labels == k).sum() for k in range(1, count + 1)]
            real.append(_crop_around(sample.image, labels == 1 + int(np.argmax(sizes))))
    for crop in real[:per_row]:
        images.append(crop)
        captions.append("real")
    for arm, folder in generated.items():
        for item in read_generation_manifest(folder)[:per_row]:
            images.append(_crop_around(load_image(item.image), load_mask(item.request_mask)))
            captions.append(arm)
    return save_contact_sheet(path, images, captions=captions, ncols=per_row, tile=128)


def _train_record(work: Path) -> dict[str, Any] | None:
    """What a generator recorded about its training (train_done.json), if it wrote one."""
    path = work / "train_done.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _gate_counts(manifests: dict[int, dict[str, Path]]) -> dict[str, dict]:
    """Per synthetic arm: the quality gate's rejected and retried items, summed over the seeds."""
    from defectfill.generators.quality import SUMMARY_NAME

    out: dict[str, dict] = {}
    for folders in manifests.values():
        for arm, folder in folders.items():
            gate = json.loads((folder / SUMMARY_NAME).read_text()) if (folder / SUMMARY_NAME).is_file() else {}
            counts = out.setdefault(arm, {"rejected": 0, "accepted_after_retry": 0, "accepted": 0})
            for row in gate.get("per_type", {}).values():
                for key in counts:
                    counts[key] += int(row.get(key, 0))
    return out


def terminal_table(summary: dict, seeds: dict, comparisons: dict) -> str:
    from defectfill.report.seeds import comparison_table, seed_table

    lines = [seed_table(seeds), comparison_table(comparisons), comparisons["verdict"]]
    for key, value in summary["goal"].items():
        if key.startswith("vs_"):
            lines.append(f"goal defectfill {key.replace('_', ' ')}: {value['gain_points']:+.1f} points of mean pixel F "
                         f"(needed {value['needed_points']:+.0f}; seed means, see the intervals): "
                         f"{'met' if value['met'] else 'NOT met'}")
    for arm, counts in (summary.get("quality_gate") or {}).items():
        lines.append(f"quality gate, {arm}: {counts['rejected']} request(s) rejected, {counts['accepted_after_retry']} "
                     f"accepted after a retry, {counts['accepted']} at the first attempt (all seeds)")
    lines += [f"WARNING: {note}" for note in summary["notes"]]
    return "\n".join(lines)


def bench_requests(config: BenchConfig, data: BenchData, seed: int) -> tuple[list[Request], MaskPolicy]:
    """The requests of a seed, the same for every synthetic arm; masks shaped like the source masks of
    the type (mode auto/real) or procedural.

    into target_good: `synthetic_per_class` per defect type into the target good images (good tiles of
    strips). into training_images (one fabric): `per_image` into every training image, of the image's
    own type, `clearance_px` away from its real defect (which stays labelled)."""
    g = config.generation
    types = list(data.defect_types)
    real = {} if g.masks == "procedural" else {t: data.source_masks(t) for t in types}
    if g.into == "training_images":
        requests = plan_requests(data.training_images(), types, per_image=g.per_image, seed=seed,
                                 generation_seed=seed * 100_003, own_type=True)
        return requests, MaskPolicy(mode=g.masks, real_masks=real, clearance_px=g.clearance_px)
    requests = plan_requests(data.target_good_paths(), types, per_type=g.synthetic_per_class, seed=seed)
    return requests, MaskPolicy(mode=g.masks, real_masks=real)


class Generators:
    """The run's generators, each built (trained) once on first use, in generators/<name>
    (seed `config.seed`); what an earlier run built that is now stale is redone."""

    def __init__(self, config: BenchConfig, data: BenchData, out_dir: Path, stages: StageLog):
        self.config, self.data, self.out_dir, self.stages = config, data, out_dir, stages
        self.built: dict[str, Any] = {}

    def drop_stale(self, name: str) -> None:
        import shutil

        from defectfill.generators.registry import get_plugin

        work = self.out_dir / "generators" / name
        plugin = get_plugin(name)
        if plugin.stale is None or not plugin.stale(work, self.config.options_for(name), self.config.config_dir):
            return
        print(f"[bench] what generator {name} built earlier is stale (e.g. trained on a fallback base): "
              "recomputing its training, generations and arms", file=sys.stderr, flush=True)
        for path in [work, *self.out_dir.glob(f"seed-*/generated/{name}"), *self.out_dir.glob(f"seed-*/arms/{name}")]:
            shutil.rmtree(path, ignore_errors=True)

    def get(self, name: str) -> Any:
        from defectfill.generators.context import GeneratorContext
        from defectfill.generators.registry import build_generator

        if name not in self.built:
            work = self.out_dir / "generators" / name
            self.stages.mark()
            ctx = GeneratorContext(name=name, source_defects=self.data.source_defects(),
                                   target_good=self.data.target_good_paths(),
                                   defect_types=list(self.data.defect_types), work_dir=work,
                                   options=self.config.options_for(name), seed=self.config.seed, device="auto",
                                   source_dir=self.data.source_dir, source_layout="mvtec",
                                   config_dir=self.config.config_dir)
            self.built[name] = build_generator(ctx)
            atomic_write_json(work / "notes.json", list(dict.fromkeys(ctx.notes)))
            self.stages.record(f"build:{name}")
        return self.built[name]

    def quality_gate(self):
        """The run's quality gate (floors from the real source defects), or None when it is off."""
        from defectfill.generators.quality import QualityGate

        config = self.config.generation.quality_gate
        if not config.enabled:
            return None
        if not hasattr(self, "_gate"):
            self._gate = QualityGate.calibrate(self.data.source_defects(), config)
        return self._gate

    def notes(self, name: str) -> list[str]:
        path = self.out_dir / "generators" / name / "notes.json"
        return json.loads(path.read_text()) if path.is_file() else []


def generate_arm(name: str, generators: Generators, folder: Path, requests: list[Request], masks: MaskPolicy,
                 label: str) -> Path:
    """Run generator `name` on every request into `folder`, resumably (built only when needed)."""
    from defectfill.generators.runner import run_generation, write_contact_sheet

    if not generation_complete(folder, len(requests)):
        generator = generators.get(name)
        generators.stages.mark()
        run_generation(generator, requests, folder, num_candidates=generators.config.generation.num_candidates,
                       masks=masks, model_name=str(generators.out_dir / "generators" / name), contact_sheet=False,
                       keep_source_labels=generators.config.generation.into == "training_images",
                       num_processes=1, process_index=0, gate=generators.quality_gate())
        write_contact_sheet(folder)
        generators.stages.record(f"generate:{name}:{label}", images=len(requests))
    return folder


def strip_arm_result(strip: dict) -> dict:
    """An arm on strips as the bench reports it: the strip-level scores (predictions stitched back
    to strip coordinates) in place of the tile-level ones, which stay under `tile_level`."""
    tile = strip["tile_level"]
    result = {**tile, "tile_level": {k: tile.get(k) for k in (*MODELS, "test_images")},
              "test_images": strip["strip_level"]["strips"], "tiling": strip["tiling"], "train_tiles": strip["train_tiles"]}
    for model in MODELS:
        if model in strip["strip_level"]:
            result[model] = {**(tile.get(model) or {}), **strip["strip_level"][model]}
    return result


def simulator_arm(config: BenchConfig, data: BenchData, downstream, test: list, arms_dir: Path) -> dict:
    """The `simulator_only` arm: the segmenter trained on renders alone, scored on the test images
    (strips: stitched, like every other arm); the target fabrics' textures are never rendered."""
    from defectfill.downstream.pretrain import run_simulator_arm
    from defectfill.realdata.strips import evaluate_strips

    exclude = config.data.target_textures if config.data.kind == "simulator" else []
    evaluate = None if data.tiling is None else (lambda run_dir, scored: evaluate_strips(run_dir, test, scored, data.tiling))
    return run_simulator_arm(SIMULATOR_ONLY, test, config.simulator_only, downstream, arms_dir,
                             exclude_textures=exclude, evaluate=evaluate)


def run_bench(config: BenchConfig, out_dir: str | Path, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) the bench of `config` in `out_dir`; returns the summary written to bench.json."""
    import torch

    config.validate()
    threads = torch.get_num_threads()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    try:
        return _run_bench(config, Path(out_dir), echo)
    finally:
        torch.set_num_threads(threads)


def _run_bench(config: BenchConfig, out_dir: Path, echo: Callable[[str], None]) -> dict[str, Any]:
    from defectfill.downstream.arm import RESULTS_NAME, run_arm
    from defectfill.realdata.strips import STRIP_RESULTS_NAME, run_strip_arm
    from defectfill.report.html import bench_section, seeds_section, write_report
    from defectfill.report.seeds import compare_arms, seed_summary

    # 1. the protocol's data (the user's folders are read and checked before anything is written)
    folders = config.data.kind == "folders"
    data = load_protocol_data(config, out_dir) if folders else None
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_same_config(config, out_dir)
    stages = StageLog(out_dir / "stages.jsonl")
    stages.mark()
    if data is None:
        data = load_protocol_data(config, out_dir)
    if not stages.done("data"):
        stages.record("data")
    echo(f"[bench] data: {json.dumps(data.description)[:300]}")
    generators = Generators(config, data, out_dir, stages)
    for name in config.synthetic_arms:
        generators.drop_stale(name)

    train = test = None
    per_seed: dict[int, list[dict]] = {}
    manifests: dict[int, dict[str, Path]] = {}
    for seed in config.run_seeds:
        seed_dir = out_dir / f"seed-{seed}"
        # 2. synthetic data: within a seed the same requests for every synthetic arm
        manifests[seed] = {}
        if config.synthetic_arms:
            requests, masks = bench_requests(config, data, seed)
            for name in config.synthetic_arms:
                echo(f"[bench] seed {seed}: generation {name}: {len(requests)} requests")
                manifests[seed][name] = generate_arm(name, generators, seed_dir / "generated" / name, requests, masks,
                                                     f"seed-{seed}")
        # 3. every arm: same detector/segmenter, budget and seed
        downstream = downstream_config_for(config, seed, classes=data.defect_types)
        if config.simulator_only.start_arms:  # every arm's segmenter starts from this seed's simulator-only one
            if test is None:
                train, test = data.real_training_samples(), data.test_samples()
            simulator_arm(config, data, downstream, test, seed_dir / "arms")
            weights = seed_dir / "arms" / SIMULATOR_ONLY / "deeplab" / "best.safetensors"
            downstream = replace(downstream, deeplab=replace(downstream.deeplab, init_weights=str(weights)))
        per_seed[seed] = []
        for name in config.arms:
            strip_results = data.tiling and name != SIMULATOR_ONLY
            finished = (seed_dir / "arms" / name / (STRIP_RESULTS_NAME if strip_results else RESULTS_NAME)).is_file()
            stages.mark()
            if not finished and train is None:
                train, test = data.real_training_samples(), data.test_samples()
            echo(f"[bench] seed {seed}: arm {name}{' (finished, read back)' if finished else ''}")
            arm_manifests = [manifests[seed][name]] if name in manifests[seed] else []
            if name == SIMULATOR_ONLY:
                result = simulator_arm(config, data, downstream, test or [], seed_dir / "arms")
            elif data.tiling is None:
                result = run_arm(name, train or [], test or [], downstream, seed_dir / "arms", manifests=arm_manifests)
            else:
                result = strip_arm_result(run_strip_arm(name, train or [], test or [], downstream, data.tiling,
                                                        seed_dir / "arms", manifests=arm_manifests))
            if not finished:
                stages.record(f"arm:{name}:seed-{seed}")
            per_seed[seed].append(result)

    # 4. report: mean ± std over seeds, paired intervals, the verdict from the intervals
    notes = list(dict.fromkeys(n for name in config.synthetic_arms for n in generators.notes(name)))
    seeds = seed_summary(per_seed)
    comparisons = compare_arms(per_seed, seed=config.seed)
    first = per_seed[config.run_seeds[0]]
    summary = {
        "name": config.name,
        "config": str(out_dir / CONFIG_NAME),
        "protocol": to_dict(config.data) if not folders else {"folders": to_dict(config.data.folders),
                                                                 **data.description},
        "defect_types": list(data.defect_types),
        "budget": to_dict(config.generation),
        "seeds": config.run_seeds,
        "arms": seeds["arms"],
        "comparisons": comparisons["comparisons"],
        "verdict": comparisons["verdict"],
        "goal": goal_check([{"arm": arm, "deeplab": {"mean_f_measure": stats.get("mean_f", {}).get("mean")}}
                            for arm, stats in seeds["arms"].items()]),
        "generators": {name: _train_record(out_dir / "generators" / name) for name in config.synthetic_arms},
        "quality_gate": _gate_counts(manifests) if config.generation.quality_gate.enabled else None,
        "notes": notes + comparisons["notes"],
        "seconds": stages.seconds(),
        "cpu_seconds": stages.seconds("cpu_seconds"),
        "code": code_version(),  # of the code that wrote this summary; resumed arms may be older
        "ran_this_time": list(stages.ran),
    }
    sheets = []
    if (sheet := _sheet(out_dir / "sheets" / "real_source_defects.png", data.source_defects())) is not None:
        sheets.append(("Real source defects (what every generator learns from)", sheet))
    if test is None:
        test = data.test_samples()
    if (sheet := _sheet(out_dir / "sheets" / "real_target_test.png", test)) is not None:
        sheets.append(("Real target test defects (never seen in training)", sheet))
    if manifests[config.run_seeds[0]]:
        crops = write_crops_sheet(data.source_defects(), manifests[config.run_seeds[0]], out_dir / "sheets" / "crops.png")
        sheets.append(("Real source defects (first row) beside each generator's (one row each), as they are", crops))
    for name, folder in manifests[config.run_seeds[0]].items():
        if (folder / "contact_sheet.png").is_file():
            title = f"Generated by {name}, seed {config.run_seeds[0]} (changed-pixel labels outlined, selection score)"
            sheets.append((title, folder / "contact_sheet.png"))
    page = write_report(first, out_dir, title=f"defectfill bench: {config.name}", verdict_text=comparisons["verdict"],
                        results_title=f"Results of seed {config.run_seeds[0]}",
                        sections=[seeds_section(seeds, comparisons), bench_section(summary, sheets)])
    summary["report"] = str(page)
    atomic_write_json(out_dir / SUMMARY_NAME, summary)
    atomic_write_text(out_dir / "table.md", terminal_table(summary, seeds, comparisons) + "\n")
    echo(terminal_table(summary, seeds, comparisons))
    echo(f"[bench] report: {page}")
    return summary


def read_summary(out_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(out_dir) / SUMMARY_NAME).read_text())
