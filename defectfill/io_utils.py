"""Atomic file writing and the JSONL manifest used by every long job.

Nothing is ever half-written: each writer writes to a temporary file in the target folder and
renames it over the target (atomic on POSIX). Manifests are append-only JSON lines; a job that
restarts reads the manifest and skips what it already holds.

Files get the modes an ordinary `open()` would give them (0666 & ~umask, folders 0777 & ~umask), not
`mkstemp`'s private 0600, so that a data set, a report or weights written by one user or container
can be read by a teammate. A job killed mid-write leaves only a hidden temporary file
(`.<stem>.<random>.tmp<suffix>`, `is_temp_file`); `remove_stale_temp_files` clears them when the
next run of the job takes the output folder's lock (`defectfill.locks.output_lock`).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def current_umask() -> int:
    """The process umask, read without changing it (Linux: /proc/self/status; elsewhere set and restore)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode `open()` gives a new file: 0666 & ~umask."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode `mkdir()` gives a new folder: 0777 & ~umask."""
    return 0o777 & ~current_umask()


def make_temp_dir(target: str | Path) -> Path:
    """A hidden temporary folder next to `target` (`.<name>.tmp-XXXX`) with the umask's mode, not 0700."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.chmod(tmp, dir_mode())
    return tmp


def apply_umask_modes(folder: str | Path) -> None:
    """Give `folder` and everything under it the umask's modes (writers such as safetensors' Rust code
    create 0600 files); used on a temporary folder before it is published."""
    folder = Path(folder)
    os.chmod(folder, dir_mode())
    for path in folder.rglob("*"):
        if not path.is_symlink():
            os.chmod(path, dir_mode() if path.is_dir() else file_mode())


_TEMP_NAME = re.compile(r"^\..+\.tmp(\.[^.]+)?$|^\..+\.tmp-[A-Za-z0-9_]+$|^\..+\.partial$")


def is_temp_file(path: str | Path) -> bool:
    """Whether `path` is the temporary file or folder of an unfinished atomic write."""
    return bool(_TEMP_NAME.match(Path(path).name))


def remove_stale_temp_files(folder: str | Path, older_than: float | None = None) -> list[Path]:
    """Delete the temporary files/folders of atomic writes under `folder` that a killed run left behind
    (only those modified before `older_than`, a time.time() value; default now). Returns them."""
    import shutil

    folder = Path(folder)
    if not folder.is_dir():
        return []
    cutoff = time.time() if older_than is None else older_than
    removed = []
    for path in sorted(folder.rglob(".*")):
        try:
            if not is_temp_file(path) or path.lstat().st_mtime >= cutoff:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
        except OSError:
            continue
    return removed


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success rename it to `target`.

    The temporary name keeps the target's suffix so that writers that infer the format from the
    suffix (PIL, cv2, safetensors) keep working.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    tmp_path = Path(tmp)
    try:
        os.fchmod(fd, file_mode())  # mkstemp makes 0600; a teammate must be able to read the result
        os.close(fd)
        yield tmp_path
        if tmp_path.exists():  # a writer that replaced the file (unlink + create) may have reset the mode
            os.chmod(tmp_path, file_mode())
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
    from defectfill.safe_load import refuse_pickle

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: missing; {fix}")
    refuse_pickle(path, fix)  # a pickle renamed .safetensors is refused from its header, never unpickled
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
        with open(self.path, "a+b") as f:
            line = json.dumps(record) + "\n"
            if f.tell() > 0:  # a killed run's partial last line: end it, so this record stays its own line
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    line = "\n" + line
            f.write(line.encode("utf-8"))
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
