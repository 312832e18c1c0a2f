"""Training data of DefectFill: a few defect images + masks per type, augmented, with random boxes.

Samples come from `defectfill.data.readers.read_dataset` (MVTec-AD, image+mask folders, COCO,
YOLO, AITEX). By default (`training_crops: generation`) each defect is first cut out with the
window `DefectFill.generate` will paint it in, at the size it paints at (`concept_training_crops`,
the same `windows_for_mask` as generation), so a concept learns its defects at the scale it will
draw them, whatever the image size (a 4096x256 strip keeps its small defects at full size instead
of shrinking 4x). Each training example is then a random resize (x scale_min..scale_max of the
training size) and a crop that contains a defect pixel, a random horizontal flip, the two prompts
of its type, and the random box mask M_rand of the object loss.

All randomness of an example comes from a generator seeded by (seed, draw), where `draw` is the
example's position in the run's global sample stream; `StepBatchSampler` gives every process its
own slice of that stream from any step on. So the data a run sees is a pure function of
(seed, step, rank): resuming from a checkpoint continues exactly, and two processes never see
the same draw.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from defectfill.data.sample import DefectSample
from defectfill.errors import ConfigError, DataError
from defectfill.masks import ResizeStats, resize_mask

logger = logging.getLogger(__name__)

_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: spreads (seed, draw) over the 63-bit seed space


def mixed_seed(*parts: int) -> int:
    value = 0
    for part in parts:
        value = (value * _MIX + int(part) + 1) % (2**63 - 1)
    return value


def load_defect_samples(
    path: str, defect_types: list[str] | None = None, layout: str = "auto", folder_defect_type: str = "",
) -> dict[str, list[DefectSample]]:
    """Read the dataset at `path` and group its defect samples by type (good images dropped).

    folder_defect_type: the class of an image+mask folder without defects.json ("": the reader's
    neutral "defect", warned).

    defect_types: the types to keep (empty/None: all); a type absent from the dataset raises
    ConfigError listing the types found.
    """
    from defectfill.data.readers import detect_layout, read_dataset

    if not path:
        raise ConfigError("train_data_dir: not set; pass the folder holding the few defect images and masks")
    kind = detect_layout(path) if layout == "auto" else layout
    kwargs = {"defect_type": folder_defect_type} if kind == "folder" and folder_defect_type else {}
    samples = read_dataset(path, layout=kind, **kwargs)
    by_type: dict[str, list[DefectSample]] = {}
    for sample in samples:
        if sample.is_good or not sample.mask.any():
            continue
        by_type.setdefault(sample.defect_type, []).append(sample)
    if not by_type:
        raise DataError(f"{path}: no defect image with a non-empty mask found (layout {kind}); nothing to learn")
    if defect_types:
        missing = [t for t in defect_types if t not in by_type]
        if missing:
            raise ConfigError(
                f"defect_types: {missing} not found in {path}; the dataset holds "
                f"{ {t: len(v) for t, v in sorted(by_type.items())} }; fix the names or leave defect_types empty"
            )
        by_type = {t: by_type[t] for t in defect_types}
    return dict(sorted(by_type.items()))


def concept_training_crops(samples: list[DefectSample], resolution: int, multiple: int = 8,
                           context: float = 0.25, max_enlarge: float = 2.0,
                           skipped: list[str] | None = None, zoom: float = 1.0) -> list[DefectSample]:
    """One crop per group of nearby defects: the window `DefectFill.generate` works in for it
    (`windows_for_mask` at `resolution`, size `multiple`, `context`, `zoom`), resized to the generation size
    (longer side `resolution`), with the group's mask inside it.

    A window clipped by a narrow image (a defect as tall as a 256-px strip) is generated with its
    short side below `resolution`; the training augmentation enlarges such a crop to `resolution`.
    Crops it would enlarge more than `max_enlarge` times (a 2000-px line on a strip) would be
    learned at another scale than they are generated at: they are left out, named in `skipped`.
    """
    from defectfill.generators.window import crop_image, crop_mask, windows_for_mask

    crops = []
    for sample in samples:
        if sample.is_good or not sample.mask.any():
            continue
        name = sample.meta.get("name") or (sample.source.stem if sample.source else "img")
        groups = windows_for_mask(sample.mask, resolution, multiple, context=context, zoom=zoom)
        for k, (window, group) in enumerate(groups, 1):
            if min(window.gen_height, window.gen_width) * max_enlarge < resolution:
                if skipped is not None:
                    skipped.append(f"{name} window {window.as_dict()['box']} (generated at "
                                   f"{window.gen_width}x{window.gen_height})")
                continue
            crops.append(DefectSample(crop_image(sample.image, window), crop_mask(group, window), sample.defect_type,
                                      source=sample.source, is_gray=sample.is_gray,
                                      meta={"name": f"{name}_c{k}", "window": window.as_dict(),
                                            "generation_scale": window.scale}))
    if not crops:
        raise DataError(f"no defect crop of at least {resolution / max_enlarge:g} px on its short side could be cut "
                        f"({len(skipped or [])} windows too narrow); lower the DefectFill resolution or use larger "
                        "images")
    return crops


@dataclass
class LatentCoverage:
    """How many training defects of one type still cover a latent cell at the scale training sees them."""

    defects: int = 0
    vanished: int = 0  # masks an area resize to latent size empties (kept as one centroid cell)
    scales: list[float] = field(default_factory=list)  # image px -> training px, per defect
    vanished_areas: list[float] = field(default_factory=list)  # their mask areas in training px

    def upsample_needed(self, vae_scale_factor: int) -> int:
        """About how many times larger the median vanished defect must be drawn to cover a latent cell."""
        if not self.vanished_areas:
            return 1
        return max(2, math.ceil(vae_scale_factor / math.sqrt(max(1e-6, float(np.median(self.vanished_areas))))))


def latent_coverage(samples: dict[str, list[DefectSample]], resolution: int, vae_scale_factor: int,
                    ) -> dict[str, LatentCoverage]:
    """Per type: the defects whose mask an area resize to latent size empties, at the scale the
    augmentation shows them (short side -> `resolution`, jitter ignored)."""
    out: dict[str, LatentCoverage] = {}
    for defect_type, items in samples.items():
        cov = out.setdefault(defect_type, LatentCoverage())
        for sample in items:
            h, w = sample.size
            scale = resolution / min(h, w)
            latent = (max(1, round(h * scale / vae_scale_factor)), max(1, round(w * scale / vae_scale_factor)))
            cov.defects += 1
            if not resize_mask(sample.mask, latent, mode="area", keep_nonempty=False).any():
                cov.vanished += 1
                cov.vanished_areas.append(float(sample.mask.sum()) * scale**2)
            cov.scales.append(scale * float(sample.meta.get("generation_scale", 1.0)))
    return out


def check_image_sizes(samples: dict[str, list[DefectSample]], resolution: int, min_side: int | None = None) -> None:
    """Refuse an image whose short side is below `min_side` (default `resolution`)."""
    min_side = resolution if min_side is None else min_side
    for defect_type, items in samples.items():
        for sample in items:
            h, w = sample.size
            if min(h, w) < min_side:
                raise DataError(
                    f"{sample.source or defect_type}: image {w}x{h} is smaller than the training size "
                    f"{resolution}x{resolution}; lower `resolution` or upscale/remove the image"
                )


def random_box_mask(size: int, num_boxes: int, min_fraction: float, max_fraction: float,
                    generator: torch.Generator) -> np.ndarray:
    """M_rand: the union of `num_boxes` axis-aligned boxes with sides uniform in
    [min_fraction, max_fraction] x size, placed uniformly inside the (size, size) image."""
    mask = np.zeros((size, size), dtype=bool)
    lo = max(1, math.ceil(min_fraction * size))
    hi = max(lo, math.floor(max_fraction * size))
    for _ in range(num_boxes):
        h, w = (int(v) for v in torch.randint(lo, hi + 1, (2,), generator=generator))
        y0 = int(torch.randint(0, size - h + 1, (1,), generator=generator))
        x0 = int(torch.randint(0, size - w + 1, (1,), generator=generator))
        mask[y0 : y0 + h, x0 : x0 + w] = True
    return mask


def _uniform(generator: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=generator))


class DefectFillDataset(Dataset):
    """Few defect images + masks -> training examples; indexed by (sample index, draw number).

    Each item: pixel_values (3, R, R) in [-1, 1]; defect_mask (1, R, R) and box_mask (1, R, R) in
    {0, 1}; defect_mask_latent (1, R/f, R/f) (the loss region, never empty: a defect that the
    resize empties keeps its centroid pixel, flagged in `mask_rescued`); the token ids of the
    defect and object prompts; the defect type's index.
    """

    def __init__(
        self,
        samples: dict[str, list[DefectSample]],
        tokenizer,
        concept_tokens: dict[str, str],
        *,
        resolution: int,
        vae_scale_factor: int = 8,
        object_word: str = "fabric",
        defect_prompt: str = "A photo of {token}",
        object_prompt: str = "A {object} with {token}",
        scale_range: tuple[float, float] = (1.0, 1.125),
        center_crop: bool = False,
        random_flip: bool = True,
        num_random_boxes: int = 30,
        box_fraction: tuple[float, float] = (0.03, 0.25),
        seed: int = 0,
        min_image_side: int | None = None,
    ):
        self.types = list(samples)
        self.items = [(t, s) for t in self.types for s in samples[t]]
        self.resolution = resolution
        self.latent_size = resolution // vae_scale_factor
        self.scale_range = scale_range
        self.center_crop = center_crop
        self.random_flip = random_flip
        self.num_random_boxes = num_random_boxes
        self.box_fraction = box_fraction
        self.seed = seed
        check_image_sizes(samples, resolution, min_image_side)
        self.prompts = {}
        for defect_type in self.types:
            token = concept_tokens[defect_type]
            texts = [defect_prompt.format(token=token, object=object_word),
                     object_prompt.format(token=token, object=object_word)]
            ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length,
                            truncation=True, return_tensors="pt").input_ids
            self.prompts[defect_type] = (ids[0], ids[1])

    def __len__(self) -> int:
        return len(self.items)

    def _augment(self, sample: DefectSample, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        size = self.resolution
        h, w = sample.size
        scale = _uniform(generator, *self.scale_range) * size / min(h, w)
        new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        image = cv2.resize(sample.image, (new_w, new_h), interpolation=interpolation) if (new_h, new_w) != (h, w) else sample.image
        mask = resize_mask(sample.mask, (new_h, new_w), mode="nearest", keep_nonempty=True)
        ys, xs = np.nonzero(mask)
        if self.center_crop:
            cy, cx = (ys.min() + ys.max()) // 2, (xs.min() + xs.max()) // 2
            y0 = int(np.clip(cy - size // 2, 0, new_h - size))
            x0 = int(np.clip(cx - size // 2, 0, new_w - size))
        else:  # a random window that contains a random defect pixel
            k = int(torch.randint(0, len(ys), (1,), generator=generator))
            y, x = int(ys[k]), int(xs[k])
            y_lo, y_hi = max(0, y - size + 1), min(y, new_h - size)
            x_lo, x_hi = max(0, x - size + 1), min(x, new_w - size)
            y0 = int(torch.randint(y_lo, y_hi + 1, (1,), generator=generator))
            x0 = int(torch.randint(x_lo, x_hi + 1, (1,), generator=generator))
        image = image[y0 : y0 + size, x0 : x0 + size]
        mask = mask[y0 : y0 + size, x0 : x0 + size]
        if self.random_flip and float(torch.rand((), generator=generator)) < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        return np.array(image, copy=True), np.array(mask, copy=True)  # writable, contiguous

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        index, draw = key
        defect_type, sample = self.items[index]
        generator = torch.Generator().manual_seed(mixed_seed(self.seed, draw))
        image, mask = self._augment(sample, generator)
        boxes = random_box_mask(self.resolution, self.num_random_boxes, *self.box_fraction, generator)
        stats = ResizeStats()
        latent = self.latent_size
        mask_latent = resize_mask(mask, (latent, latent), mode="area", keep_nonempty=True, stats=stats)
        pixel_values = torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1.0
        ids_defect, ids_object = self.prompts[defect_type]
        return {
            "pixel_values": pixel_values,
            "defect_mask": torch.from_numpy(mask)[None].float(),
            "defect_mask_latent": torch.from_numpy(mask_latent)[None].float(),
            "box_mask": torch.from_numpy(boxes)[None].float(),
            "input_ids_defect": ids_defect,
            "input_ids_object": ids_object,
            "type_index": torch.tensor(self.types.index(defect_type)),
            "mask_rescued": torch.tensor(stats.kept_nonempty > 0),
            "draw": torch.tensor(draw),
        }


class StepBatchSampler(Sampler):
    """Micro-batches of (index, draw) for one process, from micro-step `start` to `stop`.

    The global sample stream is epoch after epoch of a permutation seeded by (seed, epoch); the
    micro-batch `m` of process `rank` holds stream positions ((m * world) + rank) * batch + j.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, *, rank: int = 0, world_size: int = 1,
                 start: int = 0, stop: int):
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.rank, self.world_size, self.start, self.stop = rank, world_size, start, stop
        self._perms: dict[int, list[int]] = {}

    def _index(self, position: int) -> int:
        epoch, offset = divmod(position, self.num_items)
        if epoch not in self._perms:
            self._perms = {epoch: torch.randperm(
                self.num_items, generator=torch.Generator().manual_seed(mixed_seed(self.seed, 7, epoch))).tolist()}
        return self._perms[epoch][offset]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for micro in range(self.start, self.stop):
            first = (micro * self.world_size + self.rank) * self.batch_size
            yield [(self._index(p), p) for p in range(first, first + self.batch_size)]

    def __len__(self) -> int:
        return max(0, self.stop - self.start)
