"""Safe loading: files named by a data file stay inside its root; pickles are refused unopened.

- `path_inside(root, name, source=...)`: the file a manifest line or a COCO `file_name` names,
  refused (`DataError`) when it leaves the folder it belongs to: `../` components, an absolute
  path elsewhere, or a symlink that points out (the resolved path is checked).
- `sniff_pickle(path)`: whether a file is a Python pickle or a `torch.save` zip (which holds one),
  from its first bytes only; `refuse_pickle(path, fix)` raises `ModelError` for one. The project's
  weights are safetensors; a pickle passed where weights are expected is refused without being
  unpickled (unpickling can run any code).

Third-party formats that only exist as pickles are read with `torch.load(..., weights_only=True)`
(accelerate's optimizer/scheduler/RNG state in DefectFill checkpoints, diffusers/transformers `.bin`
fallbacks, torchvision's DeepLab backbone). ultralytics' own `.pt` checkpoints (RT-DETR) are the one
exception to safetensors, loaded by ultralytics itself, restricted (weights_only + its allow-list) by
`ULTRALYTICS_SAFE_LOAD=1`, which `defectfill.env.offline_env` sets (see docs/DEVELOPING.md).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from defectfill.errors import DataError, ModelError

PICKLE_PROTOCOL_BYTE = b"\x80"  # every pickle of protocol >= 2 starts with PROTO


def path_inside(root: str | Path, name: str | Path, *, source: str | Path, what: str = "path") -> Path:
    """`root / name`, refused when it resolves outside `root` (`..`, absolute elsewhere, symlink out)."""
    return check_inside(Path(root) / name, [root], source=source, what=what, name=name)


def check_inside(path: str | Path, roots, *, source: str | Path, what: str = "path", name: str | Path | None = None) -> Path:
    """`path` itself, refused (DataError) unless it resolves inside one of `roots`."""
    path = Path(path)
    real = path.resolve()
    for root in roots:
        real_root = Path(root).resolve()
        if real == real_root or real_root in real.parents:
            return path
    root = Path(next(iter(roots)))
    raise DataError(
        f"{source}: {what} {str(name if name is not None else path)!r} points outside {root} (to {real}); a data "
        f"file may only name files inside its own folder. Copy the file into {root} and use a relative path, or "
        f"remove the entry")


def sniff_pickle(path: str | Path) -> str | None:
    """'pickle' or 'torch.save zip' when the file holds a pickle (read from its header, never unpickled)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return None
    if head[:1] == PICKLE_PROTOCOL_BYTE and len(head) == 2 and 2 <= head[1] <= 5:
        return "pickle"
    if head == b"PK":
        try:
            with zipfile.ZipFile(path) as z:
                if any(n.endswith(".pkl") for n in z.namelist()):
                    return "torch.save zip"
        except (zipfile.BadZipFile, OSError):
            return None
    return None


def refuse_pickle(path: str | Path, fix: str) -> None:
    """Raise ModelError when `path` is a pickle; it is never unpickled."""
    kind = sniff_pickle(path)
    if kind is not None:
        raise ModelError(
            f"{path}: a {kind} file where safetensors weights are expected; refused without loading it "
            f"(unpickling can run code). {fix}")
