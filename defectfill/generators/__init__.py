"""Defect generators: the interface, what they share, the registry, requests and the runner.

    interface   DefectGenerator protocol and GenerationResult
    shared      request checks, the window around the mask, changed-pixel labels, results
    window      the generation window (crop at the model's resolution, paste back inside the mask)
    registry    name -> plug-in (built-in and entry points `defectfill.generators`)
    context     GeneratorContext: what a builder trains from
    requests    one request planner (which good image, which mask, which seed)
    manifest    the generation manifest (one writer, one reader)
    runner      one generation runner: requests -> images, labels, manifest (sharded, resumable)
"""

from defectfill.generators.context import GeneratorContext
from defectfill.generators.interface import DefectGenerator, GenerationResult
from defectfill.generators.registry import GeneratorPlugin, NoOptions

__all__ = ["DefectGenerator", "GenerationResult", "GeneratorContext", "GeneratorPlugin", "NoOptions"]
