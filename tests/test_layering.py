"""The package layering, as a check: import-linter's contracts (pyproject.toml [tool.importlinter]),
no import cycle between modules, no private name imported across packages, no train_scripts import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run([str(lint), "--no-cache", "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, check=False,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout and "5 kept" in run.stdout


def _graph():
    return grimp.build_graph("defectfill", "gan_baselines", include_external_packages=True, cache_dir=None)


def test_no_import_cycles_between_modules():
    graph = _graph()
    internal = [m for m in graph.modules if m.split(".")[0] in ("defectfill", "gan_baselines")]
    cycles = set()
    for importer in internal:
        for imported in graph.find_modules_directly_imported_by(importer):
            if imported.split(".")[0] not in ("defectfill", "gan_baselines"):
                continue
            # a package's __init__ importing its own submodules is not a cycle of concepts
            if imported.startswith(importer + ".") or importer.startswith(imported + "."):
                continue
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back:
                cycles.add(" -> ".join([importer, *back]))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles))


def test_the_library_never_imports_train_scripts():
    graph = _graph()
    assert not [m for m in graph.modules if m.split(".")[0] == "train_scripts"]


def test_no_private_names_imported_across_packages():
    """`from a.b import _x` only inside package a (tests may reach in; the library may not)."""
    found = []
    for path in [*(ROOT / "defectfill").rglob("*.py"), *(ROOT / "gan_baselines").rglob("*.py")]:
        package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:2])
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(("defectfill", "gan_")):
                source_package = ".".join(node.module.split(".")[:2])
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private and source_package != package:
                    found.append(f"{path.relative_to(ROOT)}: from {node.module} import {private}")
    assert not found, "\n".join(found)
