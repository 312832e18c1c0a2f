"""DeepLabV3 (torchvision) and RT-DETR (ultralytics) on a tiny assembled dataset: real training."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from defectfill.data.fabric import render_sample
from defectfill.data.sample import DefectSample
from defectfill.downstream.assemble import assemble
from defectfill.downstream.config import DeepLabConfig, RTDETRConfig, load_downstream_config
from defectfill.downstream.deeplab import (
    build_deeplab,
    class_weights,
    load_deeplab,
    predict_deeplab,
    train_deeplab,
)
from defectfill.downstream.rtdetr import DONE_NAME, predict_rtdetr, train_rtdetr
from defectfill.errors import ConfigError, ModelError

TYPES = ["stain", "hole"]
SIZE = 64
CONFIG = "configs/downstream_tiny.yaml"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    samples = [DefectSample(*render_sample("plain", t, s, SIZE), defect_type=t) for t in TYPES for s in range(4)]
    return assemble(samples, [], tmp_path_factory.mktemp("ds") / "data", TYPES)


def test_resnet50_output_stride_8_and_16():
    x = torch.zeros(1, 3, 32, 32)
    for stride, side in ((8, 4), (16, 2)):
        model = build_deeplab(DeepLabConfig(arch="resnet50", output_stride=stride), num_classes=3).eval()
        with torch.no_grad():
            assert model.backbone(x)["out"].shape[-1] == side
            assert model(x)["out"].shape == (1, 3, 32, 32)
    assert class_weights(DeepLabConfig(), 3).tolist() == [1.0, 9.0, 9.0]


def test_mobilenet_batchnorm_tracks_the_data_from_random_init():
    # torchvision's 0.01 momentum left eval-mode predictions all background after ~100 steps
    model = build_deeplab(DeepLabConfig(arch="mobilenet_v3_large"), num_classes=2)
    momenta = {m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert momenta == {0.1}


def test_backbone_loaded_from_a_local_file(tmp_path):
    from safetensors.torch import save_file
    from torchvision.models import mobilenet_v3_large

    torch.manual_seed(1)
    classifier = mobilenet_v3_large(weights=None)
    path = tmp_path / "mobilenet.safetensors"
    save_file({k: v.contiguous() for k, v in classifier.state_dict().items()}, str(path))
    model = build_deeplab(DeepLabConfig(backbone_weights=str(path)), num_classes=3)
    assert torch.equal(model.backbone["0"][0].weight, classifier.features[0][0].weight)
    save_file({"unrelated.weight": torch.zeros(3)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ModelError, match="tensors match"):
        build_deeplab(DeepLabConfig(backbone_weights=str(tmp_path / "bad.safetensors")), num_classes=3)


def test_deeplab_trains_saves_and_predicts(dataset, tmp_path):
    config = DeepLabConfig(epochs=2, batch_size=4, image_size=SIZE, device="cpu")
    info = train_deeplab(dataset.root, TYPES, config, tmp_path / "deeplab")
    assert (tmp_path / "deeplab" / "best.safetensors").is_file()
    assert len(info["seconds_per_epoch"]) == 2 and info["best_epoch"] in (1, 2)
    assert list((tmp_path / "deeplab" / "tensorboard").iterdir())
    assert json.loads((tmp_path / "deeplab" / "best.json").read_text())["classes"] == TYPES
    model, loaded_info = load_deeplab(tmp_path / "deeplab")
    images = [render_sample("twill", "stain", 9, 80)[0], render_sample("twill", None, 9, SIZE)[0]]
    maps = predict_deeplab(model, images, SIZE)
    assert maps[0].shape == (80, 80) and maps[1].shape == (SIZE, SIZE)
    assert maps[0].max() <= 2 and maps[0].min() >= 0
    with pytest.raises(ModelError, match="holds a trained segmenter"):
        train_deeplab(dataset.root, TYPES, config, tmp_path / "deeplab")
    assert train_deeplab(dataset.root, TYPES, config, tmp_path / "deeplab", if_exists="skip") == loaded_info


def test_deeplab_interrupted_between_epochs_resumes_to_the_same_weights(dataset, tmp_path, monkeypatch):
    from defectfill.downstream import deeplab

    config = DeepLabConfig(epochs=3, batch_size=4, image_size=SIZE, device="cpu")
    original = deeplab._save_resume_state
    seen: dict[str, dict[int, dict]] = {}

    def spy(run: str, stop_after: int | None = None):
        def save(folder, model, optimizer, scheduler, generator, progress):
            original(folder, model, optimizer, scheduler, generator, progress)
            seen.setdefault(run, {})[progress["epoch"]] = {k: v.clone() for k, v in model.state_dict().items()}
            if progress["epoch"] == stop_after:
                raise KeyboardInterrupt  # the job is killed right after this epoch's state is on disk
        return save

    torch.manual_seed(123)  # the global RNG state before the call must not matter
    monkeypatch.setattr(deeplab, "_save_resume_state", spy("straight"))
    straight = train_deeplab(dataset.root, TYPES, config, tmp_path / "straight", seed=5)
    monkeypatch.setattr(deeplab, "_save_resume_state", spy("killed", stop_after=1))
    with pytest.raises(KeyboardInterrupt):
        train_deeplab(dataset.root, TYPES, config, tmp_path / "resumed", seed=5)
    assert (tmp_path / "resumed" / "last" / "state.json").is_file() and not (tmp_path / "resumed" / "best.json").exists()
    torch.manual_seed(999)
    monkeypatch.setattr(deeplab, "_save_resume_state", spy("resumed"))
    resumed = train_deeplab(dataset.root, TYPES, config, tmp_path / "resumed", seed=5)
    assert sorted(seen["resumed"]) == [2, 3]  # epoch 1 was not trained again
    for epoch in (2, 3):
        for name, tensor in seen["straight"][epoch].items():
            assert torch.equal(tensor, seen["resumed"][epoch][name]), f"epoch {epoch}: {name} differs after resume"
    assert resumed["best_epoch"] == straight["best_epoch"] and resumed["best_val"] == straight["best_val"]
    assert not (tmp_path / "resumed" / "last").exists()  # removed once the training is finished
    # a damaged resume state is refused by name, nothing trained over it
    monkeypatch.setattr(deeplab, "_save_resume_state", spy("broken", stop_after=1))
    with pytest.raises(KeyboardInterrupt):
        train_deeplab(dataset.root, TYPES, config, tmp_path / "broken", seed=5)
    (tmp_path / "broken" / "last" / "optimizer.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="optimizer.safetensors.*delete the folder .*last to start this training again"):
        train_deeplab(dataset.root, TYPES, config, tmp_path / "broken", seed=5)


def test_rtdetr_small_trains_predicts_and_never_clobbers(dataset, tmp_path):
    model_yaml = load_downstream_config(CONFIG).rtdetr.model
    config = RTDETRConfig(model=model_yaml, epochs=1, batch=4, imgsz=SIZE)
    run_dir = tmp_path / "rtdetr"
    record = train_rtdetr(dataset.data_yaml, config, run_dir)
    assert (run_dir / "weights" / "best.pt").is_file() and (run_dir / DONE_NAME).is_file()
    assert record["weights"].startswith(str(run_dir.resolve()))
    assert len(record["seconds_per_epoch"]) == 1 and record["seconds_per_epoch"][0] > 0
    files_before = sorted(p.name for p in (run_dir / "weights").iterdir())
    with pytest.raises(ModelError, match="finished RT-DETR run"):
        train_rtdetr(dataset.data_yaml, config, run_dir)
    assert train_rtdetr(dataset.data_yaml, config, run_dir, if_exists="skip") == record
    assert sorted(p.name for p in (run_dir / "weights").iterdir()) == files_before

    images = [render_sample("plain", "hole", 7, SIZE)[0], render_sample("plain", None, 7, 96)[0]]
    predictions = predict_rtdetr(record["weights"], images, imgsz=SIZE)
    assert len(predictions) == 2
    for prediction, image in zip(predictions, images):
        assert prediction.boxes.shape[1] == 4 and len(prediction.scores) == len(prediction.boxes)
        if len(prediction.boxes):  # boxes come back in the input image's pixel units
            assert prediction.boxes[:, 2].max() <= image.shape[1] + 1e-3
            assert set(prediction.labels.tolist()) <= {0, 1}


    # fine-tuning from a local .pt (the user's weights): here the run's own best.pt
    tuned = train_rtdetr(dataset.data_yaml, RTDETRConfig(model=record["weights"], epochs=1, batch=4, imgsz=SIZE), tmp_path / "tuned")
    args = yaml.safe_load((tmp_path / "tuned" / "args.yaml").read_text())
    assert args["model"] == record["weights"] and args["pretrained"] is True
    assert tuned["config"]["model"] == record["weights"] and (tmp_path / "tuned" / "weights" / "best.pt").is_file()


def test_rtdetr_refuses_to_download(dataset, tmp_path):
    with pytest.raises(ModelError, match="not found"):
        train_rtdetr(dataset.data_yaml, RTDETRConfig(model=str(tmp_path / "rtdetr-l.pt")), tmp_path / "run")
    with pytest.raises(ConfigError, match="model yaml or a .pt"):
        train_rtdetr(dataset.data_yaml, RTDETRConfig(model="rtdetr.onnx"), tmp_path / "run2")
