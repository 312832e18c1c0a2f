"""Weight format: diffusers-loadable LoRA + textual-inversion files + defectfill.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers_defectfill_training import make_base_model, single_torch_thread, tiny_step_setup  # noqa: F401
from PIL import Image

from defectfill.errors import ModelError
from defectfill.models import weights as W

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _trained_like(train_text_encoder: bool):
    """Tiny trainable models whose LoRA and concept rows are moved away from their initial values."""
    models, tokens, _, _, _ = tiny_step_setup(train_text_encoder=train_text_encoder)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in (models.unet, models.text_encoder):
            for name, p in module.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        weight = models.text_encoder.get_input_embeddings().weight
        for token_id in tokens.ids:
            weight[token_id] += torch.randn(weight.shape[1], generator=g) * 0.1
    return models, tokens


def _meta(base):
    return {"base_model": str(base), "object_word": "fabric", "initializer_words": {"stain": "stain"},
            "resolution": 64, "lora": {"rank": 4, "alpha": 8, "unet_targets": ["to_q"], "text_encoder_targets": []},
            "training": {"seed": 0}}


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    return make_base_model(tmp_path_factory.mktemp("base") / "tiny-inpaint")


@pytest.fixture(scope="module")
def saved_unet_only(tmp_path_factory, base_model):
    models, tokens = _trained_like(train_text_encoder=False)
    out = W.save_concepts(tmp_path_factory.mktemp("model") / "m", models.unet, models.text_encoder,
                          models.tokenizer, tokens.tokens, _meta(base_model))
    return out, models, tokens


def _pipe(base):
    from diffusers import StableDiffusionInpaintPipeline

    pipe = StableDiffusionInpaintPipeline.from_pretrained(base, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _generate(pipe, prompt):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = np.zeros((64, 64), np.uint8)
    mask[16:40, 20:44] = 255
    return pipe(prompt=prompt, image=image, mask_image=Image.fromarray(mask), height=64, width=64,
                num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images[0]


def test_folder_layout_and_info(saved_unet_only, base_model):
    out, _, _ = saved_unet_only
    names = sorted(p.name for p in out.iterdir())
    assert names == ["defectfill.json", "learned_embeds-broken_end.safetensors", "learned_embeds-stain.safetensors",
                     "learned_embeds.safetensors", "pytorch_lora_weights.safetensors"]
    info = W.read_model_info(out)
    assert info["format_version"] == 1 and info["concepts"] == {"broken_end": "<broken_end>", "stain": "<stain>"}
    assert info["base_model"] == str(base_model) and info["resolution"] == 64
    embeds = W.load_learned_embeds(out)
    assert set(embeds) == {"<stain>", "<broken_end>"} and embeds["<stain>"].shape == (32,)


def test_plain_diffusers_loading_matches_load_concepts_into_pipeline(saved_unet_only, base_model):
    out, models, _ = saved_unet_only
    ours = _pipe(base_model)
    info = W.load_concepts_into_pipeline(ours, out)
    assert info["concepts"]["stain"] == "<stain>"
    plain = _pipe(base_model)
    plain.load_lora_weights(str(out))
    for defect_type in info["concepts"]:
        plain.load_textual_inversion(str(out), weight_name=f"learned_embeds-{defect_type}.safetensors")
    # LoRA rank and alpha came back from the file header
    assert ours.unet.peft_config and next(iter(ours.unet.peft_config.values())).lora_alpha == 8
    prompt = "A fabric with <stain>"
    a, b = _generate(ours, prompt), _generate(plain, prompt)
    assert np.allclose(a, b, atol=1e-6)
    bare = _generate(_pipe(base_model), "A fabric with stain")
    assert not np.allclose(a, bare, atol=1e-3), "the loaded concepts must change the output"
    # a loaded pipeline (adapter "default_0") saves back to the same weights
    again = W.save_concepts(out.parent / "again", ours.unet, ours.text_encoder, ours.tokenizer, info["concepts"],
                            {k: v for k, v in info.items() if k != "concepts"})
    from safetensors.torch import load_file

    first, second = load_file(str(out / W.LORA_WEIGHTS)), load_file(str(again / W.LORA_WEIGHTS))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    # the embedding rows are the trained ones
    ids = ours.tokenizer([prompt], padding="max_length", max_length=77, return_tensors="pt").input_ids
    trained_ids = models.tokenizer([prompt], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(ours.text_encoder(ids)[0], models.text_encoder.eval()(trained_ids)[0], atol=1e-5)


def test_text_encoder_lora_round_trip(tmp_path, base_model):
    models, tokens = _trained_like(train_text_encoder=True)
    out = W.save_concepts(tmp_path / "m", models.unet, models.text_encoder, models.tokenizer, tokens.tokens,
                          _meta(base_model))
    from safetensors.torch import load_file

    keys = load_file(str(out / W.LORA_WEIGHTS))
    assert any(k.startswith("text_encoder.") for k in keys) and any(k.startswith("unet.") for k in keys)
    pipe = _pipe(base_model)
    W.load_concepts_into_pipeline(pipe, out)
    prompt = ["A photo of <broken_end>"]
    ids = pipe.tokenizer(prompt, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = models.text_encoder.eval()(ids)[0]
        loaded = pipe.text_encoder(ids)[0]
        bare = _pipe(base_model).text_encoder(torch.where(ids >= 49408, 320, ids))[0]
    assert torch.allclose(loaded, expected, atol=1e-5)
    assert not torch.allclose(loaded, bare, atol=1e-3)
    # plain diffusers reads the same text-encoder LoRA and embeddings
    plain = _pipe(base_model)
    plain.load_lora_weights(str(out))
    for defect_type in tokens.tokens:
        plain.load_textual_inversion(str(out), weight_name=f"learned_embeds-{defect_type}.safetensors")
    with torch.no_grad():
        assert torch.allclose(plain.text_encoder(plain.tokenizer(prompt, padding="max_length", max_length=77,
                                                                 return_tensors="pt").input_ids)[0], expected,
                              atol=1e-5)


def test_loading_twice_into_one_pipeline_is_refused(saved_unet_only, base_model):
    pipe = _pipe(base_model)
    W.load_concepts_into_pipeline(pipe, saved_unet_only[0])
    with pytest.raises(ModelError, match="already in the pipeline's tokenizer"):
        W.load_concepts_into_pipeline(pipe, saved_unet_only[0])


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_bad_model_folders_raise_model_error(saved_unet_only, tmp_path):
    src = saved_unet_only[0]
    with pytest.raises(ModelError, match="not a folder"):
        W.read_model_info(tmp_path / "nothing")
    missing = _copy(src, tmp_path / "missing")
    (missing / W.LEARNED_EMBEDS).unlink()
    with pytest.raises(ModelError, match="missing learned_embeds.safetensors"):
        W.read_model_info(missing)
    pickled = _copy(src, tmp_path / "pickled")
    (pickled / "pytorch_lora_weights.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ModelError, match="pickled weight file"):
        W.read_model_info(pickled)
    corrupted = _copy(src, tmp_path / "corrupted")
    data = (corrupted / W.LORA_WEIGHTS).read_bytes()
    (corrupted / W.LORA_WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="corrupted safetensors"):
        W.read_model_info(corrupted)
    version = _copy(src, tmp_path / "version")
    info = json.loads((version / W.INFO_FILE).read_text())
    info["format_version"] = 99
    (version / W.INFO_FILE).write_text(json.dumps(info))
    with pytest.raises(ModelError, match="format_version 99"):
        W.read_model_info(version)
