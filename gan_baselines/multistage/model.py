"""Multistage GAN networks (Liu, Wang, Su, Du, Tao, "Multistage GAN for Fabric Defect Detection",
IEEE TIP 29, 2020): stage 1, a texture-conditioned cGAN that draws a defect patch; stage 2, a
defect-fusing U-Net T that turns a hard-seamed cut-paste composite into a seamless image.

Stage 1:  p̂ = G(z, Gφ, t)                            (B, 3, p, p) in [−1, 1]
          D_s(p, Gφ, t) = ψ(h) + ⟨e_D(Gφ, t), h⟩        projection discriminator on (patch, condition)
Stage 2:  x = y with the patch box b replaced by p̂ resized (hard seams); ŷ = T(x, b)
          D_T(y) a PatchGAN on whole windows

Where the paper's text was not available to us (declared, not guessed silently):
- Gφ of which VGG19 layers: Gatys' texture layers relu1_1 … relu4_1 (configurable; 64-px windows
  stop at relu3_1 because relu4_1's receptive field is 68 px);
- how the C×C matrices enter G: each layer's Gram goes through a learned bilinear projection
  Uₗᵀ Gφₗ Uₗ (k × k, symmetric like Gφ, C·k parameters instead of C²·d), flattened, layer-normed,
  concatenated over layers and mapped by an MLP to the conditioning vector; D_s has its own;
- whose texture: the window's own fabric outside the patch box (`gram_matrix` with `valid`), in
  training (real defect windows) and generation (good windows) alike, so that the condition never
  sees the defect it should produce;
- the defect type is a second condition (one model for all types, like the R3GAN baseline).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn
from torch.nn.utils import spectral_norm

from defectfill.errors import GenerationError
from gan_baselines.data import to_tensor_images, to_uint8_images
from gan_baselines.multistage.config import MultistageModelConfig
from gan_baselines.multistage.vgg import VGGFeatures, gram_matrix, valid_positions

VGG_CHANNELS = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}


def patch_boxes(masks: torch.Tensor, context: float = 0.25, min_side: int = 8) -> list[tuple[int, int, int, int]]:
    """The stage-1 patch box (y0, y1, x0, x1) around each mask's bounding box, each side grown by
    `context` of its length (at least `min_side` long), clamped inside the window. Rectangular, so
    that a long thin defect (a broken end) replaces a strip, not the whole window; the p × p patch is
    resized to it. masks (B, 1, r, r) in {0, 1}."""
    r = masks.shape[-1]
    boxes = []
    for m in masks[:, 0]:
        ys, xs = torch.nonzero(m > 0, as_tuple=True)
        if ys.numel() == 0:
            boxes.append((0, r, 0, r))
            continue
        box = []
        for low, high in ((int(ys.min()), int(ys.max()) + 1), (int(xs.min()), int(xs.max()) + 1)):
            side = min(r, max(min_side, high - low + 2 * math.ceil(context * (high - low))))
            start = min(max(0, math.floor((low + high - side) / 2)), r - side)
            box += [start, start + side]
        boxes.append(tuple(box))
    return boxes


def box_masks(boxes: list[tuple[int, int, int, int]], like: torch.Tensor) -> torch.Tensor:
    """(B, 1, r, r) in {0, 1}: 1 inside each box."""
    out = torch.zeros(len(boxes), 1, *like.shape[-2:], device=like.device)
    for i, (y0, y1, x0, x1) in enumerate(boxes):
        out[i, :, y0:y1, x0:x1] = 1
    return out


def crop_patches(images: torch.Tensor, boxes: list[tuple[int, int, int, int]], size: int) -> torch.Tensor:
    """The boxes of `images` resized to (size, size): (B, 3, size, size)."""
    return torch.cat([F.interpolate(images[i : i + 1, :, y0:y1, x0:x1], size=(size, size), mode="bilinear",
                                    align_corners=False, antialias=True) for i, (y0, y1, x0, x1) in enumerate(boxes)])


def paste_patches(images: torch.Tensor, patches: torch.Tensor, boxes: list[tuple[int, int, int, int]]) -> torch.Tensor:
    """Cut-paste with hard seams: each box of `images` replaced by its patch resized to the box."""
    out = images.clone()
    for i, (y0, y1, x0, x1) in enumerate(boxes):
        out[i, :, y0:y1, x0:x1] = F.interpolate(patches[i : i + 1], size=(y1 - y0, x1 - x0), mode="bilinear",
                                                align_corners=False, antialias=True)[0]
    return out


class GramEmbedding(nn.Module):
    """e = MLP([LN(vec(Uₗᵀ Gφₗ Uₗ))]ₗ): the C×C Gram of each layer through a learned C×k projection."""

    def __init__(self, layers: list[str], rank: int, out_dim: int, spectral: bool = False):
        super().__init__()
        self.layers = list(layers)
        self.projections = nn.ParameterList(
            [nn.Parameter(torch.randn(VGG_CHANNELS[int(name[4])], rank) / math.sqrt(VGG_CHANNELS[int(name[4])]))
             for name in self.layers])
        self.norms = nn.ModuleList([nn.LayerNorm(rank * rank) for _ in self.layers])
        wrap = spectral_norm if spectral else (lambda module: module)  # D's embedding is Lipschitz-bounded too
        self.mlp = nn.Sequential(wrap(nn.Linear(len(self.layers) * rank * rank, out_dim)), nn.LeakyReLU(0.2),
                                 wrap(nn.Linear(out_dim, out_dim)))

    def forward(self, grams: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = [norm((u.T @ grams[name] @ u).flatten(1))
                 for name, u, norm in zip(self.layers, self.projections, self.norms)]
        return self.mlp(torch.cat(parts, dim=1))


def _conv_act(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.2),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.2))


class PixelNorm(nn.Module):
    """x / sqrt(mean_c x² + ε) per pixel (Karras et al. 2018): keeps G's activations from drifting
    into tanh's flat ends without batch statistics (outputs do not depend on the batch)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


