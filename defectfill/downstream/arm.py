"""One benchmark arm end to end: assemble -> fine-tune (DeepLabV3 and/or RT-DETR) -> evaluate.

Folder of an arm (`out_dir/<name>/`):

    data/                 the assembled training set (recipe.json: what went in)
    deeplab/              best.safetensors, best.json, tensorboard/
    rtdetr/               the ultralytics run folder (weights/best.pt, results.csv, ...)
    results.json          the arm's metrics; its presence marks the arm finished

`run_arm` is resumable: a finished arm (results.json) is returned as is; a finished model inside
an unfinished arm is not retrained. The test set is real images only (DESIGN §6).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from defectfill.config import to_dict
from defectfill.data.sample import DefectSample
from defectfill.downstream.assemble import AssembledDataset, assemble, load_assembled
from defectfill.downstream.config import AssembleConfig, DownstreamConfig
from defectfill.downstream.datasets import class_map
from defectfill.errors import DataError
from defectfill.io_utils import atomic_write_json
from defectfill.metrics.detection import ImageBoxes, detection_scores, mask_coverage
from defectfill.metrics.segmentation import segmentation_scores

RESULTS_NAME = "results.json"


def _check_test(test_samples: Sequence[DefectSample], classes: Sequence[str]) -> None:
    if not test_samples:
        raise DataError("test set is empty; pass real test images (an MVTec folder's test split)")
    unknown = sorted({s.defect_type for s in test_samples if not s.is_good and s.defect_type not in classes})
    if unknown:
        raise DataError(f"test set holds defect types {unknown} that the config does not name ({list(classes)}); add them to `classes`")


def ground_truth_boxes(sample: DefectSample, classes: Sequence[str], labelling: AssembleConfig | None = None) -> ImageBoxes:
    """A test sample's boxes, labelled from its mask as the training set was (`labelling`: the
    assemble config; default one per mask component); the sample's own boxes for box-only labels."""
    if sample.is_good:
        return ImageBoxes(np.zeros((0, 4)), np.zeros(0, int))
    boxes = (labelling or AssembleConfig()).label_boxes(sample.mask) if sample.mask.any() else np.asarray(sample.boxes).reshape(-1, 4)
    return ImageBoxes(boxes, np.full(len(boxes), classes.index(sample.defect_type)))


def finetune(dataset: AssembledDataset, config: DownstreamConfig, run_dir: str | Path, *, if_exists: str = "resume") -> dict:
    """Train each model of `config.models` on `dataset`; returns {model: training record}."""
    run_dir = Path(run_dir)
    records: dict[str, Any] = {}
    if "deeplab" in config.models:
        from defectfill.downstream.deeplab import train_deeplab

        records["deeplab"] = train_deeplab(
            dataset.root, dataset.classes, config.deeplab, run_dir / "deeplab", seed=config.seed,
            if_exists="skip" if if_exists == "resume" else if_exists,
        )
    if "rtdetr" in config.models:
        from defectfill.downstream.rtdetr import train_rtdetr

        records["rtdetr"] = train_rtdetr(dataset.data_yaml, config.rtdetr, run_dir / "rtdetr", seed=config.seed, if_exists=if_exists)
    return records


def segboxes_scores(probabilities: Sequence[np.ndarray], test_samples: Sequence[DefectSample],
                    config: DownstreamConfig) -> dict:
    """Box scores of the segmenter's components (`downstream.segboxes`) on the test samples."""
    from defectfill.downstream.segboxes import boxes_from_probabilities

    predictions = [boxes_from_probabilities(p) for p in probabilities]
    truth = [ground_truth_boxes(s, config.classes, config.assemble) for s in test_samples]
    return {**detection_scores(truth, predictions, [s.size for s in test_samples], config.classes,
                               config.evaluation.score_threshold),
            **mask_coverage([s.mask for s in test_samples], predictions, config.evaluation.score_threshold),
            "source": "segmenter components"}


