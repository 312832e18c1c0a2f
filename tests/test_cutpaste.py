"""Cut-paste baseline and the generation manifest it writes (real simulator images, real files)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from defectfill.data.fabric import render_sample
from defectfill.data.sample import DefectSample
from defectfill.errors import DataError, GenerationError
from defectfill.generators.interface import DefectGenerator
from defectfill.generators.manifest import MANIFEST_KEYS, read_generation_manifest
from defectfill.generators.requests import MaskPolicy, masks_by_type
from defectfill.generators.runner import generate_dataset
from defectfill.masks import mask_to_boxes
from gan_baselines.cutpaste import CutPaste

TYPES = ["stain", "hole"]


@pytest.fixture(scope="module")
def real_defects():
    return [DefectSample(*render_sample("plain", t, seed, 96), defect_type=t) for t in TYPES for seed in range(3)]


@pytest.fixture(scope="module")
def good_images():
    return [render_sample("twill", None, 100 + seed, 96)[0] for seed in range(4)]


def _request(shape=(96, 96)):
    mask = np.zeros(shape, bool)
    mask[30:60, 20:70] = True
    return mask


def test_cutpaste_changes_only_the_request_region(real_defects, good_images):
    generator = CutPaste(feather=1.5).fit(real_defects)
    assert isinstance(generator, DefectGenerator)
    assert generator.defect_types == sorted(TYPES)
    image, request = good_images[0], _request()
    result = generator.generate(image, request, defect_type="stain", num_candidates=3, generator=torch.Generator().manual_seed(0))
    assert len(result.candidates) == len(result.changed_masks) == len(result.scores) == 3
    for candidate, changed, boxes in zip(result.candidates, result.changed_masks, result.boxes):
        assert candidate.shape == image.shape and candidate.dtype == np.uint8
        assert np.array_equal(candidate[~request], image[~request])  # bit-identical outside
        assert changed.any() and not (changed & ~request).any()
        assert np.array_equal(boxes, mask_to_boxes(changed))
    # best first by score
    assert [result.scores[i] for i in result.selected] == sorted(result.scores, reverse=True)


def test_cutpaste_is_deterministic_with_a_seed(real_defects, good_images):
    generator = CutPaste().fit(real_defects)
    a = generator.generate(good_images[1], _request(), defect_type="hole", generator=torch.Generator().manual_seed(5))
    b = generator.generate(good_images[1], _request(), defect_type="hole", generator=torch.Generator().manual_seed(5))
    assert np.array_equal(a.image, b.image)


def test_cutpaste_rejects_bad_requests(real_defects, good_images):
    generator = CutPaste().fit(real_defects)
    with pytest.raises(GenerationError, match="not known to this generator"):
        generator.generate(good_images[0], _request(), defect_type="knot")
    with pytest.raises(GenerationError, match="mask is empty"):
        generator.generate(good_images[0], np.zeros((96, 96), bool), defect_type="stain")
    with pytest.raises(GenerationError, match="of the image's size"):
        generator.generate(good_images[0], _request((48, 48)), defect_type="stain")
    with pytest.raises(GenerationError, match="no defective sample"):
        CutPaste().fit([DefectSample(good_images[0], np.zeros((96, 96), bool))])


def test_manifest_written_resumed_and_checked(real_defects, good_images, tmp_path):
    generator = CutPaste().fit(real_defects)
    goods = [DefectSample(image, np.zeros(image.shape[:2], bool)) for image in good_images]

    def run():
        return generate_dataset(generator, goods, TYPES, tmp_path / "gen", per_type=3, seed=10, num_processes=1,
                                masks=MaskPolicy("real", masks_by_type(real_defects)))["manifest"]

    path = run()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 6 and all(tuple(line) == MANIFEST_KEYS for line in lines)
    assert sorted(line["defect_type"] for line in lines) == ["hole"] * 3 + ["stain"] * 3
    assert sorted(line["seed"] for line in lines) == list(range(10, 16))
    assert {line["generator"] for line in lines} == {"cutpaste"}
    items = read_generation_manifest(tmp_path / "gen")
    _, changed = items[0].load()
    assert np.array_equal(mask_to_boxes(changed), items[0].boxes)

    # a rerun skips what is done: same lines, same files
    before = path.read_text()
    run()
    assert path.read_text() == before

    # missing files are all listed, in one error
    (tmp_path / "gen" / lines[1]["image"]).unlink()
    (tmp_path / "gen" / lines[4]["changed_mask"]).unlink()
    with pytest.raises(DataError, match="2 file") as info:
        read_generation_manifest(tmp_path / "gen")
    assert lines[1]["image"] in str(info.value) and lines[4]["changed_mask"] in str(info.value)
