"""Atomic file writing and the JSONL manifest used by every long job.

Nothing is ever half-written: each writer writes to a temporary file in the target folder and
renames it over the target (atomic on POSIX). Manifests are append-only JSON lines; a job that
restarts reads the manifest and skips what it already holds.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success rename it to `target`.

    The temporary name keeps the target's suffix so that writers that infer the format from the
    suffix (PIL, cv2, safetensors) keep working.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | Path, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: str | Path, obj: Any) -> None:
    atomic_write_text(target, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save(target: str | Path, save: Callable[[Path], None]) -> None:
    """Call `save(tmp_path)` and rename the result to `target` (for PIL/cv2/safetensors writers)."""
    with atomic_path(target) as tmp:
        save(tmp)


def load_safetensors(path: str | Path, fix: str, kind: str = "safetensors file") -> dict:
    """The tensors of a safetensors file; a missing or damaged file raises ModelError naming the
    file and `fix` (what the user should do about it, in the caller's words)."""
    from safetensors.torch import load_file

    from defectfill.errors import ModelError

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: missing; {fix}")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for truncated/garbled files
        raise ModelError(f"{path}: corrupted {kind} ({type(exc).__name__}: {exc}); {fix}") from exc


class Manifest:
    """Append-only JSONL manifest: one record (dict) per finished unit of work.

    `key` names the field that identifies a unit (e.g. "image"); `done(key)` tells a resumed job
    what to skip. Each record is appended with flush + fsync, so a killed job loses at most the
    unit in progress; a trailing partial line (killed mid-write) is ignored on read.
    """

    def __init__(self, path: str | Path, key: str = "id"):
        self.path = Path(path)
        self.key = key
        self.records: list[dict[str, Any]] = []
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                line = line.strip()
                if not line:
                    continue
                try:
                    self.records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # partial last line of a killed run
        self._keys = {str(r.get(self.key)) for r in self.records}

    def done(self, key: Any) -> bool:
        return str(key) in self._keys

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records.append(record)
        self._keys.add(str(record.get(self.key)))

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    return list(Manifest(path).records)
