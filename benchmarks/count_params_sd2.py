"""Parameter counts of the real-size DefectFill config (configs/defectfill_sd2.yaml), no download.

Builds SD-2-inpainting-shaped models with random weights on the meta device (no memory, no
weights): the UNet of stabilityai/stable-diffusion-2-inpainting's config (9 input channels,
block_out (320, 640, 1280, 1280), attention_head_dim (5, 10, 20, 20), cross_attention_dim 1024),
the OpenCLIP ViT-H text tower (hidden 1024, 23 layers, 16 heads, intermediate 4096) and SD's VAE;
then applies exactly the training set-up (`make_trainable`: concept tokens + LoRA from the config)
and counts total and trainable parameters.

    .venv/bin/python benchmarks/count_params_sd2.py --num_defect_types 1
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

REPO = Path(__file__).resolve().parents[1]

def count(module, trainable: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if (p.requires_grad or not trainable))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "defectfill_sd2.yaml"))
    parser.add_argument("--num_defect_types", type=int, default=1)
    args = parser.parse_args()

    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from defectfill.models.components import SD2_INPAINT_UNET, SD2_TEXT_ENCODER, SD_VAE, build_clip_tokenizer
    from defectfill.training import load_train_config
    from defectfill.training.model import DefectFillModels, make_trainable

    cfg = load_train_config(args.config)
    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD2_INPAINT_UNET)
        text_encoder = CLIPTextModel(CLIPTextConfig(**SD2_TEXT_ENCODER))
        vae = AutoencoderKL(**SD_VAE)
    base = {"unet": count(unet), "text_encoder": count(text_encoder), "vae": count(vae)}
    models = DefectFillModels(unet, vae, text_encoder, build_clip_tokenizer(), DDPMScheduler())
    concepts = {f"type{i}": f"<type{i}>" for i in range(args.num_defect_types)}
    with torch.device("meta"):
        tokens, _ = make_trainable(models, concepts, {t: "defect" for t in concepts}, rank=cfg.rank,
                                   lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                   unet_targets=cfg.unet_lora_targets, train_text_encoder=cfg.train_text_encoder,
                                   text_encoder_targets=cfg.text_encoder_lora_targets)
    embedding = text_encoder.get_input_embeddings().weight
    unet_lora = sum(p.numel() for n, p in unet.named_parameters() if "lora_" in n)
    text_lora = sum(p.numel() for n, p in text_encoder.named_parameters() if "lora_" in n)
    rows = len(tokens.ids) * embedding.shape[1]
    total = count(unet) + count(text_encoder) + count(vae)
    result = {
        "config": args.config, "num_defect_types": args.num_defect_types,
        "base_parameters": {**base, "total": sum(base.values())},
        "after_setup_total_parameters": total,
        "trainable": {
            "unet_lora": unet_lora, "text_encoder_lora": text_lora, "concept_rows": rows,
            "effective_total": unet_lora + text_lora + rows,
            "effective_percent_of_total": round(100 * (unet_lora + text_lora + rows) / total, 3),
        },
        "requires_grad_total": count(unet, True) + count(text_encoder, True),
        "note": "requires_grad_total includes the whole token-embedding matrix "
                f"({embedding.numel():,} values): it is optimised so that the concept rows get gradients, "
                "and every other row is restored after each step (its AdamW state still costs memory)",
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
