"""DefectFill training with 2 processes (DDP over gloo on the CPU), launched as a user would.

The test runs `accelerate launch --multi_gpu --num_processes 2 tests/test_ddp.py ...`: this file is
also the worker script. With no GPU, accelerate goes through torchrun and the trainer's
`Accelerator(cpu=True)` gives MULTI_CPU with gloo (`accelerate launch --num_processes 2 --cpu`
silently runs ONE process). Fresh processes rather than `accelerate.debug_launcher`: that one
forks the pytest process, and a fork after torch's OpenMP pool has run can hang the children
(it did here, once the other tests had run first).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers_defectfill_training import make_base_model, make_mvtec_dataset, tiny_config

STEPS, BATCH = 2, 2


def _worker(base: str, data: str, out: str, results: str) -> None:
    from safetensors.torch import save_file

    from defectfill.training import DefectFillTrainer

    torch.set_num_threads(1)

    class RecordingTrainer(DefectFillTrainer):
        """Records which stream positions (draws) this process trained on."""

        def training_step(self, batch, micro_step):
            self.draws.extend(int(d) for d in batch["draw"])
            return super().training_step(batch, micro_step)

    config = tiny_config(Path(base), Path(data), Path(out), max_train_steps=STEPS, checkpointing_steps=100,
                         train_batch_size=BATCH)
    trainer = RecordingTrainer(config)
    trainer.draws = []
    backend = torch.distributed.get_backend()  # before train(): end_training() destroys the process group
    trainer.train()
    acc = trainer.accelerator
    unet, te = trainer.models.unet, trainer.models.text_encoder
    te_base = te.module if hasattr(te, "module") else te
    state = {f"unet.{n}": p.detach().cpu().contiguous() for n, p in unet.named_parameters() if p.requires_grad}
    state.update({f"te.{n}": p.detach().cpu().contiguous() for n, p in te.named_parameters() if "lora_" in n})
    state["rows"] = te_base.get_input_embeddings().weight[trainer.tokens.ids].detach().cpu().contiguous()
    rank = acc.process_index
    save_file(state, f"{results}/rank{rank}.safetensors")
    Path(f"{results}/rank{rank}.json").write_text(json.dumps({
        "draws": trainer.draws, "num_processes": acc.num_processes,
        "distributed_type": str(acc.distributed_type), "backend": backend,
    }))


@pytest.mark.slow
def test_two_process_training_sees_different_data_and_ends_identical(tmp_path):
    from safetensors.torch import load_file

    base = make_base_model(tmp_path / "base")
    data = make_mvtec_dataset(tmp_path / "data", {"stain": 3, "broken_end": 2})
    results = tmp_path / "results"
    results.mkdir()
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
               "29533", __file__, str(base), str(data), str(tmp_path / "out"), str(results)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=500, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    info = [json.loads((results / f"rank{r}.json").read_text()) for r in (0, 1)]
    for record in info:
        assert record["num_processes"] == 2
        assert "MULTI_CPU" in record["distributed_type"] and record["backend"] == "gloo"
        assert len(record["draws"]) == STEPS * BATCH
    assert not set(info[0]["draws"]) & set(info[1]["draws"]), "both ranks trained on the same draws"
    w0, w1 = load_file(str(results / "rank0.safetensors")), load_file(str(results / "rank1.safetensors"))
    assert w0.keys() == w1.keys() and len(w0) > 10
    for key in w0:
        assert torch.equal(w0[key], w1[key]), f"{key} differs between the ranks"
    assert any(float(v.abs().sum()) > 0 for k, v in w0.items() if "lora_B" in k), "no training happened"
    assert (tmp_path / "out" / "defectfill.json").is_file()  # written once, by the main process


if __name__ == "__main__":  # the worker, under `accelerate launch`
    _worker(*sys.argv[1:5])
