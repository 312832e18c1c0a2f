"""Capture of the `[V*]` token's cross-attention maps in the UNet decoder, with gradient.

DefectFill's attention loss (arXiv 2503.13985) pulls the cross-attention map of the concept token
in the UNet decoder towards the defect mask. diffusers' default `AttnProcessor2_0` runs fused SDPA
and never materialises the probabilities, so `CrossAttentionCaptureProcessor` computes them
explicitly (as diffusers' `AttnProcessor` does) and keeps, for the rows of the batch it is told to
record, the column of the concept token, WITHOUT detaching it (the loss must reach the token
embedding and the LoRA weights).

`capture_cross_attention(unet, ...)` installs the processor on the decoder cross-attention layers
only (`up_blocks.*.attn2`), through `unet.set_attn_processor` with a full dict of processors, and
puts the original processors back on exit. No diffusers code is edited or patched. Keep the
context open across the backward pass when gradient checkpointing is on: the recomputation in
backward must run the same processors as the forward.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from defectfill.errors import ModelError


def is_decoder_cross_attention(name: str) -> bool:
    """`up_blocks.1.attentions.0.transformer_blocks.0.attn2.processor` -> True."""
    return name.startswith("up_blocks.") and name.endswith("attn2.processor")


@dataclass
class AttentionStore:
    """What one capture holds.

    rows: (R,) batch rows whose maps are kept (e.g. the object-loss half of a batch).
    token_index: (R,) position of the concept token in each kept row's prompt.
    maps: layer name -> (R, heads, Q) probabilities of the concept token (with grad), Q = h * w.
    recording: maps are stored only while True (False during backward recomputation).
    """

    rows: torch.Tensor
    token_index: torch.Tensor
    maps: dict[str, torch.Tensor] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    recording: bool = True

    def clear(self) -> None:
        self.maps.clear()
        self.calls.clear()


class CrossAttentionCaptureProcessor:
    """diffusers' `AttnProcessor` computation plus storage of the concept token's probabilities."""

    def __init__(self, name: str, store: AttentionStore):
        self.name = name
        self.store = store

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)

        query = attn.head_to_batch_dim(query)
        key = attn.head_to_batch_dim(key)
        value = attn.head_to_batch_dim(value)

        attention_probs = attn.get_attention_scores(query, key, attention_mask)  # (B*heads, Q, L)
        self._record(attention_probs, attn.heads)
        hidden_states = torch.bmm(attention_probs, value)
        hidden_states = attn.batch_to_head_dim(hidden_states)

        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

    def _record(self, attention_probs: torch.Tensor, heads: int) -> None:
        store = self.store
        store.calls[self.name] = store.calls.get(self.name, 0) + 1
        # The selection runs even when not recording: gradient checkpointing re-runs this forward in
        # backward and requires the same autograd ops as the first run.
        probs = attention_probs.view(-1, heads, *attention_probs.shape[1:])  # (B, heads, Q, L)
        # one indexing op: token_probs[r, h, q] = probs[rows[r], h, q, token_index[r]] -> (R, heads, Q)
        token_probs = probs[store.rows.to(probs.device), :, :, store.token_index.to(probs.device)]
        if store.recording:
            store.maps[self.name] = token_probs  # no detach: L_attn needs the gradient


@contextmanager
def capture_cross_attention(
    unet, rows: torch.Tensor, token_index: torch.Tensor
) -> Iterator[AttentionStore]:
    """Install capturing processors on `up_blocks.*attn2` for the duration of the block.

    rows: (R,) batch rows to record; token_index: (R,) concept-token position in those rows' prompts.
    Raises ModelError when the UNet has no decoder cross-attention layer.
    """
    base = unet.module if hasattr(unet, "module") else unet  # DDP-wrapped
    original = dict(base.attn_processors)
    targets = [name for name in original if is_decoder_cross_attention(name)]
    if not targets:
        raise ModelError(
            f"UNet {type(base).__name__} has no decoder cross-attention layer (up_blocks.*.attn2); "
            f"the attention loss needs a UNet with cross-attention up blocks (CrossAttnUpBlock2D)"
        )
    store = AttentionStore(rows=rows.long(), token_index=token_index.long())
    processors = dict(original)
    for name in targets:
        processors[name] = CrossAttentionCaptureProcessor(name, store)
    base.set_attn_processor(processors)  # set_attn_processor pops from the dict: never reuse it
    try:
        yield store
    finally:
        base.set_attn_processor(dict(original))


def installed_capture_layers(unet) -> list[str]:
    """Names of the layers whose processor is currently a capturing one (for tests and logs)."""
    base = unet.module if hasattr(unet, "module") else unet
    return [n for n, p in base.attn_processors.items() if isinstance(p, CrossAttentionCaptureProcessor)]


def aggregate_attention_maps(store: AttentionStore, size: tuple[int, int]) -> torch.Tensor:
    """Stored maps -> (R, H, W): each layer's map averaged over heads, resized (bilinear) to `size`
    = (H, W), then averaged over layers. Keeps the graph (no detach).

    Raises ModelError when nothing was captured (the processor was not called during the pass).
    """
    if not store.maps:
        raise ModelError(
            "no cross-attention map was captured: the capturing processor was not called during the "
            "forward pass (was the UNet forward run inside capture_cross_attention?)"
        )
    height, width = size
    resized = []
    for name, probs in store.maps.items():
        q = probs.shape[-1]
        factor = math.sqrt(height * width / q)
        h, w = round(height / factor), round(width / factor)
        if h * w != q:
            raise ModelError(f"{name}: cannot map {q} attention queries onto the latent grid {height}x{width}")
        layer_map = probs.float().mean(dim=1).view(-1, 1, h, w)
        if (h, w) != (height, width):
            layer_map = F.interpolate(layer_map, size=(height, width), mode="bilinear", align_corners=False)
        resized.append(layer_map[:, 0])
    return torch.stack(resized, dim=0).mean(dim=0)
