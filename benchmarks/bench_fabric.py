"""Fabric simulator throughput on one core: images per second at 256 px.

Renders every texture, good and with each defect type, after a warm-up; reports the median over
repeats of a batch's CPU time (process time, robust to other jobs sharing the machine) and wall
time. Run: `.venv/bin/python benchmarks/bench_fabric.py [--size 256] [--repeats 5]`.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core: no BLAS/OpenMP threads
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import statistics
import time

from defectfill.data.fabric import DEFECT_TYPES, TEXTURES, render_fabric, render_sample


def _batch(kind: str, size: int, seed0: int) -> int:
    n = 0
    for k, texture in enumerate(TEXTURES):
        if kind == "good":
            render_fabric(texture, seed0 + k, size)
            n += 1
        else:
            for d, defect in enumerate(DEFECT_TYPES):
                render_sample(texture, defect, seed0 + 100 * k + d, size)
                n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for kind in ("good", "defect"):
        _batch(kind, args.size, 10_000)  # warm-up: imports, caches, first-call costs
        cpu, wall = [], []
        for r in range(args.repeats):
            c0, w0 = time.process_time(), time.perf_counter()
            n = _batch(kind, args.size, r * 1000)
            cpu.append(n / (time.process_time() - c0))
            wall.append(n / (time.perf_counter() - w0))
        print(
            f"{kind:6s} {args.size}px: {statistics.median(cpu):6.1f} img/s per CPU-second (median of {args.repeats}), "
            f"{statistics.median(wall):6.1f} img/s wall ({n} images per repeat)"
        )


if __name__ == "__main__":
    main()
