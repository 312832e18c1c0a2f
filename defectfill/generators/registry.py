"""The generator registry: name -> plug-in, found lazily (like `defectfill.cli.COMMANDS`).

A plug-in is a `GeneratorPlugin` object in some module: how to build (train) the generator from a
`GeneratorContext`, its typed options, and optionally how to load a trained model folder.
Built-in plug-ins are listed in `BUILTIN_GENERATORS` as "module:attribute" and imported only when
used. Third-party packages add theirs without editing this repository, through the entry-point group
`defectfill.generators` in their own pyproject.toml:

    [project.entry-points."defectfill.generators"]
    mygan = "mypackage.mygan:PLUGIN"

    # mypackage/mygan.py
    from defectfill.generators import GeneratorPlugin
    PLUGIN = GeneratorPlugin(build=build_mygan, options=MyGANOptions, help="my GAN")

Errors (all before anything is written): an unknown name lists the registered ones; an option that
does not exist lists the valid ones; an entry point that fails to import is named with its
distribution; two plug-ins registering one name are both named.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from defectfill.config import from_dict
from defectfill.errors import ConfigError, ModelError
from defectfill.generators.context import GeneratorContext

ENTRY_POINT_GROUP = "defectfill.generators"

# name -> "module:attribute" of its GeneratorPlugin; imported only when the generator is used
BUILTIN_GENERATORS: dict[str, str] = {
    "cutpaste": "gan_baselines.cutpaste:PLUGIN",
    "cutpaste_poisson": "gan_baselines.cutpaste:POISSON_PLUGIN",
    "defectfill": "defectfill.models.plugin:PLUGIN",
    "multistage": "gan_baselines.multistage.plugin:PLUGIN",
    "r3gan": "gan_baselines.r3gan.plugin:PLUGIN",
    "dgt": "gan_baselines.dgt.plugin:PLUGIN",
    "icpr20": "gan_baselines.icpr20.plugin:PLUGIN",
}


@dataclass(frozen=True)
class NoOptions:
    """A generator without options."""


@dataclass(frozen=True)
class GeneratorPlugin:
    """A generator as the registry knows it.

    build(ctx) -> a trained DefectGenerator (training cached and resumable in ctx.work_dir).
    options: its typed options dataclass (unknown keys rejected).
    load(folder, options, device) -> a generator from a trained model folder (None: it has none).
    check(options, config_dir, training) -> None, raising a DefectfillError for options that cannot
        work (a training config that does not load, an unknown metric), before anything runs;
        `training` says whether the generator will be trained (build) or only loaded.
    stale(work_dir, options, config_dir) -> whether what an earlier run built in work_dir must be
        redone (DefectFill: trained on the random fallback base, and the real base exists now).
    """

    build: Callable[[GeneratorContext], Any]
    options: type = NoOptions
    load: Callable[[Path, Any, str], Any] | None = None
    check: Callable[[Any, Path | None, bool], None] | None = None
    stale: Callable[[Path, Any, Path | None], bool] | None = None
    help: str = ""


def _entry_points() -> dict[str, list[metadata.EntryPoint]]:
    found: dict[str, list[metadata.EntryPoint]] = {}
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(entry.name, []).append(entry)
    return found


def _origin(entry: metadata.EntryPoint) -> str:
    dist = getattr(entry, "dist", None)
    name = f"{dist.name} {dist.version}" if dist is not None else "an unknown distribution"
    return f"entry point {entry.name!r} = {entry.value!r} of package {name}"


def registered_generators() -> dict[str, str]:
    """{name: where it comes from} for every generator, built-in and plug-in; raises ConfigError
    when two register one name."""
    out = {name: f"built-in {target}" for name, target in BUILTIN_GENERATORS.items()}
    clashes = []
    for name, entries in _entry_points().items():
        origins = ([out[name]] if name in out else []) + [_origin(e) for e in entries]
        # the same distribution seen twice on sys.path is one registration
        if len(set(origins)) > 1:
            clashes.append(f"{name!r} by {' and by '.join(sorted(set(origins)))}")
        out[name] = origins[0]
    if clashes:
        raise ConfigError(f"generator name(s) registered twice: {'; '.join(clashes)}. Uninstall one of the packages "
                          f"or rename its entry point in the group {ENTRY_POINT_GROUP!r}")
    return out


def available_generators() -> list[str]:
    return sorted(registered_generators())


def _check_plugin(plugin: Any, where: str) -> GeneratorPlugin:
    if not isinstance(plugin, GeneratorPlugin):
        raise ModelError(f"{where} is a {type(plugin).__name__}, not a defectfill.generators.GeneratorPlugin; "
                         "point the entry point at a GeneratorPlugin object")
    if not (isinstance(plugin.options, type) and dataclasses.is_dataclass(plugin.options)):
        raise ModelError(f"{where}: options must be a dataclass type, found {plugin.options!r}")
    return plugin


def get_plugin(name: str) -> GeneratorPlugin:
    """The plug-in registered as `name` (imported now)."""
    known = registered_generators()
    if name not in known:
        raise ConfigError(f"generator {name!r} is not registered; registered generators: {sorted(known)} "
                          f"(a package adds one through the entry-point group {ENTRY_POINT_GROUP!r})")
    if name in BUILTIN_GENERATORS:
        module, _, attribute = BUILTIN_GENERATORS[name].partition(":")
        return _check_plugin(getattr(importlib.import_module(module), attribute), f"built-in generator {name!r}")
    (entry,) = {e.value: e for e in _entry_points()[name]}.values()
    try:
        plugin = entry.load()
    except Exception as exc:  # any import failure of third-party code: name it and its package
        raise ModelError(f"generator {name!r}: {_origin(entry)} failed to import ({type(exc).__name__}: {exc}); "
                         "fix or reinstall that package, or uninstall it") from exc
    return _check_plugin(plugin, _origin(entry))


def parse_options(name: str, values: dict[str, Any] | None = None) -> Any:
    """The typed options of generator `name` from a mapping (unknown keys rejected with the valid list)."""
    plugin = get_plugin(name)
    return from_dict(plugin.options, dict(values or {}), where=f"options of generator {name!r}")


def check_options(name: str, values: Any = None, config_dir: Path | None = None, training: bool = True) -> Any:
    """Parse (when a mapping) and check generator `name`'s options before any work; returns them typed."""
    plugin = get_plugin(name)
    options = values if isinstance(values, plugin.options) else parse_options(name, values)
    if plugin.check is not None:
        plugin.check(options, config_dir, training)
    return options


def build_generator(ctx: GeneratorContext) -> Any:
    """Train (or load from `ctx.work_dir`) the generator `ctx.name` with its builder."""
    plugin = get_plugin(ctx.name)
    ctx.options = check_options(ctx.name, ctx.options, ctx.config_dir)
    missing = [t for t in ctx.defect_types if not ctx.defects_of(t)]
    if missing:
        raise ConfigError(f"generator {ctx.name!r}: no labelled source defect of type(s) {missing}; each type needs "
                          "at least one real defect with a mask")
    return plugin.build(ctx)


def load_generator(name: str, path: str | Path, options: Any = None, device: str = "cpu") -> Any:
    """A trained generator of `name` from its model folder `path` (the plug-in's `load`)."""
    plugin = get_plugin(name)
    if plugin.load is None:
        raise ConfigError(f"generator {name!r} has no trained-model folder to load; train it from real defects "
                          "instead (defectfill generate --train-data DIR)")
    if options is None or isinstance(options, dict):
        options = parse_options(name, options)
    return plugin.load(Path(path), options, device)
