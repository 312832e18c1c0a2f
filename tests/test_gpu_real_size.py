"""benchmarks/gpu_real_size.py, the real-size GPU measurement, runs here at a tiny size on the CPU
with the same code (training step with LoRA + checkpointing, generation with and without early
selection); the real size is SD-2-inpainting's shape (checked on the meta device, no memory)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from helpers_defectfill_training import single_torch_thread  # noqa: F401 (fixture)

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_real_size.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_real_size", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_real_size_is_sd2_inpainting_shaped():
    from defectfill.models.components import build_sd2_shaped_components

    with torch.device("meta"):
        real = build_sd2_shaped_components()
    assert sum(p.numel() for p in real["unet"].parameters()) == 865_925_124  # SD-2-inpainting's UNet
    assert real["unet"].config.in_channels == 9 and real["text_encoder"].config.hidden_size == 1024
    assert len(real["vae"].config.block_out_channels) == 4  # VAE factor 8: 512 px -> 64x64 latents


@pytest.mark.usefixtures("single_torch_thread")
def test_the_same_code_runs_tiny_on_the_cpu():
    result = load_script().run(tiny=True, device="cpu", warmup=0, steps=1, repeats=1, early_selection=0.5)
    training, generation = result["training"], result["generation"]
    assert result["device"] == "cpu" and result["tiny"]
    assert training["losses_finite"] and training["gradient_checkpointing"] and training["attention_loss"]
    assert training["batch_size"] == 2 and training["trainable_parameters"] > 0
    assert math.isfinite(training["seconds_per_step_median"]) and training["seconds_per_step_median"] > 0
    assert training["peak_memory_gib"] is None  # CUDA only
    for arm in ("lfs", "early_selection"):
        assert generation[arm]["seconds_per_step_median"] > 0 and generation[arm]["calls_timed"] == 1
    assert generation["early_selection"]["early_selection"] == 0.5
