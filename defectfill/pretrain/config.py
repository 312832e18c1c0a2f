"""The typed config of the offline base model's pretraining (`configs/base_*.yaml`).

One dataclass per concern: the three architectures (`defectfill.models.base_model` builds them),
the data mix, and the two training stages (VAE, then the inpainting UNet over the frozen VAE).
Defaults are the measured recipe of notes/feasibility.md §9b ("H") plus the colour fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from defectfill.errors import ConfigError
from defectfill.models.base_model import TextEncoderArch, UNetArch, VAEArch

if TYPE_CHECKING:
    import numpy as np


@dataclass
class ModelConfig:
    vae: VAEArch = field(default_factory=VAEArch)
    unet: UNetArch = field(default_factory=UNetArch)
    text_encoder: TextEncoderArch = field(default_factory=TextEncoderArch)


@dataclass
class DataConfig:
    """Where the crops come from: simulator fabrics (all textures, seeded) and real good regions."""

    textures: list[str] | None = None  # None: every texture of defectfill.data.fabric.TEXTURES
    images_per_texture: int = 48  # simulator images rendered per texture for the training pool
    image_size: int = 256  # side of each rendered simulator image
    gray_fraction: float = 0.15  # share of simulator images rendered grey (gray=True)
    eval_seed_start: int = 1_000_000  # held-out simulator seeds start here (training seeds: 0..)
    real_dir: str | None = None  # folder with images/ + annotations/ (defect masks); good regions used
    real_fraction: float = 0.25  # share of each batch cut from the real images
    # Real crops are exactly grey; a per-crop random per-channel gain in [1 - t, 1 + t] keeps them from
    # teaching the encoder to drop colour (with grey crops in the mix the VAE outputs grey).
    real_tint: float = 0.0
    real_eval_images: int = 6  # the last N real images (sorted by name) are held out for evaluation
    stain_margin: int = 8  # crops keep this many pixels away from any annotated defect
    # Simulator images with one defect each, per texture and defect type (seeds 0..N-1), for the
    # UNet's "... fabric with a <defect>" windows (`unet.defect_probability`); 0: none. Real defects
    # are never used: the real photographs are the bench's test data.
    defect_images_per_type: int = 0
    defect_types: list[str] | None = None  # None: every simulator defect type


@dataclass
class VAETrainConfig:
    """Stage 1: AutoencoderKL on small crops; loss L1 + L2 + chroma_weight*L1(chroma) + kl_weight*KL."""

    max_train_steps: int = 1000
    train_batch_size: int = 16
    resolution: int = 32  # crop side; the VAE is convolutional, small crops train ~3x faster
    # Crop sides drawn per step (seeded) instead of `resolution`, each batch holding about as many
    # pixels as `train_batch_size` crops of `resolution`. GroupNorm(1) normalises over the whole
    # image, so a VAE trained on 32-px crops only loses PSNR on larger windows (asset README).
    resolutions: list[int] | None = None
    learning_rate: float = 5e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.99
    adam_weight_decay: float = 1e-4
    lr_warmup_steps: int = 50
    lr_final_fraction: float = 0.05  # linear decay to this fraction of the lr at the last step
    max_grad_norm: float = 1.0
    kl_weight: float = 1e-4  # on the posterior mean only (mean over elements); see losses.vae_loss
    chroma_weight: float = 1.0  # extra L1 on x - mean_c(x): keeps colour (grey real crops pull it out)
    checkpointing_steps: int = 200
    scale_samples: int = 512  # crops encoded to measure the latent scaling factor
    # Continue from a trained VAE folder (diffusers layout, same architecture as model.vae) ...
    init_from: str | None = None
    # ... training only its decoder (+ post_quant_conv): the encoder and so the latents stay as they
    # are, and a UNet trained on them stays valid (as SD's ft-MSE VAE was made).
    train_decoder_only: bool = False

    def __post_init__(self):
        if self.train_decoder_only and not self.init_from:
            raise ConfigError("vae.train_decoder_only needs vae.init_from: the trained VAE whose encoder to keep")
        if self.resolutions is not None and (not self.resolutions or min(self.resolutions) < 8):
            raise ConfigError(f"vae.resolutions={self.resolutions}: give crop sides of at least 8 px, or null")

    def crop_plan(self, rng: np.random.Generator) -> tuple[int, int]:
        """(batch size, crop side) of one step: `resolution`, or a side drawn from `resolutions`."""
        if not self.resolutions:
            return self.train_batch_size, self.resolution
        side = int(self.resolutions[int(rng.integers(len(self.resolutions)))])
        return max(1, round(self.train_batch_size * self.resolution**2 / side**2)), side


@dataclass
class UNetTrainConfig:
    """Stage 2: 9-channel inpainting UNet, SD betas, random masks, CFG dropout."""

    max_train_steps: int = 3000
    train_batch_size: int = 16
    resolution: int = 64  # window side (latent side = resolution / vae factor)
    learning_rate: float = 4e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.99
    adam_weight_decay: float = 1e-2
    lr_warmup_steps: int = 100
    lr_final_fraction: float = 0.05
    max_grad_norm: float = 1.0
    empty_prompt_probability: float = 0.1  # classifier-free guidance dropout
    mask_box_probability: float = 0.45
    mask_stroke_probability: float = 0.35
    mask_full_probability: float = 0.1  # the rest: 2-4 boxes
    checkpointing_steps: int = 250
    # Continue from a trained pipeline folder (e.g. assets/base-fabric-inpaint): its UNet and text
    # encoder are the start, and its VAE is the VAE (the UNet's latents are that VAE's; the VAE stage
    # is skipped). Same architecture as `model`.
    init_from: str | None = None
    # Train the text encoder with the UNet (one module, one checkpoint) so that prompts mean
    # something and classifier-free guidance pushes towards what they say; else it stays frozen.
    train_text_encoder: bool = False
    text_encoder_learning_rate: float = 1e-4
    # "a photo of <colour> <texture> fabric[ with a <defect>]" with each of colour / texture dropped
    # with probability `word_dropout` (pretrain.data.describe), instead of "a photo of <texture> fabric"
    descriptive_prompts: bool = False
    word_dropout: float = 0.3
    # share of windows cut around a simulated defect, masked over it and prompted "... with a <defect>"
    # (needs data.defect_images_per_type > 0)
    defect_probability: float = 0.0
    # SD-2-inpainting's parameterisation is epsilon on SD's betas, whose last step still holds
    # sqrt(0.0047) = 7 % of the image: a model can read the colour under the mask from that leak in
    # training, and at inference (pure noise) it reads noise instead. zero_terminal_snr rescales the
    # betas so the last step is pure noise (Lin et al., "Common diffusion noise schedules and sample
    # steps are flawed"); it needs v_prediction and samples with "trailing" timesteps.
    prediction_type: str = "epsilon"  # epsilon | v_prediction
    zero_terminal_snr: bool = False

    def __post_init__(self):
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ConfigError(f"unet.prediction_type={self.prediction_type!r}: use epsilon or v_prediction")
        if self.zero_terminal_snr and self.prediction_type != "v_prediction":
            raise ConfigError("unet.zero_terminal_snr needs unet.prediction_type: v_prediction (epsilon is "
                              "undefined where the input is pure noise)")
        for name in ("word_dropout", "defect_probability", "empty_prompt_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"unet.{name}={getattr(self, name)}: a probability, give a value in [0, 1]")


@dataclass
class PretrainConfig:
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    vae: VAETrainConfig = field(default_factory=VAETrainConfig)
    unet: UNetTrainConfig = field(default_factory=UNetTrainConfig)
    checkpoints_total_limit: int = 3  # older checkpoints of a stage are deleted

    def __post_init__(self):
        if self.unet.defect_probability > 0 and self.data.defect_images_per_type <= 0:
            raise ConfigError(
                f"unet.defect_probability={self.unet.defect_probability} needs simulated defect images: set "
                "data.defect_images_per_type > 0 (or unet.defect_probability: 0)")
        if self.unet.defect_probability > 0 and not self.unet.descriptive_prompts:
            raise ConfigError("unet.defect_probability > 0 needs unet.descriptive_prompts: true (the defect windows "
                              "are prompted '... with a <defect>')")