def evaluate_models(run_dir: str | Path, test_samples: Sequence[DefectSample], config: DownstreamConfig) -> dict:
    """Score the trained models of `run_dir` on real test samples."""
    run_dir = Path(run_dir)
    classes = config.classes
    _check_test(test_samples, classes)
    images = [s.image for s in test_samples]
    metrics: dict[str, Any] = {}
    if "deeplab" in config.models:
        from defectfill.downstream.deeplab import load_deeplab, predict_probabilities

        model, info = load_deeplab(run_dir / "deeplab")
        started = time.perf_counter()
        # the size it was trained at, whatever the evaluation config says
        probabilities = predict_probabilities(model, images, info["config"]["image_size"])
        targets = [class_map(s.mask, s.defect_type, classes) for s in test_samples]
        metrics["deeplab"] = {
            **segmentation_scores([p.argmax(0) for p in probabilities], targets, classes),
            "predict_seconds": time.perf_counter() - started,
            "train": {k: info[k] for k in ("best_epoch", "median_seconds_per_epoch", "seconds_per_epoch", "train_images", "device")},
            "arch": info["config"]["arch"],
        }
        if "segboxes" in config.models:
            metrics["segboxes"] = segboxes_scores(probabilities, test_samples, config)
    if "rtdetr" in config.models:
        from defectfill.downstream.rtdetr import DONE_NAME, predict_rtdetr

        record = json.loads((run_dir / "rtdetr" / DONE_NAME).read_text())
        started = time.perf_counter()
        predictions = predict_rtdetr(
            record["weights"], images, imgsz=record["config"]["imgsz"], conf=config.rtdetr.predict_conf, device=config.rtdetr.device
        )
        truth = [ground_truth_boxes(s, classes, config.assemble) for s in test_samples]
        metrics["rtdetr"] = {
            **detection_scores(truth, predictions, [s.size for s in test_samples], classes, config.evaluation.score_threshold),
            **mask_coverage([s.mask for s in test_samples], predictions, config.evaluation.score_threshold),
            "predict_seconds": time.perf_counter() - started,
            "train": {k: record[k] for k in ("median_seconds_per_epoch", "seconds_per_epoch", "train_seconds")},
            "model": Path(record["config"]["model"]).name,
        }
    return metrics


def generation_metrics(
    dataset: AssembledDataset, test_samples: Sequence[DefectSample], config: DownstreamConfig
) -> dict | None:
    """KID, IC-LPIPS and defect contrast of the synthetic defects used by this arm (None for a
    real-only arm).

    Crops: the square around each image's defect mask (changed pixels for generated images).
    KID: generated crops vs the real *test* defect crops, pooled over classes and per class where
    both sets have >= 2 crops. IC-LPIPS: per class, generated crops clustered on that class's real
    *training* defect crops (the references), then averaged over the classes that have a value.
    """
    from defectfill.data.images import load_image, load_mask
    from defectfill.generators.manifest import read_generation_manifest
    from defectfill.metrics import generation as gm

    manifests = [s["path"] for s in dataset.recipe["sources"] if s["kind"] == "generated"]
    if not manifests:
        return None
    generated: list[tuple[str, np.ndarray]] = []
    contrasts: dict[str, dict[str, list[float]]] = {"generated": {}, "real_test": {}}
    for folder in manifests:
        for item in read_generation_manifest(folder):
            image, changed = item.load()
            if (crop := gm.defect_crop(image, changed)) is not None:
                generated.append((item.defect_type, crop))
            # inside the request only: a wrapper may add real defects already in the image to the label
            generated_part = changed & load_mask(item.request_mask, shape=changed.shape)
            if (value := gm.defect_contrast(image, generated_part)) is not None:
                contrasts["generated"].setdefault(item.defect_type, []).append(value)
    real_test: list[tuple[str, np.ndarray]] = []
    for s in (s for s in test_samples if not s.is_good):
        if (crop := gm.defect_crop(s.image, s.mask)) is not None:
            real_test.append((s.defect_type, crop))
        if (value := gm.defect_contrast(s.image, s.mask)) is not None:
            contrasts["real_test"].setdefault(s.defect_type, []).append(value)
    references: list[tuple[str, np.ndarray]] = []
    for row in (json.loads(line) for line in (dataset.root / "index.jsonl").read_text().splitlines()):
        if row["origin"] == "real" and row["split"] == "train" and row["defect_type"] != "good":
            image_path = dataset.root / row["file"]
            mask = load_mask(dataset.root / "masks" / "train" / image_path.name)
            if (crop := gm.defect_crop(load_image(image_path), mask)) is not None:
                references.append((row["defect_type"], crop))
    evaluation = config.evaluation
    extractor = (
        gm.inception_feature_extractor() if evaluation.feature_extractor == "inception" else gm.random_conv_feature_extractor(config.seed)
    )
    result: dict[str, Any] = {"generated_crops": len(generated), "real_test_crops": len(real_test), "reference_crops": len(references)}

    # features once per crop, then KID pooled and per class
    fake_features = extractor([c for _, c in generated]) if generated else np.zeros((0, 1))
    real_features = extractor([c for _, c in real_test]) if real_test else np.zeros((0, 1))
    fake_types = np.array([t for t, _ in generated])
    real_types = np.array([t for t, _ in real_test])

    def kid_of(real_rows: np.ndarray, fake_rows: np.ndarray) -> dict:
        if min(len(real_rows), len(fake_rows)) < 2:
            return {"kid_x1000": None, "note": f"needs >= 2 crops per set, found {len(real_rows)} real, {len(fake_rows)} generated"}
        return gm.kid_from_features(real_rows, fake_rows, num_subsets=evaluation.kid_subsets, seed=config.seed)

    result["kid"] = {**kid_of(real_features, fake_features), "feature_extractor": extractor.name}
    result["kid_per_class"] = {
        t: kid_of(real_features[real_types == t], fake_features[fake_types == t]) for t in config.classes
    }
    network = gm.lpips_network(evaluation.lpips_net, input_size=evaluation.lpips_size)
    per_class = {}
    for t in config.classes:
        fakes = [c for kind, c in generated if kind == t]
        refs = [c for kind, c in references if kind == t]
        per_class[t] = gm.ic_lpips(fakes, refs, network) if fakes and refs else {"ic_lpips": None}
    values = [v["ic_lpips"] for v in per_class.values() if v["ic_lpips"] is not None]
    result["ic_lpips"] = {
        "ic_lpips": float(np.mean(values)) if values else None,
        "definition": "per class, then the mean over classes with a value",
        "lpips_network": network.name,
    }
    result["ic_lpips_per_class"] = per_class
    medians = {kind: {t: float(np.median(v)) for t, v in sorted(per_type.items())} for kind, per_type in contrasts.items()}
    gaps = [abs(value - medians["real_test"][t]) for t, value in medians["generated"].items() if t in medians["real_test"]]
    result["contrast"] = {
        "definition": "median per class of (mean grey in the defect mask - mean grey of a 2-6 px ring around it), "
                      "0-255; generated: changed pixels inside the request; gap: mean over classes of "
                      "|generated - real test|",
        **medians,
        "gap": float(np.mean(gaps)) if gaps else None,
    }
    return result