def _conv_act_norm(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.2), PixelNorm(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.2), PixelNorm())


class PatchGenerator(nn.Module):
    """G(z, Gφ, t) -> (B, 3, p, p) in [−1, 1]: a 4×4 seed from [z, e(Gφ) + e(t)], upsampled ×2 to p."""

    def __init__(self, config: MultistageModelConfig):
        super().__init__()
        ups = int(math.log2(config.patch_size // 4))
        chans = [config.g_channels * 2 ** min(3, ups - i) for i in range(ups + 1)]
        self.gram_embed = GramEmbedding(config.gram_layers, config.gram_rank, config.cond_dim)
        self.type_embed = nn.Embedding(max(1, len(config.defect_types)), config.cond_dim)
        self.seed = nn.Linear(config.noise_dim + config.cond_dim, chans[0] * 16)
        self.blocks = nn.ModuleList([_conv_act_norm(chans[i], chans[i + 1]) for i in range(ups)])
        self.to_rgb = nn.Conv2d(chans[-1], 3, 3, padding=1)

    def forward(self, noise: torch.Tensor, grams: dict[str, torch.Tensor], types: torch.Tensor) -> torch.Tensor:
        cond = self.gram_embed(grams) + self.type_embed(types)
        h = PixelNorm()(F.leaky_relu(self.seed(torch.cat([noise, cond], dim=1)), 0.2).view(noise.shape[0], -1, 4, 4))
        for block in self.blocks:
            h = block(F.interpolate(h, scale_factor=2, mode="nearest"))
        return torch.tanh(self.to_rgb(h))


class PatchDiscriminator(nn.Module):
    """D_s(p, Gφ, t) = ψ(h) + ⟨e_D(Gφ) + e_D(t), h⟩ (spectral norm), p (B, 3, p, p) -> (B,) logits."""

    def __init__(self, config: MultistageModelConfig):
        super().__init__()
        downs = int(math.log2(config.patch_size // 4))
        chans = [3] + [config.d_channels * 2 ** min(3, i) for i in range(downs)]
        self.convs = nn.ModuleList([spectral_norm(nn.Conv2d(chans[i], chans[i + 1], 4, stride=2, padding=1))
                                    for i in range(downs)])
        self.features = spectral_norm(nn.Linear(chans[-1] * 16, config.cond_dim))
        self.psi = spectral_norm(nn.Linear(config.cond_dim, 1))
        self.gram_embed = GramEmbedding(config.gram_layers, config.gram_rank, config.cond_dim, spectral=True)
        self.type_embed = spectral_norm(nn.Embedding(max(1, len(config.defect_types)), config.cond_dim))

    def forward(self, patch: torch.Tensor, grams: dict[str, torch.Tensor], types: torch.Tensor) -> torch.Tensor:
        h = patch
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.2)
        h = F.leaky_relu(self.features(h.flatten(1)), 0.2)
        cond = self.gram_embed(grams) + self.type_embed(types)
        return self.psi(h).squeeze(1) + (cond * h).sum(dim=1)


class FusionUNet(nn.Module):
    """T(x, b) -> (B, 3, r, r) in [−1, 1]: U-Net on [composite, 2b − 1] (strided-conv down, nearest up,
    concatenated skips)."""

    def __init__(self, config: MultistageModelConfig):
        super().__init__()
        ch = config.unet_channels
        self.inc = _conv_act(4, ch[0])
        self.downs = nn.ModuleList([nn.Sequential(nn.Conv2d(ch[i], ch[i], 4, stride=2, padding=1), nn.LeakyReLU(0.2),
                                                  _conv_act(ch[i], ch[i + 1])) for i in range(len(ch) - 1)])
        self.ups = nn.ModuleList([_conv_act(ch[i + 1] + ch[i], ch[i]) for i in range(len(ch) - 1)])
        self.out = nn.Conv2d(ch[0], 3, 1)

    def forward(self, composite: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
        h = self.inc(torch.cat([composite, 2 * box - 1], dim=1))
        skips = []
        for down in self.downs:
            skips.append(h)
            h = down(h)
        for up, skip in zip(reversed(self.ups), reversed(skips)):
            h = up(torch.cat([F.interpolate(h, scale_factor=2, mode="nearest"), skip], dim=1))
        return torch.tanh(self.out(h))


class FusionDiscriminator(nn.Module):
    """D_T(y): PatchGAN (spectral norm), (B, 3, r, r) -> (B, 1, r/8, r/8) logits."""

    def __init__(self, config: MultistageModelConfig):
        super().__init__()
        d = config.d_channels
        self.net = nn.Sequential(
            spectral_norm(nn.Conv2d(3, d, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(d, 2 * d, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(2 * d, 4 * d, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(4 * d, 1, 3, padding=1)),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)


class MultistageGAN(nn.Module, PyTorchModelHubMixin, library_name="defectfill",
                    tags=["multistage-gan", "defect-generation", "gan"]):
    """The fixed VGG19, stage 1 (G, D_s) and stage 2 (T, D_T), saved together with `save_pretrained`
    (the VGG weights travel in model.safetensors, so a saved model never needs the torch cache)."""

    def __init__(self, config: MultistageModelConfig | dict):
        super().__init__()
        if isinstance(config, dict):  # from_pretrained passes config.json's fields
            from defectfill.config import from_dict

            config = from_dict(MultistageModelConfig, config, where="config.json")
        self.config = config
        self.vgg = VGGFeatures(config.gram_layers + config.perceptual_layers)
        self.generator = PatchGenerator(config)
        self.patch_discriminator = PatchDiscriminator(config)
        self.fusion = FusionUNet(config)
        self.fusion_discriminator = FusionDiscriminator(config)

    @property
    def defect_types(self) -> list[str]:
        return list(self.config.defect_types)

    def texture_grams(self, images: torch.Tensor, exclude: torch.Tensor) -> dict[str, torch.Tensor]:
        """Gφ of every gram layer over the positions of `images` outside `exclude` (B, 1, r, r)."""
        with torch.no_grad():
            features = self.vgg(images)
        return {name: gram_matrix(features[name], valid_positions(exclude, features[name].shape[-2:]))
                for name in self.config.gram_layers}

    def compose(self, windows: torch.Tensor, masks: torch.Tensor, types: torch.Tensor, rng: torch.Generator):
        """Stage 1 into the windows: (composite x with hard seams, box masks b, stage-1 patches p̂)."""
        boxes = patch_boxes(masks)
        box = box_masks(boxes, windows)
        noise = torch.randn(windows.shape[0], self.config.noise_dim, generator=rng).to(windows.device)
        patches = self.generator(noise, self.texture_grams(windows, box), types)
        return paste_patches(windows, patches, boxes), box, patches

    @torch.no_grad()
    def fill(self, windows: np.ndarray, masks: np.ndarray, *, defect_type: str, rng: torch.Generator) -> np.ndarray:
        """windows (k, r, r, 3) uint8 good crops, masks (k, r, r) bool -> (k, r, r, 3) uint8 T(x) windows
        (the caller keeps the pixels inside the masks)."""
        r = self.config.resolution
        if defect_type not in self.config.defect_types:
            raise GenerationError(f"defect_type: {defect_type!r} unknown to this multistage GAN; known: "
                                  f"{self.config.defect_types}")
        if windows.ndim != 4 or windows.shape[1:] != (r, r, 3):
            raise GenerationError(f"windows: expected (k, {r}, {r}, 3) uint8 texture patches, found {windows.shape}; "
                                  "crop windows at the model resolution")
        if masks.shape != windows.shape[:3]:
            raise GenerationError(f"masks: shape {masks.shape} does not fit the patches {windows.shape[:3]} (a mask "
                                  "larger than its patch); crop mask and patch with the same window")
        device = next(self.fusion.parameters()).device
        good = to_tensor_images(windows).to(device)
        mask = torch.from_numpy(np.asarray(masks, bool)).float()[:, None].to(device)
        types = torch.full((len(windows),), self.config.defect_types.index(defect_type), dtype=torch.long, device=device)
        composite, box, _ = self.compose(good, mask, types, rng)
        return to_uint8_images(self.fusion(composite, box))
