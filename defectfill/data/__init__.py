"""Data: the fabric simulator, image/mask loading with validation, dataset readers and writers.

Submodules: `sample` (the DefectSample record), `images` (validated image/mask I/O), `fabric`
(procedural simulator), `readers` / `writers` (MVTec-AD, image+mask folders, COCO, YOLO, AITEX).
"""

from defectfill.data.sample import DefectSample

__all__ = ["DefectSample"]
