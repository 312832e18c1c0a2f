"""defectfill: few-shot fabric-defect synthesis and the detectors trained on it.

Heavy submodules (diffusers, ultralytics) are imported lazily so that `import defectfill`
and `defectfill --help` stay fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "DefectFill": "defectfill.models.defectfill",
    "GenerationResult": "defectfill.generators.interface",
    "DefectGenerator": "defectfill.generators.interface",
    "DefectSample": "defectfill.data.sample",
    "DefectfillError": "defectfill.errors",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'defectfill' has no attribute {name!r}")


__all__ = ["DefectFill", "DefectGenerator", "DefectSample", "DefectfillError", "GenerationResult", "__version__"]
