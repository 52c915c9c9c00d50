"""The architecture's layers, checked on every module's imports: they only point down.

    4  ept.deploy        CLI, supervisor, demo, local broker, manifests
    3  ept.processors    worker, sink, storage (storage imports no other processor)
    2  ept               the SDK: tracker, delivery, measurement, integrations
    1  ept.core          settings, topic names, Kafka clients by role
    0  ept.schemas       the wire contract
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
FOLDER_OF_PACKAGE = {"ept.schemas": "schemas", "ept.processors": "processors",
                     "ept.deploy": "deploy", "ept": "producers"}
STORAGE = "ept.processors.storage"


def layer(module: str) -> int:
    for prefix, rank in (("ept.deploy", 4), ("ept.processors", 3), ("ept.core", 1),
                         ("ept.schemas", 0)):
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return 2


def module_name(path: Path) -> str:
    folder = path.relative_to(REPO).parts[0]
    package = next(name for name, dir_ in FOLDER_OF_PACKAGE.items() if dir_ == folder)
    parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def imports_of(source: str) -> list[tuple[int, str]]:
    """(line, module) of every absolute ``ept`` import, at any depth (lazy ones too)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return [(line, name) for line, name in found if name == "ept" or name.startswith("ept.")]


def violations(importer: str, source: str, where: str) -> list[str]:
    found = []
    for line, imported in imports_of(source):
        if layer(imported) > layer(importer):
            found.append(f"{where}:{line}: {importer} (layer {layer(importer)}) imports "
                         f"{imported} (layer {layer(imported)})")
        elif importer.startswith(STORAGE) and layer(imported) == 3 and not (
                imported.startswith(STORAGE)):
            found.append(f"{where}:{line}: storage imports {imported}")
    return found


def test_every_import_points_down() -> None:
    paths = [path for folder in FOLDER_OF_PACKAGE.values()
             for path in sorted((REPO / folder).rglob("*.py"))]
    assert len(paths) > 50
    found = [problem for path in paths for problem in
             violations(module_name(path), path.read_text(), str(path.relative_to(REPO)))]
    assert not found, "imports that point up a layer:\n" + "\n".join(found)


def test_the_check_sees_upward_imports() -> None:
    lazy = "def f():\n    from ept.processors.worker import create_app\n"
    assert violations("ept.tracker", lazy, "x.py") == [
        "x.py:2: ept.tracker (layer 2) imports ept.processors.worker (layer 3)"]
    assert violations("ept.core.settings", "import ept.tracker\n", "y.py")
    assert violations("ept.processors.storage.tables", "from ept.processors.sink import rows",
                      "z.py") == ["z.py:1: storage imports ept.processors.sink"]
    assert violations("ept.deploy.cli", "from ept.processors.worker import run_worker",
                      "c.py") == []
