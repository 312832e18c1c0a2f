"""ICPR'20 defect synthesis as a mask- and class-conditioned pix2pix (U-Net + PatchGAN, L1 + adversarial).

"GAN-based Defect Synthesis for Anomaly Detection in Fabrics" (Rippel et al., RWTH LfB report
RIP20c; cited as ICPR 2020, the venue is uncertain): its method text could not be read anywhere,
so this is the standard reading the title allows. ASSUMED, not taken from the paper:
- the generator is an image-to-image GAN that writes a defect of class y into a good image at mask M;
- training pairs come from the few real defects themselves (inpainting pairs): the input is the
  defect image with the masked pixels blanked, x_in = D ⊙ (1 − M), and the target is D; at
  generation the input is a good image blanked the same way;
- G = U-Net (pix2pix) on [x_in, M, M ⊗ one-hot(y), z ⊙ M] (3 + 1 + S + 1 channels; z ~ N(0, 1) per
  pixel gives different candidates, where pix2pix uses dropout), output composited
  X = M ⊙ tanh(G(·)) + (1 − M) ⊙ x_in so that pixels outside the mask are the input's;
- D = PatchGAN on [condition, image] (pix2pix's conditional discriminator), condition =
  [x_in, M, M ⊗ one-hot(y)];
- losses (non-saturating GAN; L1 averaged over the mask pixels, not the image, so that small
  defects weigh as much as large ones; λ_L1 = 10 is our choice):
      L_G = softplus(−D(c, X)) + λ_L1 · Σ M|X − D| / Σ M
      L_D = softplus(−D(c, D)) + softplus(D(c, sg(X)))
- random horizontal / vertical flips of each training pair (few-shot augmentation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from gan_baselines.icpr20.config import ICPR20ModelConfig
from gan_baselines.networks import PatchDiscriminator, UNet, generator_adversarial_loss


class ICPR20(nn.Module, PyTorchModelHubMixin):
    """Conditional inpainting GAN for `defect_types` at window side `resolution`."""

    def __init__(self, defect_types: list[str], resolution: int = 64, base_channels: int = 16, depth: int = 3,
                 discriminator_channels: int = 16):
        super().__init__()
        self.defect_types = list(defect_types)
        self.resolution = int(resolution)
        s = len(self.defect_types)
        self.generator = UNet(3 + 1 + s + 1, 3, base_channels, depth)
        self.discriminator = PatchDiscriminator(3 + 1 + s + 3, discriminator_channels)

    @classmethod
    def from_config(cls, config: ICPR20ModelConfig) -> ICPR20:
        return cls(list(config.defect_types), config.resolution, config.base_channels, config.depth,
                   config.discriminator_channels)

    @property
    def num_classes(self) -> int:
        return len(self.defect_types)

    def condition(self, image: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """[x_in = x ⊙ (1 − M), M, M ⊗ one-hot(y)]: (B, 3 + 1 + S, H, W)."""
        one_hot = F.one_hot(labels.long(), self.num_classes).to(mask)[:, :, None, None]
        return torch.cat([image * (1 - mask), mask, mask * one_hot], dim=1)

    def forward(self, image: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """image (B, 3, H, W) in [-1, 1], mask (B, 1, H, W) in {0, 1}, labels (B,) -> (B, 3, H, W) in [-1, 1]."""
        cond = self.condition(image, mask, labels)
        z = torch.randn(mask.shape, generator=generator).to(mask) * mask
        painted = torch.tanh(self.generator(torch.cat([cond, z], dim=1)))
        return mask * painted + (1 - mask) * image


def flip_pairs(batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
    flips = torch.rand(batch["mask"].shape[0], 2, generator=generator) < 0.5
    out = {}
    for key in ("defect", "mask"):
        v = batch[key].clone()
        v[flips[:, 0]] = v[flips[:, 0]].flip(-1)
        v[flips[:, 1]] = v[flips[:, 1]].flip(-2)
        out[key] = v
    return {**batch, **out}


def icpr20_losses(model: ICPR20, batch: dict[str, torch.Tensor], generator: torch.Generator,
                  l1_weight: float) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """(L_G, terms, X, condition) for a batch of real defects (defect (B,3,r,r), mask, label)."""
    d, m, y = batch["defect"], batch["mask"], batch["label"]
    x = model(d, m, y, generator)
    cond = model.condition(d, m, y)
    t = {"adv": generator_adversarial_loss(model.discriminator(torch.cat([cond, x], 1))),
         "l1": ((x - d).abs() * m).sum() / (3 * m.sum()).clamp_min(1.0)}
    return t["adv"] + l1_weight * t["l1"], t, x, cond


def icpr20_optimizers(model: ICPR20, lr: float, betas: tuple[float, float]) -> dict[str, torch.optim.Optimizer]:
    return {"gen": torch.optim.Adam(model.generator.parameters(), lr=lr, betas=betas),
            "disc": torch.optim.Adam(model.discriminator.parameters(), lr=lr, betas=betas)}
