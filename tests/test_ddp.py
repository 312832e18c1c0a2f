"""DefectFill training with 2 processes (DDP over gloo on the CPU) through accelerate.

`accelerate.debug_launcher(fn, num_processes=2)` forks two processes with a real gloo process
group (MULTI_CPU). From a shell, the same run is
`accelerate launch --multi_gpu --num_processes 2 train_scripts/train_defectfill.py ... --cpu`
(`accelerate launch --num_processes 2 --cpu` silently runs ONE process).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers_defectfill_training import make_base_model, make_mvtec_dataset, tiny_config


def _worker(base: str, data: str, out: str, results: str) -> None:
    from accelerate.state import AcceleratorState, PartialState
    from safetensors.torch import save_file

    from defectfill.training import DefectFillTrainer

    # the forked child inherits the pytest process's accelerate singletons: start from a clean state
    AcceleratorState._reset_state(True)
    PartialState._reset_state()

    class RecordingTrainer(DefectFillTrainer):
        """Records which stream positions (draws) this process trained on."""

        def training_step(self, batch, micro_step):
            self.draws.extend(int(d) for d in batch["draw"])
            return super().training_step(batch, micro_step)

    config = tiny_config(Path(base), Path(data), Path(out), max_train_steps=2, checkpointing_steps=100)
    trainer = RecordingTrainer(config)
    trainer.draws = []
    trainer.train()
    acc = trainer.accelerator
    unet, te = trainer.models.unet, trainer.models.text_encoder
    state = {f"unet.{n}": p.detach().cpu().contiguous() for n, p in unet.named_parameters() if p.requires_grad}
    state.update({f"te.{n}": p.detach().cpu().contiguous() for n, p in te.named_parameters() if "lora_" in n})
    state["rows"] = te.module.get_input_embeddings().weight[trainer.tokens.ids].detach().cpu().contiguous()
    rank = acc.process_index
    save_file(state, f"{results}/rank{rank}.safetensors")
    Path(f"{results}/rank{rank}.json").write_text(json.dumps({
        "draws": trainer.draws, "num_processes": acc.num_processes,
        "distributed_type": str(acc.distributed_type), "backend": torch.distributed.get_backend(),
    }))


@pytest.mark.slow
def test_two_process_training_sees_different_data_and_ends_identical(tmp_path):
    from accelerate import debug_launcher
    from safetensors.torch import load_file

    base = make_base_model(tmp_path / "base")
    data = make_mvtec_dataset(tmp_path / "data", {"stain": 3, "broken_end": 2})
    results = tmp_path / "results"
    results.mkdir()
    debug_launcher(_worker, args=(str(base), str(data), str(tmp_path / "out"), str(results)), num_processes=2)
    info = [json.loads((results / f"rank{r}.json").read_text()) for r in (0, 1)]
    for record in info:
        assert record["num_processes"] == 2
        assert "MULTI_CPU" in record["distributed_type"] and record["backend"] == "gloo"
        assert len(record["draws"]) == 2 * 2  # 2 steps x batch 2
    assert not set(info[0]["draws"]) & set(info[1]["draws"]), "both ranks trained on the same draws"
    w0, w1 = load_file(str(results / "rank0.safetensors")), load_file(str(results / "rank1.safetensors"))
    assert w0.keys() == w1.keys() and len(w0) > 10
    for key in w0:
        assert torch.equal(w0[key], w1[key]), f"{key} differs between the ranks"
    assert any(float(v.abs().sum()) > 0 for k, v in w0.items() if "lora_B" in k), "no training happened"
    assert (tmp_path / "out" / "defectfill.json").is_file()  # written once, by the main process
