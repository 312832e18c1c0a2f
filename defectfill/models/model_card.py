"""The model card (README.md with YAML metadata) of a DefectFill model on the Hugging Face Hub.

Built locally with `huggingface_hub.ModelCardData` / `ModelCard`, never fetched from the Hub:
metadata (base_model, library_name diffusers, tags, license), the defect types and their tokens,
how to load the model (defectfill and plain diffusers), the training config, a sample grid and
metrics when present.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from defectfill.errors import HubError
from defectfill.io_utils import atomic_write_text

TAGS = ["defectfill", "lora", "textual-inversion", "inpainting", "fabric-defects"]
SAMPLES_NAME = "samples.png"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def is_hub_id(value: str | None) -> bool:
    """'owner/name' and not an existing local path."""
    return bool(value) and bool(_HUB_ID.match(str(value))) and not Path(str(value)).exists()


def default_license(base_model: str | None) -> str:
    """SD-2 derived weights inherit CreativeML Open RAIL++-M; the project's own base model is Apache-2.0."""
    return "openrail++" if base_model and "stable-diffusion-2" in str(base_model) else "apache-2.0"


def build_model_card(
    info: dict[str, Any],
    repo_id: str,
    metrics: dict[str, Any] | None = None,
    has_samples: bool = False,
    license: str | None = None,
):
    """A `huggingface_hub.ModelCard` for the model described by `info` (its defectfill.json)."""
    from huggingface_hub import ModelCard, ModelCardData

    base = info.get("base_model") or None
    card_data = ModelCardData(
        base_model=base if is_hub_id(base) else None,
        library_name="diffusers",
        tags=list(TAGS),
        license=license or default_license(base),
        pipeline_tag="image-to-image",
    )
    concepts = info.get("concepts", {})
    object_word = info.get("object_word", "fabric")
    rows = "\n".join(f"| `{t}` | `{tok}` | A {object_word} with {tok} |" for t, tok in sorted(concepts.items()))
    first_type = min(concepts) if concepts else "stain"
    base_note = (f"[`{base}`](https://huggingface.co/{base})" if is_hub_id(base)
                 else f"`{base}` (a local base model: pass `base_model=` when loading)")
    sections = [
        f"# DefectFill: {', '.join(sorted(concepts))} on {object_word}",
        "",
        ("Defect concepts learned with DefectFill (Song et al., *DefectFill: Realistic Defect Generation with "
        "Inpainting Diffusion Model for Visual Inspection*, CVPR 2025, arXiv 2503.13985): one text token per "
        "defect type (textual inversion) and LoRA on the UNet attention of an inpainting diffusion model. "
        "It paints defects into a mask on a good image; Low-Fidelity Selection keeps the candidate that differs "
        "most from the good image."),
        "",
        f"- Base model: {base_note}",
        f"- Resolution: {info.get('resolution', 'unknown')} px",
        "",
        "## Defect types",
        "",
        "| defect type | token | prompt |",
        "| --- | --- | --- |",
        rows,
        "",
        "## Use",
        "",
        "```python",
        "from defectfill.models.defectfill import DefectFill",
        "",
        f'model = DefectFill.from_pretrained("{repo_id}")',
        f'result = model.generate(good_image, mask, defect_type="{first_type}", num_candidates=8, seed=0)',
        "result.image, result.changed_mask, result.best_boxes",
        "```",
        "",
        ("Plain diffusers: `pipe.load_lora_weights(repo)` and "
        f"`pipe.load_textual_inversion(repo, weight_name=\"learned_embeds-{first_type}.safetensors\")`."),
        "",
    ]
    if has_samples:
        sections += ["## Samples", "", f"![samples]({SAMPLES_NAME})", ""]
    if metrics:
        sections += ["## Metrics", "", "| metric | value |", "| --- | --- |"]
        sections += [f"| {k} | {_fmt(v)} |" for k, v in metrics.items()]
        sections += [""]
    if info.get("lora"):
        sections += ["## LoRA", "", "```json", json.dumps(info["lora"], indent=2, default=str), "```", ""]
    if info.get("training"):
        sections += ["## Training config", "", "```json", json.dumps(info["training"], indent=2, default=str),
                     "```", ""]
    content = f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(sections)
    return ModelCard(content)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _save_grid(path: Path, sample_grid: Any) -> None:
    import shutil

    from defectfill.data.images import save_image, to_rgb_array

    if isinstance(sample_grid, (str, Path)):
        source = Path(sample_grid)
        if not source.is_file():
            raise HubError(f"sample_grid {source}: file not found; pass an existing PNG or an image array")
        from defectfill.io_utils import atomic_save

        atomic_save(path, lambda tmp: shutil.copyfile(source, tmp))
        return
    save_image(path, to_rgb_array(np.asarray(sample_grid) if not hasattr(sample_grid, "mode") else sample_grid,
                                  name="sample_grid"))


def prepare_hub_folder(
    folder: str | Path,
    repo_id: str,
    metrics: dict[str, Any] | None = None,
    sample_grid: Any = None,
    license: str | None = None,
) -> Path:
    """Add README.md (model card) and samples.png to a saved model folder; returns the README path."""
    from defectfill.models.weights import read_model_info

    folder = Path(folder)
    info = read_model_info(folder)
    if sample_grid is not None:
        _save_grid(folder / SAMPLES_NAME, sample_grid)
    card = build_model_card(info, repo_id, metrics=metrics, has_samples=(folder / SAMPLES_NAME).is_file(),
                            license=license)
    readme = folder / "README.md"
    atomic_write_text(readme, str(card))
    return readme
