"""The generators the app offers: `--model [NAME=]PATH` -> a loaded `DefectGenerator`.

Through the generator registry (`defectfill.generators.registry`): any registered generator whose
plug-in loads a trained model folder, built-in or added by a package's entry point. Built-ins:

- ``defectfill``: a DefectFill model folder (`defectfill.json`, LoRA, embeddings) on its recorded
  base model (or `base_model`);
- ``cutpaste``: a folder of real labelled defects in any layout the readers know (MVTec-AD,
  image + mask folders, COCO, YOLO); cut-paste keeps their crops.

Without a NAME, a folder holding `defectfill.json` is a DefectFill model and any other folder a
cut-paste source. The page's steps and guidance reach a generator that has them: as `generate`
keywords, or as its sampling attributes (the registry's DefectFill binds them on the object).
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from defectfill.errors import ConfigError
from defectfill.generators.registry import get_plugin, load_generator

SAMPLING_SETTINGS = ("num_inference_steps", "guidance_scale")


@dataclass(frozen=True)
class ModelSpec:
    """One `--model` value: the generator's registered name, its folder, and the label shown in the page."""

    name: str
    path: Path

    @property
    def label(self) -> str:
        return f"{self.name}: {self.path.name or self.path}"


def parse_model_spec(value: str) -> ModelSpec:
    """`[NAME=]PATH` -> ModelSpec; NAME defaults from the folder (see the module docstring)."""
    name, sep, path = value.partition("=")
    if not sep:
        name, path = "", value
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"--model {value}: {folder} is not a folder; pass a trained model folder "
                          "(or NAME=FOLDER with NAME a registered generator, e.g. cutpaste=DIR of real defects)")
    if not name:
        name = "defectfill" if (folder / "defectfill.json").is_file() else "cutpaste"
    if get_plugin(name).load is None:  # get_plugin names the registered generators for an unknown name
        raise ConfigError(f"--model {value}: generator {name!r} has no trained-model folder to load; pick one that "
                          "has (defectfill, cutpaste, ...)")
    return ModelSpec(name, folder)


def load_app_generator(name: str, path: str | Path, device: str = "cpu", *, base_model: str | None = None,
                       selection_metric: str = "auto") -> Any:
    """The generator `name` trained in `path`, ready on `device` (the registry's `load_generator`),
    with the app's selection metric and base model where the plug-in's options have them."""
    fields = {f.name for f in dataclasses.fields(get_plugin(name).options)}
    options: dict[str, Any] = {}
    if "selection_metric" in fields:
        options["selection_metric"] = selection_metric
    if base_model is not None and "load_base_model" in fields:
        options["load_base_model"] = base_model
    return load_generator(name, path, options, device)


def sampling_settings(generator: Any) -> list[str]:
    """Which of the page's sampling settings (steps, guidance) this generator takes."""
    params = inspect.signature(generator.generate).parameters
    return [s for s in SAMPLING_SETTINGS if s in params or hasattr(generator, s)]


def run_generator(generator: Any, image: Any, mask: Any, *, defect_type: str, num_candidates: int, seed: int,
                  num_inference_steps: int, guidance_scale: float) -> tuple[Any, dict[str, Any]]:
    """One `generate` call with the page's settings (the protocol's `generator=` takes the int seed);
    returns (result, the settings this generator used)."""
    params = inspect.signature(generator.generate).parameters
    settings: dict[str, Any] = {"num_candidates": int(num_candidates)}
    kwargs: dict[str, Any] = {}
    for name, value in (("num_inference_steps", int(num_inference_steps)), ("guidance_scale", float(guidance_scale))):
        if name in params:
            kwargs[name] = settings[name] = value
        elif hasattr(generator, name):
            setattr(generator, name, value)  # generate events run one at a time (Gradio's default queue)
            settings[name] = value
    result = generator.generate(image, mask, defect_type=defect_type, num_candidates=int(num_candidates),
                                generator=int(seed), **kwargs)
    return result, settings


class GeneratorBook:
    """The app's generators by label, each loaded on first use and kept (loading a pipeline takes seconds)."""

    def __init__(self, specs: list[ModelSpec], device: str = "cpu", *, base_model: str | None = None,
                 selection_metric: str = "auto"):
        self.specs = {spec.label: spec for spec in specs}
        self.device = device
        self.base_model = base_model
        self.selection_metric = selection_metric
        self._loaded: dict[str, Any] = {}

    @property
    def labels(self) -> list[str]:
        return list(self.specs)

    def spec(self, label: str) -> ModelSpec:
        if label not in self.specs:
            raise ConfigError(f"generator {label!r}: not one of the loaded models {self.labels}; start the app with "
                              "--model FOLDER for each generator to offer")
        return self.specs[label]

    def get(self, label: str) -> Any:
        if label not in self._loaded:
            spec = self.spec(label)
            self._loaded[label] = load_app_generator(spec.name, spec.path, self.device, base_model=self.base_model,
                                                     selection_metric=self.selection_metric)
        return self._loaded[label]

    def defect_types(self, label: str) -> list[str]:
        return sorted(self.get(label).defect_types)
