"""DGT → DIS → DFC networks and the joint loss (Open-Set Fabric Defect Detection With Defect
Generation and Transfer, IEEE TIM 2025, DOI 10.1109/TIM.2025.3547485; no code or full text is
public, this follows the transcribed method notes, `gan_baselines/dgt/__init__.py` lists what is ours).

Networks (all in one `DGT` module, saved with `PyTorchModelHubMixin`: config.json + model.safetensors):
- G, the defect generator: U-Net on [Ẽ_fore, Ẽ_back, N] (S + 1 + 3 channels, `codes.py`) -> X_fake
  (tanh, [-1, 1]).
- DIS, the segmenter: a U-Net reconstructor R(x) that removes defects (trained to give the good
  image back), and a U-Net segmenter on [x, R(x), |x − R(x)|] -> pixel defect logits. This is our
  reading of "compares the image with its reconstruction".
- DFC, the classifier: a small CNN on [x, region] pooled under the region -> S logits, where the
  region is the defect mask M in training and a connected region of DIS's thresholded heat map at
  inference (a classifier "on the segmented regions"); the per-class Weibull models on these
  logits live in `openset.py`.
- D_adv: a PatchGAN on [x, M ⊗ one-hot(y)] (real: the real defect D; fake: X_fake).

Loss (A = Σ_s Ẽ_fore,s, the smoothed soft defect map; BCE/CE with logits):
    L_fore = |A ⊙ (X_fake − D)|₁          L_back = |(1 − A) ⊙ (X_fake − N)|₁
    L_mix  = |X_fake − (A ⊙ D + (1 − A) ⊙ N)|₁
    L_seg_fake = BCE(DIS(X_fake), M)      L_seg_real_fore = BCE(DIS(D), 1) on M
    L_seg_real_back = BCE(DIS(D), 0) on 1 − M, and BCE(DIS(N), 0)
    L_cls_fake = CE(DFC(X_fake, M), y)    L_cls_real = CE(DFC(D, M), y)
    L = α1 L_fore + α2 L_back + α3 L_mix + α4 L_seg_fake + α5 L_seg_real_fore + α6 L_seg_real_back
        + α7 L_cls_fake + α8 L_cls_real + λ_adv softplus(−D_adv(X_fake)) + λ_rec L_rec
    L_rec = |R(sg(X_fake)) − N|₁ + |(1 − M) ⊙ (R(D) − D)|₁ + |R(N) − N|₁
G, DIS and DFC minimise L together (the fake terms reach G: the downstream losses are
back-propagated into the generator); D_adv minimises softplus(−D_adv(D)) + softplus(D_adv(sg(X_fake))).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from gan_baselines.dgt.codes import defect_codes, generator_input
from gan_baselines.dgt.config import DGTLossWeights, DGTModelConfig
from gan_baselines.networks import PatchDiscriminator, UNet, generator_adversarial_loss


class DefectClassifier(nn.Module):
    """DFC's CNN: (B, 3, H, W) image in [-1, 1] + (B, 1, H, W) region in [0, 1] -> (B, S) logits.

    Features are averaged under the region (and over the whole window, concatenated), so the
    classifier looks at the segmented region and its surroundings."""

    def __init__(self, num_classes: int, channels: int = 32):
        super().__init__()
        c = channels
        self.features = nn.Sequential(
            nn.Conv2d(4, c, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.LeakyReLU(0.2),
        )
        self.head = nn.Linear(4 * c, num_classes)

    def forward(self, image: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        f = self.features(torch.cat([image, region], dim=1))
        h = F.adaptive_avg_pool2d(region, f.shape[-2:])
        region = (f * h).sum((2, 3)) / (h.sum((2, 3)) + 1e-3)
        return self.head(torch.cat([region, f.mean((2, 3))], dim=1))


class DGT(nn.Module, PyTorchModelHubMixin):
    """G + DIS + DFC + D_adv for `defect_types` (S = len(defect_types)) at window side `resolution`."""

    def __init__(self, defect_types: list[str], resolution: int = 64, base_channels: int = 16, depth: int = 3,
                 classifier_channels: int = 32, discriminator_channels: int = 16,
                 kernel_sizes: list[int] = (3, 5, 7, 9, 11), weight_range: list[float] = (0.7, 1.0)):
        super().__init__()
        self.defect_types = list(defect_types)
        self.resolution = int(resolution)
        self.kernel_sizes = [int(k) for k in kernel_sizes]
        self.weight_range = (float(weight_range[0]), float(weight_range[1]))
        s = len(self.defect_types)
        self.generator = UNet(s + 1 + 3, 3, base_channels, depth)
        nn.init.zeros_(self.generator.head.weight)
        nn.init.zeros_(self.generator.head.bias)
        self.reconstructor = UNet(3, 3, base_channels, depth)
        self.segmenter = UNet(9, 1, base_channels, depth)
        self.classifier = DefectClassifier(s, classifier_channels)
        self.discriminator = PatchDiscriminator(3 + s, discriminator_channels)

    @classmethod
    def from_config(cls, config: DGTModelConfig) -> DGT:
        return cls(list(config.defect_types), config.resolution, config.base_channels, config.depth,
                   config.classifier_channels, config.discriminator_channels, list(config.kernel_sizes),
                   list(config.weight_range))

    @property
    def num_classes(self) -> int:
        return len(self.defect_types)

    def codes(self, mask: torch.Tensor, labels: torch.Tensor, generator: torch.Generator):
        return defect_codes(mask, labels, self.num_classes, generator, self.kernel_sizes, self.weight_range)

    def generate(self, good: torch.Tensor, fore: torch.Tensor, back: torch.Tensor) -> torch.Tensor:
        """X_fake (B, 3, H, W) in [-1, 1] from N (B, 3, H, W) and the smoothed codes.

        G predicts a change of N in tanh's pre-activation space, X_fake = tanh(atanh(N) + G(·)),
        with its last conv zero-initialised: it starts as the identity on N, so the few-step CPU
        runs spend their steps on the defect instead of relearning the fabric (our choice)."""
        base = torch.atanh(good.clamp(-0.995, 0.995))
        return torch.tanh(base + self.generator(generator_input(fore, back, good)))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.reconstructor(x))

    def segment(self, x: torch.Tensor, with_reconstruction: bool = False):
        """DIS: (B, 1, H, W) defect logits of x (B, 3, H, W) in [-1, 1] (and R(x) if asked)."""
        r = self.reconstruct(x)
        logits = self.segmenter(torch.cat([x, r, (x - r).abs()], dim=1))
        return (logits, r) if with_reconstruction else logits

    def classify(self, x: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        """DFC: (B, S) logits of the region (B, 1, H, W) in {0, 1} of x (B, 3, H, W) in [-1, 1]."""
        return self.classifier(x, region)

    def condition(self, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """M ⊗ one-hot(y): (B, S, H, W), D_adv's condition."""
        return mask * F.one_hot(labels.long(), self.num_classes).to(mask)[:, :, None, None]


