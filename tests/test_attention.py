"""Decoder cross-attention capture: installed on up_blocks.*attn2 only, maps with grad, restored."""

from __future__ import annotations

import pytest
import torch
from helpers_defectfill_training import single_torch_thread, tiny_step_setup  # noqa: F401

from defectfill.errors import ModelError
from defectfill.losses import LossWeights
from defectfill.models.attention import (
    CrossAttentionCaptureProcessor,
    aggregate_attention_maps,
    capture_cross_attention,
    installed_capture_layers,
    is_decoder_cross_attention,
)
from defectfill.training.step import defectfill_step

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def setup():
    return tiny_step_setup(train_text_encoder=True)


def _step(setup, weights, seed=0, backward=None):
    models, tokens, _, _, batch = setup
    return defectfill_step(models.unet, models.vae, models.text_encoder, models.noise_scheduler, batch, tokens.ids,
                           weights=weights, object_alpha=0.3, generator=torch.Generator().manual_seed(seed),
                           backward=backward)


def test_processor_installed_on_decoder_cross_attention_only_and_restored(setup):
    unet = setup[0].unet
    before = dict(unet.attn_processors)
    expected = sorted(n for n in before if n.startswith("up_blocks.") and n.endswith("attn2.processor"))
    assert expected, "the tiny UNet must have decoder cross-attention layers"
    with capture_cross_attention(unet, torch.tensor([0]), torch.tensor([4])):
        assert sorted(installed_capture_layers(unet)) == expected
        during = unet.attn_processors
        for name, proc in during.items():
            if name in expected:
                assert isinstance(proc, CrossAttentionCaptureProcessor)
            else:
                assert proc is before[name]
    after = unet.attn_processors
    assert all(after[n] is before[n] for n in before)
    assert installed_capture_layers(unet) == []


def test_object_pass_captures_non_empty_maps_on_every_decoder_layer(setup):
    unet = setup[0].unet
    expected = sorted(n for n in unet.attn_processors if is_decoder_cross_attention(n))
    out = _step(setup, LossWeights(0.5, 0.2, 0.05))
    assert out.captured_layers == expected
    assert out.attention is not None and float(out.attention.detach()) > 0
    batch_size = setup[4]["pixel_values"].shape[0]
    assert out.attention_map.shape == (batch_size, 8, 8)
    # probabilities of one token: in [0, 1], not all zero
    attention_map = out.attention_map.detach()
    assert float(attention_map.min()) >= 0 and float(attention_map.max()) <= 1
    assert float(attention_map.sum()) > 0
    assert installed_capture_layers(unet) == []  # restored after the step
    # without the attention term nothing is installed and no map is captured
    plain = _step(setup, LossWeights(0.5, 0.2, 0.0))
    assert plain.attention is None and plain.captured_layers == []


def test_attention_loss_has_gradient_on_token_row_and_lora(setup):
    models, tokens, _, _, _ = setup
    unet, text_encoder = models.unet, models.text_encoder
    for p in list(unet.parameters()) + list(text_encoder.parameters()):
        p.grad = None
    out = _step(setup, LossWeights(0.0, 0.0, 1.0), backward=lambda loss: loss.backward())
    assert out.attention.requires_grad
    emb_grad = text_encoder.get_input_embeddings().weight.grad
    assert emb_grad is not None
    batch = setup[4]
    in_batch = {tokens.ids[int(i)] for i in batch["type_index"]}
    for token_id in tokens.ids:  # the rows of the concepts in the batch get a gradient, the others none
        assert (float(emb_grad[token_id].abs().sum()) > 0) == (token_id in in_batch)
    decoder_lora_b = {n: p.grad for n, p in unet.named_parameters()
                      if "up_blocks" in n and "attn2" in n and "lora_B" in n and ("to_q" in n or "to_k" in n)}
    assert decoder_lora_b and all(g is not None and float(g.abs().sum()) > 0 for g in decoder_lora_b.values())
    for p in list(unet.parameters()) + list(text_encoder.parameters()):
        p.grad = None


def test_capture_keeps_gradient_under_gradient_checkpointing():
    setup = tiny_step_setup(train_text_encoder=False)
    models, tokens = setup[0], setup[1]
    models.unet.enable_gradient_checkpointing()
    out = _step(setup, LossWeights(0.0, 0.0, 1.0), backward=lambda loss: loss.backward())
    grad = models.text_encoder.get_input_embeddings().weight.grad
    token_id = tokens.ids[int(setup[4]["type_index"][0])]
    assert out.captured_layers and grad is not None and float(grad[token_id].abs().sum()) > 0
    assert installed_capture_layers(models.unet) == []


def test_aggregate_without_capture_raises():
    from defectfill.models.attention import AttentionStore

    with pytest.raises(ModelError, match="no cross-attention map was captured"):
        aggregate_attention_maps(AttentionStore(torch.tensor([0]), torch.tensor([1])), (8, 8))


def test_unet_input_is_latent_mask_masked_latent_in_diffusers_order():
    """conv_in sees cat([x_t, mask, masked-image latent]): mask at channel 4, masked latent at 5:9."""
    import torch.nn.functional as F

    setup = tiny_step_setup(train_text_encoder=False)
    models, _, _, _, batch = setup
    vae = models.vae
    with torch.no_grad():  # make the VAE posterior deterministic: log-variance -> -30 (std 3e-7)
        vae.quant_conv.weight[4:] = 0
        vae.quant_conv.bias[4:] = -30.0
    seen = {}
    handle = models.unet.conv_in.register_forward_pre_hook(lambda module, args: seen.setdefault("x", args[0].detach()))
    try:
        _step(setup, LossWeights(0.5, 0.2, 0.05))
    finally:
        handle.remove()
    x = seen["x"]
    b = batch["pixel_values"].shape[0]
    assert x.shape == (2 * b, 9, 8, 8)
    assert torch.equal(x[:b, :4], x[b:, :4])  # both passes share x_t
    assert torch.equal(x[:b, 4:5], F.interpolate(batch["defect_mask"], size=(8, 8)))
    assert torch.equal(x[b:, 4:5], F.interpolate(batch["box_mask"], size=(8, 8)))
    sf = vae.config.scaling_factor
    with torch.no_grad():
        pixels = batch["pixel_values"]
        masked_defect = vae.encode(pixels * (batch["defect_mask"] < 0.5)).latent_dist.mean * sf
        masked_boxes = vae.encode(pixels * (batch["box_mask"] < 0.5)).latent_dist.mean * sf
    assert torch.allclose(x[:b, 5:9], masked_defect, atol=1e-4)
    assert torch.allclose(x[b:, 5:9], masked_boxes, atol=1e-4)
