"""`GeneratorContext`: everything a generator's builder may use to train itself.

The runner (`defectfill generate --train-data`, the bench, the real-data runs) fills one context
per generator and calls the registered builder once; the builder trains (cached and resumable in
`work_dir`) and returns a `DefectGenerator`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from defectfill.data.sample import DefectSample


@dataclass
class GeneratorContext:
    """What a builder gets.

    name: the registered generator name.
    source_defects: the few labelled real defects (other fabrics): `.image` (H, W, 3) uint8,
        `.mask` (H, W) bool, `.defect_type`; good samples may be among them (`.is_good`).
    target_good: good images of the new fabric (what the defects will go into).
    defect_types: the types to learn (each must have at least one source defect).
    work_dir: the generator's own folder; a builder saves its trained model here, and a rerun that
        finds a complete model loads it instead of training again.
    options: an instance of the plug-in's options dataclass.
    source_dir / source_layout: the folder the source defects were read from and its reader layout,
        when they came from one (a builder that trains from files may use it as it is).
    config_dir: where relative paths in the options are looked up first (the YAML's folder).
    notes: warnings for the report (a builder appends; the runner shows them).
    """

    name: str
    source_defects: list[DefectSample]
    target_good: list[Path]
    defect_types: list[str]
    work_dir: Path
    options: Any = None
    seed: int = 0
    device: str = "cpu"
    source_dir: Path | None = None
    source_layout: str | None = None
    config_dir: Path | None = None
    notes: list[str] = field(default_factory=list)

    def defects_of(self, defect_type: str) -> list[DefectSample]:
        return [s for s in self.source_defects if s.defect_type == defect_type and s.mask.any()]
