"""The generators the app offers: `--model [NAME=]PATH` -> a loaded `DefectGenerator`.

`load_app_generator(name, path, device)` is the one place that turns a trained generator folder
into a generator object:

- ``defectfill``: a DefectFill model folder (`defectfill.json`, LoRA, embeddings), loaded with
  `DefectFill.from_pretrained` on its recorded base model (or `base_model`);
- ``cutpaste``: a folder of real labelled defects in any layout the readers know (MVTec-AD,
  image + mask folders, COCO, YOLO); cut-paste keeps their crops (`CutPaste.fit`).

Without a NAME, a folder holding `defectfill.json` is a DefectFill model and any other folder a
cut-paste source.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from defectfill.errors import ConfigError, ModelError

APP_GENERATORS = ("defectfill", "cutpaste")


@dataclass(frozen=True)
class ModelSpec:
    """One `--model` value: the generator's name, its folder, and the label shown in the page."""

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
                          f"(or NAME=FOLDER with NAME one of {list(APP_GENERATORS)})")
    if not name:
        name = "defectfill" if (folder / "defectfill.json").is_file() else "cutpaste"
    if name not in APP_GENERATORS:
        raise ConfigError(f"--model {value}: unknown generator {name!r}; known: {list(APP_GENERATORS)}")
    return ModelSpec(name, folder)


def load_app_generator(name: str, path: str | Path, device: str = "cpu", *, base_model: str | None = None,
                       selection_metric: str = "ms-ssim-distance") -> Any:
    """The generator `name` trained in `path` (see the module docstring), ready on `device`."""
    path = Path(path)
    if name == "defectfill":
        from defectfill.models.defectfill import DefectFill

        return DefectFill.from_pretrained(path, base_model=base_model, device=device, selection_metric=selection_metric)
    if name == "cutpaste":
        from defectfill.data.readers import read_dataset
        from gan_baselines.cutpaste import CutPaste

        return CutPaste().fit(read_dataset(path))
    raise ModelError(f"generator {name!r}: unknown; known: {list(APP_GENERATORS)}")


def generation_options(generator: Any) -> set[str]:
    """The optional settings `generator.generate` takes beyond the protocol's (steps, guidance, seed)."""
    params = inspect.signature(generator.generate).parameters
    return {p for p in ("num_inference_steps", "guidance_scale", "seed") if p in params}


def run_generator(generator: Any, image: Any, mask: Any, *, defect_type: str, num_candidates: int, seed: int,
                  num_inference_steps: int, guidance_scale: float) -> tuple[Any, dict[str, Any]]:
    """Call `generate` with the settings this generator takes; returns (result, the settings used)."""
    options = generation_options(generator)
    settings: dict[str, Any] = {"num_candidates": int(num_candidates)}
    kwargs: dict[str, Any] = {}
    if "num_inference_steps" in options:
        kwargs["num_inference_steps"] = settings["num_inference_steps"] = int(num_inference_steps)
    if "guidance_scale" in options:
        kwargs["guidance_scale"] = settings["guidance_scale"] = float(guidance_scale)
    if "seed" in options:
        kwargs["seed"] = int(seed)
    else:  # the protocol's generator= takes an int seed too
        kwargs["generator"] = int(seed)
    result = generator.generate(image, mask, defect_type=defect_type, num_candidates=int(num_candidates), **kwargs)
    return result, settings


class GeneratorBook:
    """The app's generators by label, each loaded on first use and kept (loading a pipeline takes seconds)."""

    def __init__(self, specs: list[ModelSpec], device: str = "cpu", *, base_model: str | None = None,
                 selection_metric: str = "ms-ssim-distance"):
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
        """The types a generator knows; a DefectFill folder answers from defectfill.json without loading."""
        spec = self.spec(label)
        if spec.name == "defectfill" and label not in self._loaded:
            from defectfill.models.weights import read_model_info

            return sorted(read_model_info(spec.path)["concepts"])
        return list(self.get(label).defect_types)
