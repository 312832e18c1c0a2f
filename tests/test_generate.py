"""DefectFill.generate on a tiny real inpainting pipeline: window, batching, paste-back, LFS, labels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from defectfill.errors import GenerationError, ModelError
from defectfill.generators.interface import DefectGenerator
from defectfill.masks import mask_to_boxes
from defectfill.models.defectfill import DefectFill

STEPS = 2


def build_tiny_model_dir(root: Path, concepts: dict[str, str] | None = None) -> tuple[Path, Path]:
    """A tiny base inpainting pipeline folder and a DefectFill model folder (real LoRA + embeddings)."""
    from peft import LoraConfig

    from defectfill.models.components import build_inpaint_pipeline, get_dummy_components
    from defectfill.models.weights import save_concepts

    concepts = concepts or {"stain": "<stain>", "hole": "<hole>"}
    pipe = build_inpaint_pipeline(get_dummy_components(seed=0))
    base = root / "base"
    pipe.save_pretrained(base)
    pipe.tokenizer.add_tokens(list(concepts.values()))
    pipe.text_encoder.resize_token_embeddings(len(pipe.tokenizer), mean_resizing=False)
    torch.manual_seed(1)
    with torch.no_grad():  # distinct, non-trivial concept vectors
        weight = pipe.text_encoder.get_input_embeddings().weight
        for token in concepts.values():
            weight[pipe.tokenizer.convert_tokens_to_ids(token)] = torch.randn(weight.shape[1])
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                     target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    model = root / "model"
    save_concepts(model, pipe.unet, pipe.text_encoder, pipe.tokenizer, concepts,
                  {"base_model": str(base), "object_word": "fabric", "resolution": 64,
                   "lora": {"rank": 4}, "training": {"max_train_steps": 0}})
    return base, model


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> tuple[Path, Path]:
    return build_tiny_model_dir(tmp_path_factory.mktemp("defectfill-tiny"))


@pytest.fixture(scope="module")
def model(tiny_dirs) -> DefectFill:
    torch.set_num_threads(1)
    return DefectFill.from_pretrained(tiny_dirs[1], selection_metric="ms-ssim-distance")


def _fabric(h: int = 64, w: int = 64, seed: int = 0, gray: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    base = 120 + 40 * np.sin(xx * 2 * np.pi / 4) * np.sin(yy * 2 * np.pi / 6)
    img = np.stack([base + rng.normal(0, 6, (h, w)) + (0 if gray else 20 * c) for c in range(3)], axis=2)
    if gray:
        img = np.repeat(img[..., :1], 3, axis=2)
    return img.clip(0, 255).astype(np.uint8)


def _mask(h: int = 64, w: int = 64, box=(20, 40, 24, 44)) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[box[0] : box[1], box[2] : box[3]] = True
    return m


def _run(model, image, mask, **kw):
    kw.setdefault("defect_type", "stain")
    kw.setdefault("num_candidates", 3)
    kw.setdefault("num_inference_steps", STEPS)
    kw.setdefault("seed", 0)
    return model.generate(image, mask, **kw)


def test_result_has_k_candidates_exact_outside_the_mask_and_consistent_labels(model):
    image, mask = _fabric(), _mask()
    result = _run(model, image, mask, num_candidates=3)
    assert isinstance(model, DefectGenerator)
    assert len(result.candidates) == len(result.scores) == len(result.changed_masks) == len(result.boxes) == 3
    assert result.selection_metric == "ms-ssim-distance" and result.defect_type == "stain"
    assert np.array_equal(result.request_mask, mask)
    for cand, changed, boxes in zip(result.candidates, result.changed_masks, result.boxes):
        assert cand.shape == image.shape and cand.dtype == np.uint8
        assert np.array_equal(cand[~mask], image[~mask])  # bit-identical outside the mask
        assert not np.array_equal(cand[mask], image[mask])  # something was painted inside
        assert not (changed & ~mask).any()
        assert np.array_equal(boxes, mask_to_boxes(changed))
    assert result.selected == [int(np.argmax(result.scores))]
    assert result.meta["prompt"] == "A fabric with <stain>"


def test_seed_is_deterministic_and_different_seeds_differ(model):
    image, mask = _fabric(), _mask()
    a, b, c = (_run(model, image, mask, seed=s) for s in (5, 5, 6))
    assert all(np.array_equal(x, y) for x, y in zip(a.candidates, b.candidates))
    assert not np.array_equal(a.candidates[0], c.candidates[0])
    gen = torch.Generator().manual_seed(5)
    d = _run(model, image, mask, seed=None, generator=gen)
    assert all(np.array_equal(x, y) for x, y in zip(a.candidates, d.candidates))


def test_candidates_come_from_one_batched_call_and_text_is_encoded_once(model):
    model.clear_prompt_cache()
    unet_batches, text_calls = [], []
    h1 = model.pipeline.unet.register_forward_pre_hook(lambda m, args: unet_batches.append(args[0].shape[0]))
    h2 = model.pipeline.text_encoder.register_forward_pre_hook(lambda m, args: text_calls.append(1))
    try:
        _run(model, _fabric(), _mask(), num_candidates=4, guidance_scale=7.5)
        _run(model, _fabric(seed=1), _mask(), num_candidates=4, guidance_scale=7.5)
    finally:
        h1.remove()
        h2.remove()
    assert unet_batches == [8] * (2 * STEPS)  # 4 candidates x (cond + uncond), one call per step
    assert len(text_calls) == 2  # prompt + negative prompt, once, then cached


def test_inputs_as_pil_numpy_torch_and_path_give_the_same_result(model, tmp_path):
    image, mask = _fabric(), _mask()
    Image.fromarray(image).save(tmp_path / "good.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    ref = _run(model, image, mask)
    variants = [
        (Image.fromarray(image), Image.fromarray(mask.astype(np.uint8) * 255)),
        (torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(mask)),
        (tmp_path / "good.png", str(tmp_path / "mask.png")),
        (image.astype(np.float32) / 255.0, mask.astype(np.uint8) * 255),
    ]
    for img, msk in variants:
        got = _run(model, img, msk)
        assert all(np.array_equal(x, y) for x, y in zip(ref.candidates, got.candidates))


def test_grey_input_gives_grey_output_and_rgba_is_converted(model):
    gray = _fabric(gray=True)
    result = _run(model, Image.fromarray(gray[..., 0], mode="L"), _mask())
    for cand in result.candidates:
        assert np.array_equal(cand[..., 0], cand[..., 1]) and np.array_equal(cand[..., 1], cand[..., 2])
    assert result.meta["is_gray"]
    rgba = np.concatenate([_fabric(), np.full((64, 64, 1), 255, np.uint8)], axis=2)
    result = _run(model, rgba, _mask())
    assert result.candidates[0].shape == (64, 64, 3)
    assert np.array_equal(result.candidates[0][~_mask()], _fabric()[~_mask()])


def test_small_mask_on_a_long_strip_is_generated_in_a_window(model):
    strip = _fabric(64, 1024, seed=3)
    mask = _mask(64, 1024, box=(30, 40, 900, 910))
    result = _run(model, strip, mask, num_candidates=2)
    assert result.meta["window"]["box"][2] - result.meta["window"]["box"][0] == 64
    assert result.meta["window"]["gen_size"] == [64, 64]
    for cand in result.candidates:
        assert cand.shape == strip.shape and np.array_equal(cand[~mask], strip[~mask])


def test_far_apart_defects_on_a_strip_are_generated_in_their_own_windows(model):
    strip = _fabric(64, 1024, seed=3)
    mask = _mask(64, 1024, box=(30, 40, 20, 30)) | _mask(64, 1024, box=(10, 22, 980, 1000))
    result = _run(model, strip, mask, num_candidates=2)
    assert len(result.meta["windows"]) == 2 and result.meta["window"] == result.meta["windows"][0]
    assert all(w["gen_size"] == [64, 64] for w in result.meta["windows"])  # not shrunk to fit both
    left, right = mask.copy(), mask.copy()
    left[:, 512:], right[:, :512] = False, False
    for cand, changed in zip(result.candidates, result.changed_masks):
        assert np.array_equal(cand[~mask], strip[~mask])
        assert (changed & left).any() and (changed & right).any()


def test_large_mask_and_mask_touching_the_border_work(model):
    image = _fabric(160, 96, seed=4)
    big = _mask(160, 96, box=(0, 150, 0, 96))  # larger than the 64-px resolution, touches 3 borders
    result = _run(model, image, big, num_candidates=2)
    assert result.meta["window"]["gen_size"][0] == 64
    assert np.array_equal(result.candidates[0][~big], image[~big])
    corner = _mask(64, 64, box=(0, 6, 58, 64))
    result = _run(model, _fabric(), corner)
    assert np.array_equal(result.candidates[1][~corner], _fabric()[~corner])


def test_generate_batch_matches_single_calls(model):
    images = [_fabric(seed=s) for s in range(2)]
    masks = [_mask(), _mask(box=(5, 15, 5, 25))]
    batch = model.generate_batch(images, masks, "hole", seed=10, num_candidates=2, num_inference_steps=STEPS)
    for i, res in enumerate(batch):
        single = _run(model, images[i], masks[i], defect_type="hole", num_candidates=2, seed=10 + i)
        assert np.array_equal(res.image, single.image) and res.meta["seed"] == 10 + i
    with pytest.raises(GenerationError, match="2 images but 1 masks"):
        model.generate_batch(images, masks[:1], "hole")


@pytest.mark.parametrize(
    "change, match",
    [
        ({"mask": np.zeros((32, 32), bool)}, "32x32 .* image is 64x64"),
        ({"mask": np.zeros((64, 64), bool)}, "mask is empty"),
        ({"defect_type": "scratch"}, r"known defect types: \['hole', 'stain'\]"),
        ({"num_candidates": 0}, "num_candidates must be an integer >= 1"),
        ({"num_candidates": 2.5}, "num_candidates must be an integer >= 1"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"strength": 0.0}, "strength"),
        ({"selection_metric": "psnr"}, "selection_metric 'psnr' is unknown"),
        ({"image": np.zeros((64, 64, 5), np.uint8)}, "expected an \\(H, W, 3\\) RGB image"),
    ],
)
def test_bad_requests_raise_generation_errors_naming_the_argument(model, change, match):
    kw = {"image": _fabric(), "mask": _mask(), "defect_type": "stain", "num_candidates": 2, "num_inference_steps": STEPS}
    kw.update(change)
    image, mask = kw.pop("image"), kw.pop("mask")
    with pytest.raises(GenerationError, match=match):
        model.generate(image, mask, **kw)


def test_lpips_selection_without_weights_is_refused_not_swapped(model, tmp_path, monkeypatch):
    from defectfill.selection import _lpips_model

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-weights"))
    _lpips_model.cache_clear()
    with pytest.raises(ModelError, match="ms-ssim-distance"):
        _run(model, _fabric(), _mask(), selection_metric="lpips")
    _lpips_model.cache_clear()


def test_save_pretrained_round_trip_is_atomic_and_identical(model, tmp_path):
    out = model.save_pretrained(tmp_path / "saved")
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in model.model_dir.iterdir())
    assert [p.name for p in tmp_path.iterdir()] == ["saved"]  # no staging folder left behind
    again = DefectFill.from_pretrained(out, selection_metric="ms-ssim-distance")
    a, b = _run(model, _fabric(), _mask()), _run(again, _fabric(), _mask())
    assert all(np.array_equal(x, y) for x, y in zip(a.candidates, b.candidates))
    model.save_pretrained(out)  # overwrite an existing folder
    assert (out / "defectfill.json").is_file() and [p.name for p in tmp_path.iterdir()] == ["saved"]


def test_in_memory_model_saves_through_weights_and_loads(tiny_dirs, tmp_path):
    """A DefectFill built around a pipeline with a fresh LoRA adapter ("default") saves via save_concepts."""
    from peft import LoraConfig

    from defectfill.models.components import build_inpaint_pipeline, get_dummy_components

    pipe = build_inpaint_pipeline(get_dummy_components(seed=2))
    pipe.tokenizer.add_tokens(["<knot>"])
    pipe.text_encoder.resize_token_embeddings(len(pipe.tokenizer), mean_resizing=False)
    pipe.unet.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_v"]))
    fresh = DefectFill(pipe, {"knot": "<knot>"}, base_model=str(tiny_dirs[0]), selection_metric="ms-ssim-distance")
    out = fresh.save_pretrained(tmp_path / "knot-model")
    loaded = DefectFill.from_pretrained(out, selection_metric="ms-ssim-distance")
    assert loaded.defect_types == ["knot"] and loaded.resolution == 64


def test_from_pretrained_refuses_incomplete_folders_and_pickles(tiny_dirs, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dirs[1], broken)
    (broken / "learned_embeds.safetensors").unlink()
    with pytest.raises(ModelError, match="missing learned_embeds.safetensors"):
        DefectFill.from_pretrained(broken)
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_dirs[1], pickled)
    torch.save({"w": torch.zeros(1)}, pickled / "pytorch_lora_weights.bin")
    with pytest.raises(ModelError, match="pickled weight file"):
        DefectFill.from_pretrained(pickled)
    with pytest.raises(ModelError, match="no such folder"):
        DefectFill.from_pretrained(tmp_path / "nowhere" / "x" / "y")


def test_missing_base_model_is_a_clear_model_error(tiny_dirs, tmp_path):
    with pytest.raises(ModelError, match="could not be loaded as a diffusers inpainting pipeline"):
        DefectFill.from_pretrained(tiny_dirs[1], base_model=tmp_path / "no-base")


def test_defaults_work_offline_and_a_relative_base_resolves_from_any_folder(tmp_path, monkeypatch):
    """What a new user hit: the default selection metric needed AlexNet weights (not cached offline),
    a base recorded as a relative path failed from another folder, grey in gave RGB out."""
    project = tmp_path / "project"
    _, model_dir = build_tiny_model_dir(project / "runs" / "stain")
    (project / "runs" / "stain" / "base").rename(project / "base")
    info = json.loads((model_dir / "defectfill.json").read_text())
    (model_dir / "defectfill.json").write_text(json.dumps({**info, "base_model": "base"}))  # relative to project
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    model = DefectFill.from_pretrained(model_dir)  # every default
    assert Path(model.base_model) == (project / "base").resolve()
    assert model.selection_metric == "ms-ssim-distance"  # "auto" without LPIPS weights in the cache
    grey = _fabric(seed=3, gray=True)[..., 0]
    mask = np.zeros(grey.shape, bool)
    mask[20:40, 20:40] = True
    result = model.generate(grey, mask, defect_type="stain", num_candidates=2, num_inference_steps=2, seed=0)
    assert result.selection_metric == "ms-ssim-distance"
    assert result.gray and result.image.shape == grey.shape and result.image.dtype == np.uint8
    assert np.array_equal(result.image[~mask], grey[~mask])
