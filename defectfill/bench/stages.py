"""Seconds per bench stage, kept across resumed runs (`stages.jsonl`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from defectfill.io_utils import Manifest


class StageLog:
    """Seconds per stage, kept across resumed runs (`stages.jsonl`); `ran` lists this run's stages.

    A stage runs from `mark()` (or the previous record) to `record(stage)`. Each record holds the
    wall-clock seconds and the CPU seconds of this process (all threads): on a shared machine the
    wall clock says little, the CPU time stays comparable (an idle 2-core machine runs the stage
    in between cpu/2 and cpu seconds)."""

    def __init__(self, path: Path):
        self.manifest = Manifest(path, key="stage")
        self.ran: list[str] = []
        self.mark()

    def mark(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def done(self, stage: str) -> bool:
        return self.manifest.done(stage)

    def record(self, stage: str, **extra: Any) -> None:
        wall, cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu
        self.ran.append(stage)
        self.manifest.append({"stage": stage, "seconds": round(wall, 3), "cpu_seconds": round(cpu, 3), **extra})
        self.mark()

    def seconds(self, key: str = "seconds") -> dict[str, float]:
        """{stage: seconds} (key "seconds": wall clock, "cpu_seconds": CPU); the last record wins."""
        out: dict[str, float] = {}
        for record in self.manifest:
            if key in record:
                out[record["stage"]] = record[key]
        return out
