"""accelerate's process-wide state, used the same way by every training loop and the generation runner."""

from __future__ import annotations

import os
from typing import Any


def accelerate_state():
    """accelerate's PartialState; on a machine without CUDA (or with ACCELERATE_USE_CPU) in CPU mode,
    so that processes started by `accelerate launch` / `debug_launcher` form a MULTI_CPU group
    (without cpu=True accelerate sees one process per rank, and every rank would do all the work)."""
    import torch
    from accelerate import PartialState

    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()
    return PartialState(cpu=use_cpu)


def resolve_device(device: str) -> str:
    """'auto' (what the bench and the real-data run pass) -> 'cuda' when there is one, else 'cpu'."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def new_accelerator(**kwargs: Any):
    """`accelerate.Accelerator(**kwargs)` in a process that may have trained before: accelerate keeps
    the precision in a process-wide singleton, and a second training (the demo, the bench, tests) may
    ask for another one. The process group (PartialState) stays."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    return Accelerator(**kwargs)
