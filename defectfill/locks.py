"""One run per output folder: a lock file that a second run sees, and a dead run's lock is taken over.

    with output_lock(out_dir, command="generate"):
        ...  # write into out_dir

`output_lock` creates `<folder>/.defectfill.lock` with O_EXCL, holding {"pid", "host", "start_ticks",
"started", "command"}. A second run on the same folder raises `LockError` naming the holder and the fix.
A lock whose process is gone (same host, pid not running, or a pid reused by another process: its
start time differs) is stale: it is taken over, and the temporary files the dead run left half-written
are removed (`io_utils.remove_stale_temp_files`). A lock of another host is never presumed stale.

In a multi-process run (`accelerate launch`, torchrun: RANK > 0) only rank 0 takes the lock; the other
ranks write under it. The same process may nest `output_lock` on one folder (the bench calling the
generation runner). On exit the lock is removed, and so are the folders that taking the lock created
if the run left them empty: a run refused for bad input leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from defectfill.errors import LockError
from defectfill.io_utils import file_mode, remove_stale_temp_files

LOCK_NAME = ".defectfill.lock"
EMPTY_LOCK_GRACE_S = 5.0  # a lock file still empty after this long was left by a run killed while creating it

_held: dict[Path, int] = {}  # lock path -> nesting depth, in this process


def _start_ticks(pid: int) -> int | None:
    """The process start time in clock ticks since boot (Linux), to tell a reused pid from the holder."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def secondary_rank() -> bool:
    """True in a non-zero rank of a multi-process launch (RANK / LOCAL_RANK set by accelerate, torchrun)."""
    for var in ("RANK", "LOCAL_RANK"):
        value = os.environ.get(var, "")
        if value.strip().isdigit():
            return int(value) > 0
    return False


def read_lock(lock: Path) -> dict[str, Any] | None:
    """The holder recorded in `lock` (None for an empty or garbled file)."""
    try:
        info = json.loads(lock.read_text())
        return info if isinstance(info, dict) else None
    except (OSError, ValueError):
        return None


def is_stale(lock: Path) -> bool:
    """Whether `lock` was left by a run that is no longer running (decidable only on the same host)."""
    info = read_lock(lock)
    if info is None:
        try:
            return time.time() - lock.stat().st_mtime > EMPTY_LOCK_GRACE_S
        except FileNotFoundError:
            return True
    if info.get("host") != socket.gethostname():
        return False
    pid = int(info.get("pid", -1))
    if pid <= 0 or not pid_alive(pid):
        return True
    ticks = info.get("start_ticks")
    return ticks is not None and _start_ticks(pid) not in (None, ticks)


def _describe(lock: Path) -> str:
    info = read_lock(lock) or {}
    return (f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, started {info.get('started', '?')}"
            + (f", running {info['command']!r}" if info.get("command") else ""))


def _acquire(lock: Path, command: str) -> bool:
    """Create `lock` for this process; returns whether a stale lock was taken over."""
    took_over = False
    for _ in range(5):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, file_mode())
        except FileExistsError:
            if not is_stale(lock):
                raise LockError(
                    f"{lock.parent}: another run is writing into this folder ({_describe(lock)}; lock file {lock}); "
                    f"wait for it to finish or pass another output folder. If that run is gone (e.g. its machine "
                    f"rebooted), delete {lock}") from None
            lock.unlink(missing_ok=True)
            took_over = True
            continue
        info = {"pid": os.getpid(), "host": socket.gethostname(), "start_ticks": _start_ticks(os.getpid()),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command}
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(info) + "\n")
        return took_over
    raise LockError(f"{lock}: could not take the lock (it keeps reappearing); another run is starting here")


def _missing_folders(folder: Path) -> list[Path]:
    """`folder` and those of its parents that do not exist yet, deepest first."""
    missing = []
    for path in [folder, *folder.parents]:
        if path.exists():
            break
        missing.append(path)
    return missing


@contextmanager
def output_lock(folder: str | Path, command: str = "", rank: int | None = None) -> Iterator[Path]:
    """Hold `<folder>/.defectfill.lock` for the duration of the block (see the module docstring).

    rank: this process's rank in a multi-process run (default: from $RANK / $LOCAL_RANK); only rank 0 locks.
    """
    folder = Path(folder)
    if (rank > 0) if rank is not None else secondary_rank():
        yield folder
        return
    lock = (folder / LOCK_NAME).absolute()
    if lock in _held:
        _held[lock] += 1
        try:
            yield folder
        finally:
            _held[lock] -= 1
        return
    created = _missing_folders(folder.absolute())
    folder.mkdir(parents=True, exist_ok=True)
    started = time.time()
    try:
        took_over = _acquire(lock, command)
    except BaseException:
        _remove_empty(created)
        raise
    _held[lock] = 1
    try:
        if took_over:
            remove_stale_temp_files(folder, older_than=started)
        yield folder
    finally:
        del _held[lock]
        if (read_lock(lock) or {}).get("pid") == os.getpid():
            lock.unlink(missing_ok=True)
        _remove_empty(created)


def _remove_empty(folders: list[Path]) -> None:
    for path in folders:  # deepest first
        try:
            path.rmdir()
        except OSError:
            return