def evaluate_arm(
    name: str, dataset: AssembledDataset, run_dir: str | Path, test_samples: Sequence[DefectSample], config: DownstreamConfig
) -> dict:
    """The results of a trained arm (what results.json holds), without writing them."""
    results = {
        "arm": name,
        "dataset": {k: dataset.recipe[k] for k in ("train_images", "ratio_real_to_synthetic", "counts", "dropped", "sources")},
        "dataset_dir": str(Path(dataset.root).resolve()),
        "test_images": len(test_samples),
        "test_defect_images": sum(not s.is_good for s in test_samples),
        **evaluate_models(run_dir, test_samples, config),
    }
    if config.evaluation.generation_metrics:
        results["generation"] = generation_metrics(dataset, test_samples, config)
    results["config"] = to_dict(config)
    return results


def run_arm(
    name: str,
    train: str | Path | Sequence[DefectSample],
    test_samples: Sequence[DefectSample],
    config: DownstreamConfig,
    out_dir: str | Path,
    *,
    manifests: Sequence[str | Path] = (),
) -> dict:
    """Assemble (unless `train` is an assembled folder), fine-tune, evaluate; returns results.json's content.

    train: an assembled dataset folder, an MVTec category folder (train split read), or samples.
    manifests: generation folders to add (ignored when `train` is already assembled).
    """
    arm_dir = Path(out_dir) / name
    results_path = arm_dir / RESULTS_NAME
    if results_path.is_file():
        return json.loads(results_path.read_text())
    started = time.perf_counter()
    if isinstance(train, (str, Path)) and (Path(train) / "recipe.json").is_file():
        dataset = load_assembled(train)
    elif (arm_dir / "data" / "recipe.json").is_file():
        dataset = load_assembled(arm_dir / "data")
    else:
        dataset = assemble(train, manifests, arm_dir / "data", config.classes, config.assemble, seed=config.seed)
    if list(dataset.classes) != list(config.classes):
        raise DataError(f"{dataset.root}: assembled for classes {dataset.classes}, config names {config.classes}; re-assemble")
    finetune(dataset, config, arm_dir)
    results = evaluate_arm(name, dataset, arm_dir, test_samples, config)
    results["wall_seconds"] = time.perf_counter() - started
    atomic_write_json(results_path, results)
    return results