def _masked_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (values * weight).sum() / weight.sum().clamp_min(1.0)


def dgt_losses(model: DGT, batch: dict[str, torch.Tensor], generator: torch.Generator,
               weights: DGTLossWeights) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """(L for G + DIS + DFC, the named terms, X_fake) for one batch of `FewShotBatches.sample`
    (`generator` draws the codes' kernel sizes and weights)."""
    d, m, y, n = batch["defect"], batch["mask"], batch["label"], batch["good"]
    fore, back = model.codes(m, y, generator)
    a = fore.sum(1, keepdim=True)
    x_fake = model.generate(n, fore, back)
    t: dict[str, torch.Tensor] = {}
    t["fore"] = (a * (x_fake - d)).abs().mean()
    t["back"] = ((1 - a) * (x_fake - n)).abs().mean()
    t["mix"] = (x_fake - (a * d + (1 - a) * n)).abs().mean()
    seg_fake = model.segment(x_fake)
    (seg_real, rec_real), (seg_good, rec_good) = (model.segment(v, with_reconstruction=True) for v in (d, n))
    t["seg_fake"] = F.binary_cross_entropy_with_logits(seg_fake, m)
    bce_real = F.binary_cross_entropy_with_logits(seg_real, m, reduction="none")
    t["seg_real_fore"] = _masked_mean(bce_real, m)
    t["seg_real_back"] = 0.5 * (_masked_mean(bce_real, 1 - m)
                                + F.binary_cross_entropy_with_logits(seg_good, torch.zeros_like(seg_good)))
    t["cls_fake"] = F.cross_entropy(model.classify(x_fake, m), y)
    t["cls_real"] = F.cross_entropy(model.classify(d, m), y)
    t["adv"] = generator_adversarial_loss(model.discriminator(torch.cat([x_fake, model.condition(m, y)], 1)))
    t["rec"] = ((model.reconstruct(x_fake.detach()) - n).abs().mean()
                + _masked_mean((rec_real - d).abs(), (1 - m).expand_as(d)) + (rec_good - n).abs().mean())
    w = weights
    total = (w.alpha1_fore * t["fore"] + w.alpha2_back * t["back"] + w.alpha3_mix * t["mix"]
             + w.alpha4_seg_fake * t["seg_fake"] + w.alpha5_seg_real_fore * t["seg_real_fore"]
             + w.alpha6_seg_real_back * t["seg_real_back"] + w.alpha7_cls_fake * t["cls_fake"]
             + w.alpha8_cls_real * t["cls_real"] + w.adversarial * t["adv"] + w.reconstruction * t["rec"])
    return total, t, x_fake


def dgt_optimizers(model: DGT, lr: float, betas: tuple[float, float],
                   classifier_lr_scale: float = 1.0) -> dict[str, torch.optim.Optimizer]:
    """"main": G + DIS (lr) and DFC (lr · classifier_lr_scale) in one Adam; "disc": D_adv."""
    groups = [{"params": [p for n, p in model.named_parameters() if not n.startswith(("discriminator.", "classifier."))]},
              {"params": list(model.classifier.parameters()), "lr": lr * classifier_lr_scale}]
    return {"main": torch.optim.Adam(groups, lr=lr, betas=betas),
            "disc": torch.optim.Adam(model.discriminator.parameters(), lr=lr, betas=betas)}
