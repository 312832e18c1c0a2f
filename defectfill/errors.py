"""The project's error types.

Every error says what was found, what was expected, and how to fix it, and names the file or
argument involved. Catch `DefectfillError` to catch them all.
"""

from __future__ import annotations


class DefectfillError(Exception):
    """Base class of every error raised on purpose by defectfill."""


class ConfigError(DefectfillError, ValueError):
    """A config file or argument is invalid (unknown key, wrong type, bad value)."""


class DataError(DefectfillError, ValueError):
    """An input image, mask, label file or dataset layout is invalid."""


class ModelError(DefectfillError, ValueError):
    """A model folder or checkpoint is missing, incomplete, corrupted or unsafe."""


class GenerationError(DefectfillError, ValueError):
    """A generation request cannot be served (unknown defect type, bad mask, k < 1, ...)."""


class HubError(DefectfillError, RuntimeError):
    """A Hugging Face Hub operation failed."""


class LockError(DefectfillError, RuntimeError):
    """Another run holds the output folder (its lock file names the process and the host)."""
