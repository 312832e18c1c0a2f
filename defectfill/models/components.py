"""Diffusers components of an SD-2-style inpainting pipeline, built offline.

- `build_clip_tokenizer(dir)`: the real OpenAI CLIP BPE tokenizer (49,408 tokens) written from the
  vocabulary file that `open-clip-torch` ships, so no hub download is needed. Padded with "!" and
  `model_max_length=77` as SD-2 does.
- `get_dummy_components(...)`: tiny random UNet (9 input channels), VAE (scale factor 8), CLIP text
  encoder and DDIM scheduler, the way diffusers' tests build theirs; used by tests and as the
  starting point of the offline base model.

UNet input order is diffusers': cat([noisy_latent(4), mask(1), masked_image_latent(4)]).
"""

from __future__ import annotations

import functools
import gzip
import json
import tempfile
from pathlib import Path

import torch

SD2_INPAINT_ID = "sd2-community/stable-diffusion-2-inpainting"
CLIP_VOCAB_SIZE = 49408
_NUM_MERGES = 49152 - 256 - 2


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable unicode map (the standard table)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def write_clip_tokenizer_files(out_dir: str | Path) -> Path:
    """Write vocab.json + merges.txt (+ tokenizer config) of the CLIP BPE from open_clip's vocab file."""
    import open_clip

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bpe_path = Path(open_clip.__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
    with gzip.open(bpe_path) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = lines[1 : _NUM_MERGES + 1]
    vocab = list(_bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == CLIP_VOCAB_SIZE, len(vocab)
    (out_dir / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps({"model_max_length": 77, "pad_token": "!", "bos_token": "<|startoftext|>",
                    "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "do_lower_case": True,
                    "tokenizer_class": "CLIPTokenizer"})
    )
    return out_dir


@functools.lru_cache(maxsize=1)
def _tokenizer_dir() -> Path:
    return write_clip_tokenizer_files(Path(tempfile.mkdtemp(prefix="defectfill-clip-tok-")))


def build_clip_tokenizer(out_dir: str | Path | None = None):
    """The real CLIP tokenizer, offline. `out_dir` keeps its files (else a per-process temp dir)."""
    from transformers import CLIPTokenizer

    src = write_clip_tokenizer_files(out_dir) if out_dir is not None else _tokenizer_dir()
    return CLIPTokenizer.from_pretrained(str(src), pad_token="!", model_max_length=77)


def sd_ddim_scheduler(prediction_type: str = "epsilon", zero_terminal_snr: bool = False):
    """DDIM with Stable Diffusion's beta schedule (scaled_linear 0.00085 -> 0.012, 1000 steps).

    zero_terminal_snr: rescale the betas so the last step is pure noise and sample with "trailing"
    timesteps (starting at t = 999), as Lin et al. prescribe; pair it with v_prediction.
    """
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        clip_sample=False, set_alpha_to_one=False, steps_offset=1,  # "trailing" ignores the offset
        prediction_type=prediction_type, rescale_betas_zero_snr=zero_terminal_snr,
        timestep_spacing="trailing" if zero_terminal_snr else "leading",
    )


def get_dummy_components(seed: int = 0, sample_size: int = 8, text_hidden: int = 32) -> dict:
    """Tiny random components of a 9-channel inpainting pipeline (about 3.6 M parameters).

    sample_size: latent side (image side = 8 x sample_size).
    Returns a dict accepted by `StableDiffusionInpaintPipeline(**components)`.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=sample_size, in_channels=9, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=text_hidden,
        attention_head_dim=(2, 4), use_linear_projection=True,
    )
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=sample_size * 8,
        block_out_channels=(32, 32, 64, 64), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        norm_num_groups=8,
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=49406, eos_token_id=49407, pad_token_id=0, hidden_size=text_hidden,
            intermediate_size=2 * text_hidden, num_attention_heads=4, num_hidden_layers=2,
            vocab_size=CLIP_VOCAB_SIZE, projection_dim=text_hidden, hidden_act="gelu",
            max_position_embeddings=77,
        )
    )
    return {
        "unet": unet.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": build_clip_tokenizer(),
        "scheduler": sd_ddim_scheduler(),
        "safety_checker": None,
        "feature_extractor": None,
        "image_encoder": None,
    }


# SD-2-inpainting's shapes (stabilityai/stable-diffusion-2-inpainting's configs; random weights, no download):
# the UNet (9 input channels), the OpenCLIP ViT-H text tower, SD's VAE (factor 8)
SD2_INPAINT_UNET = {
    "sample_size": 64, "in_channels": 9, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280), "attention_head_dim": (5, 10, 20, 20), "cross_attention_dim": 1024,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "use_linear_projection": True,
}
SD2_TEXT_ENCODER = {
    "vocab_size": CLIP_VOCAB_SIZE, "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 23,
    "num_attention_heads": 16, "max_position_embeddings": 77, "hidden_act": "gelu", "projection_dim": 512,
    "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 0,
}
SD_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2, "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
    "sample_size": 768,
}


def build_sd2_shaped_components(tiny: bool = False, seed: int = 0) -> dict:
    """Random-weight components of SD-2-inpainting's shapes (`tiny`: the same block layout with
    small widths, for a CPU test of the same code); a dict for `StableDiffusionInpaintPipeline(**c)`.
    Built on the current default device (`with torch.device("cuda"): ...` builds on the GPU)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet, text, vae = dict(SD2_INPAINT_UNET), dict(SD2_TEXT_ENCODER), dict(SD_VAE)
    if tiny:
        unet.update(sample_size=8, layers_per_block=1, block_out_channels=(32, 32, 64, 64), attention_head_dim=(2, 2, 4, 4),
                    cross_attention_dim=32, norm_num_groups=8)
        text.update(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, projection_dim=32)
        vae.update(block_out_channels=(16, 16, 32, 32), layers_per_block=1, sample_size=64, norm_num_groups=8)
    torch.manual_seed(seed)
    return {
        "unet": UNet2DConditionModel(**unet).eval(),
        "vae": AutoencoderKL(**vae).eval(),
        "text_encoder": CLIPTextModel(CLIPTextConfig(**text)).eval(),
        "tokenizer": build_clip_tokenizer(),
        "scheduler": sd_ddim_scheduler(),
        "safety_checker": None,
        "feature_extractor": None,
        "image_encoder": None,
    }


def build_inpaint_pipeline(components: dict):
    """A StableDiffusionInpaintPipeline from components, safety checker off (fabric, not people)."""
    from diffusers import StableDiffusionInpaintPipeline

    kwargs = {k: v for k, v in components.items() if k != "image_encoder"}
    kwargs.setdefault("safety_checker", None)
    kwargs.setdefault("feature_extractor", None)
    return StableDiffusionInpaintPipeline(**kwargs, requires_safety_checker=False)
