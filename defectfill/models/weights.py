"""Save and load trained DefectFill concepts in formats plain diffusers reads.

A model folder holds:

- `pytorch_lora_weights.safetensors`: the UNet (and text-encoder) LoRA in diffusers' format,
  written by `StableDiffusionInpaintPipeline.save_lora_weights` with the peft adapter config in
  the header (so rank and alpha load back exactly): `pipe.load_lora_weights(folder)`.
- `learned_embeds.safetensors`: one key per concept token -> its embedding, shape (1, dim).
  diffusers' `load_textual_inversion` takes one token per file, so each token also has its own
  `learned_embeds-<defect_type>.safetensors`:
  `pipe.load_textual_inversion(folder, weight_name="learned_embeds-stain.safetensors")`. With a
  single concept `pipe.load_textual_inversion(folder)` reads `learned_embeds.safetensors` directly.
- `defectfill.json`: format version, base model, object word, concepts {defect_type: token},
  initializer words, resolution, LoRA settings and the training config.

Every file is written to a temporary name and renamed into place (`defectfill.io_utils`).
Pickled weights (.bin, .ckpt, .pt, .pth, .pkl) are refused.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from defectfill.errors import ModelError
from defectfill.io_utils import atomic_save, atomic_write_json, load_safetensors

FORMAT_VERSION = 1
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
LEARNED_EMBEDS = "learned_embeds.safetensors"
INFO_FILE = "defectfill.json"
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl", ".pickle")


def per_type_embeds_name(defect_type: str) -> str:
    return f"learned_embeds-{defect_type}.safetensors"


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def _adapter_name(model) -> str | None:
    """"default" (training), or the single adapter a pipeline loaded ("default_0" from load_lora_weights)."""
    configs = getattr(model, "peft_config", None) or {}
    if "default" in configs:
        return "default"
    return next(iter(configs)) if len(configs) == 1 else None


def _lora_state(model) -> dict[str, torch.Tensor] | None:
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    model = _unwrap(model)
    name = _adapter_name(model)
    if name is None:
        return None
    state = get_peft_model_state_dict(model, adapter_name=name)
    return {k: v.detach().float().cpu().contiguous() for k, v in convert_state_dict_to_diffusers(state).items()}


def _lora_metadata(model) -> dict[str, Any] | None:
    model = _unwrap(model)
    name = _adapter_name(model)
    return model.peft_config[name].to_dict() if name is not None else None


def save_concepts(
    out_dir: str | Path,
    unet,
    text_encoder,
    tokenizer,
    concepts: dict[str, str],
    meta: dict[str, Any],
) -> Path:
    """Write the LoRA, the concept embeddings and `defectfill.json` into `out_dir`; return it.

    concepts: defect type -> token (each token must be in `tokenizer`).
    meta: base_model, object_word, initializer_words, resolution, lora {...}, training {...}, window_zoom (if not 1).
    """
    from diffusers import StableDiffusionInpaintPipeline
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weight = _unwrap(text_encoder).get_input_embeddings().weight
    vocab = tokenizer.get_vocab()
    embeds = {}
    for defect_type, token in concepts.items():
        if token not in vocab:
            raise ModelError(f"save_concepts: token {token!r} of {defect_type!r} is not in the tokenizer; add it first")
        embeds[token] = weight[vocab[token]].detach().float().cpu().reshape(1, -1).contiguous()

    unet_lora, text_lora = _lora_state(unet), _lora_state(text_encoder)
    if not unet_lora:
        raise ModelError("save_concepts: the UNet has no LoRA adapter; nothing to save (call unet.add_adapter first)")
    with tempfile.TemporaryDirectory(prefix=".lora-", dir=out_dir) as tmp:
        StableDiffusionInpaintPipeline.save_lora_weights(
            tmp, unet_lora_layers=unet_lora, text_encoder_lora_layers=text_lora,
            unet_lora_adapter_metadata=_lora_metadata(unet),
            text_encoder_lora_adapter_metadata=_lora_metadata(text_encoder) if text_lora else None,
        )
        atomic_save(out_dir / LORA_WEIGHTS, lambda p: shutil.copyfile(Path(tmp) / LORA_WEIGHTS, p))
    metadata = {"format": "pt"}
    atomic_save(out_dir / LEARNED_EMBEDS, lambda p: save_file(embeds, str(p), metadata=metadata))
    for defect_type, token in concepts.items():
        atomic_save(out_dir / per_type_embeds_name(defect_type),
                    lambda p, t=token: save_file({t: embeds[t]}, str(p), metadata=metadata))
    info = {
        "format_version": FORMAT_VERSION,
        "base_model": str(meta.get("base_model", "")),
        "object_word": meta.get("object_word", "fabric"),
        "concepts": dict(concepts),
        "initializer_words": dict(meta.get("initializer_words", {})),
        "resolution": int(meta.get("resolution", 0)),
        "lora": dict(meta.get("lora", {})),
        "training": dict(meta.get("training", {})),
    }
    if float(meta.get("window_zoom", 1.0)) != 1.0:  # generation windows enlarged (training's window_zoom)
        info["window_zoom"] = float(meta["window_zoom"])
    atomic_write_json(out_dir / INFO_FILE, info)
    return out_dir


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    return load_safetensors(path, fix="re-save or re-download the model")


# accelerate's own training-state files in a checkpoint folder (optimizer, scheduler, RNG, scaler);
# accelerate reads them back with torch.load(weights_only=True). Model weights are never pickled.
ACCELERATE_STATE = re.compile(r"^(optimizer(_\d+)?\.bin|scheduler(_\d+)?\.bin|sampler(_\d+)?\.bin|"
                              r"random_states_\d+\.pkl|scaler\.pt)$")


def read_model_info(model_dir: str | Path, *, checkpoint: bool = False) -> dict[str, Any]:
    """Validate a DefectFill model folder and return its `defectfill.json` (plus `model_dir`).

    checkpoint: the folder is a training checkpoint; accelerate's optimizer/RNG state files
        (ACCELERATE_STATE) are then expected and not counted as pickled weights.
    Raises ModelError for: a missing folder or file (named), pickled weights, corrupted
    safetensors, a concept whose embedding is missing, an unknown format version.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelError(f"{model_dir}: not a folder; pass a DefectFill model folder (with {INFO_FILE})")
    pickles = sorted(p.name for p in model_dir.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES
                     and not (checkpoint and ACCELERATE_STATE.match(p.name)))
    if pickles:
        raise ModelError(
            f"{model_dir}: pickled weight file(s) {pickles} refused (they can run code when loaded); "
            f"convert them to .safetensors or remove them"
        )
    for name in (INFO_FILE, LORA_WEIGHTS, LEARNED_EMBEDS):
        if not (model_dir / name).is_file():
            raise ModelError(f"{model_dir}: missing {name}; the folder is not a complete DefectFill model")
    try:
        info = json.loads((model_dir / INFO_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{model_dir / INFO_FILE}: not valid JSON ({exc}); re-save the model") from exc
    if info.get("format_version") != FORMAT_VERSION:
        raise ModelError(
            f"{model_dir / INFO_FILE}: format_version {info.get('format_version')!r}, this defectfill reads "
            f"{FORMAT_VERSION}; upgrade defectfill or re-save the model"
        )
    concepts = info.get("concepts")
    if not isinstance(concepts, dict) or not concepts:
        raise ModelError(f"{model_dir / INFO_FILE}: 'concepts' must map defect types to tokens, found {concepts!r}")
    lora = _load_safetensors(model_dir / LORA_WEIGHTS)
    if not any(k.startswith("unet.") for k in lora):
        raise ModelError(f"{model_dir / LORA_WEIGHTS}: no 'unet.' LoRA weights inside; re-save the model")
    embeds = _load_safetensors(model_dir / LEARNED_EMBEDS)
    missing = sorted(set(concepts.values()) - set(embeds))
    if missing:
        raise ModelError(f"{model_dir / LEARNED_EMBEDS}: no embedding for token(s) {missing}; re-save the model")
    return {**info, "model_dir": str(model_dir)}


def load_learned_embeds(model_dir: str | Path) -> dict[str, torch.Tensor]:
    """token -> embedding (dim,) from `learned_embeds.safetensors`."""
    embeds = _load_safetensors(Path(model_dir) / LEARNED_EMBEDS)
    return {k: v.reshape(-1) for k, v in embeds.items()}


def load_concepts_into_pipeline(pipe, model_dir: str | Path) -> dict[str, Any]:
    """Add the concept tokens + embeddings to `pipe`'s tokenizer/text encoder and load the LoRA.

    Works on any diffusers pipeline with the textual-inversion and LoRA loader mixins (e.g.
    StableDiffusionInpaintPipeline). Returns the validated `defectfill.json` info.
    Raises ModelError when a token is already in the tokenizer (concepts loaded twice).
    """
    info = read_model_info(model_dir)
    model_dir = Path(model_dir)
    embeds = load_learned_embeds(model_dir)
    vocab = pipe.tokenizer.get_vocab()
    tokens = list(info["concepts"].values())
    clash = [t for t in tokens if t in vocab]
    if clash:
        raise ModelError(
            f"{model_dir}: token(s) {clash} already in the pipeline's tokenizer (concepts loaded twice?); "
            f"load them into a fresh pipeline"
        )
    text_encoder = pipe.text_encoder
    pipe.tokenizer.add_tokens(tokens)
    text_encoder.resize_token_embeddings(len(pipe.tokenizer), mean_resizing=False)
    weight = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        for token in tokens:
            weight[pipe.tokenizer.convert_tokens_to_ids(token)] = embeds[token].to(weight.dtype)
    _load_lora(pipe, model_dir, info)
    return info


def _load_lora(pipe, model_dir: Path, info: dict[str, Any]) -> None:
    """The plain diffusers call (rank and alpha come from the file header)."""
    try:
        pipe.load_lora_weights(str(model_dir), weight_name=LORA_WEIGHTS)
    except Exception as exc:
        raise ModelError(
            f"{model_dir / LORA_WEIGHTS}: cannot be loaded into {type(pipe).__name__} ({exc}); is the base model "
            f"the one in {INFO_FILE} ({info.get('base_model')})?"
        ) from exc
