"""The console of `generate`, `train` and `make demo` holds progress and results, not library warnings
raised by the project's own calls (diffusers' `torch_dtype` deprecation; "modules that should be kept
in float32: []" from casting a diffusers model with `.to(dtype)`)."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
from helpers_defectfill_training import make_base_model, make_mvtec_dataset, single_torch_thread, tiny_config  # noqa: F401

pytestmark = pytest.mark.usefixtures("single_torch_thread")

LIBRARY_NOISE = ("torch_dtype", "should be kept in float32")


@pytest.fixture
def library_log():
    """Every record the diffusers / transformers loggers emit (they print through their own handlers)."""
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Keep(level=logging.DEBUG)
    loggers = [logging.getLogger(name) for name in ("diffusers", "transformers")]
    for logger in loggers:
        logger.addHandler(handler)
    yield records
    for logger in loggers:
        logger.removeHandler(handler)


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    return make_base_model(tmp_path_factory.mktemp("base") / "tiny-inpaint")


def test_base_pipeline_loads_without_library_warnings(base_model, library_log):
    from defectfill.models.defectfill import load_base_pipeline

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe = load_base_pipeline(base_model, dtype=torch.float32)
    assert pipe.unet.dtype == torch.float32
    raised = [str(w.message) for w in caught if any(n in str(w.message) for n in LIBRARY_NOISE)]
    assert raised == []
    assert not [m for m in library_log if any(n in m for n in LIBRARY_NOISE)]


@pytest.mark.parametrize("precision, frozen", [("no", torch.float32), ("bf16", torch.bfloat16)])
def test_trainer_setup_prints_no_library_warnings(base_model, tmp_path, library_log, precision, frozen):
    from defectfill.training import DefectFillTrainer

    data = make_mvtec_dataset(tmp_path / "data", {"stain": 2})
    trainer = DefectFillTrainer(tiny_config(base_model, data, tmp_path / "out", mixed_precision=precision))
    assert trainer.models.unet.dtype == frozen and next(trainer.models.vae.parameters()).dtype == frozen
    assert not [m for m in library_log if any(n in m for n in LIBRARY_NOISE)]
