"""The architecture's layers, checked on every module's imports: they only point down.

    4  ept.deploy        CLI, supervisor, demo, local broker, manifests
    3  ept.processors    worker, sink, storage (storage imports no other processor)
    2  ept               the SDK: tracker, delivery, measurement, integrations
    1  ept.core          settings, topic names, Kafka clients by role
    0  ept.schemas       the wire contract

and the worker's pure logic (:data:`PURE`) loads no I/O library, through any import.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
FOLDER_OF_PACKAGE = {"ept.schemas": "schemas", "ept.processors": "processors",
                     "ept.deploy": "deploy", "ept": "producers"}
STORAGE = "ept.processors.storage"
PURE = tuple(f"ept.processors.{name}" for name in (
    "alerting", "alert_notice", "collection", "durations", "evaluation", "event_time",
    "evidence", "judging", "records", "rules", "signals"))
IO_LIBRARIES = ("confluent_kafka", "faust", "aiohttp")


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


def source_of(module: str) -> str | None:
    """The source of ``module`` (an ``ept`` module or package); None for any other name."""
    package = next((name for name in sorted(FOLDER_OF_PACKAGE, key=len, reverse=True)
                    if module == name or module.startswith(name + ".")), None)
    if package is None:
        return None
    base = REPO / FOLDER_OF_PACKAGE[package] / Path(*module[len(package) + 1:].split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path.read_text()
    return None


def loaded_by_import(source: str) -> list[str]:
    """Every module importing ``source`` may load, at any depth (lazy imports too), with
    the packages above each: ``from a.b import c`` names ``a``, ``a.b`` and ``a.b.c``
    (which is a module or not). Imports only type checkers see are left out."""
    def walk(node: ast.AST) -> list[str]:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return [name for child in node.orelse for name in walk(child)]
        if isinstance(node, ast.Import):
            named = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            named = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            return [name for child in ast.iter_child_nodes(node) for name in walk(child)]
        parts = [name.split(".") for name in named]
        return [".".join(part[:n]) for part in parts for n in range(1, len(part) + 1)]

    return list(dict.fromkeys(walk(ast.parse(source))))


def io_loaded(module: str, source_of: Callable[[str], str | None] = source_of) -> list[str]:
    """The chains of imports by which ``module`` loads an I/O library, e.g.
    ``a -> b -> confluent_kafka``."""
    chains = {module: [module]}
    todo, found = [module], []
    while todo:
        importer = todo.pop()
        for imported in loaded_by_import(source_of(importer) or ""):
            chain = [*chains[importer], imported]
            if imported in IO_LIBRARIES:
                found.append(" -> ".join(chain))
            elif imported not in chains and source_of(imported) is not None:
                chains[imported] = chain
                todo.append(imported)
    return sorted(found)


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


def test_the_pure_logic_loads_no_io_library() -> None:
    found = [chain for module in PURE for chain in io_loaded(module)]
    assert not found, "pure logic that loads an I/O library:\n" + "\n".join(found)


def test_the_check_sees_io_loaded_through_other_modules() -> None:
    planted = {"ept.processors.alerting": "def f():\n    from ept.processors.alert_topic "
                                          "import AlertNotice\n",
               "ept.processors.alert_topic": "from ept.core.compacted import read_topic\n",
               "ept.core.compacted": "import typing\nimport confluent_kafka.admin\n",
               "ept.processors": "", "ept.core": "", "ept": ""}
    assert io_loaded("ept.processors.alerting", planted.get) == [
        "ept.processors.alerting -> ept.processors.alert_topic -> ept.core.compacted"
        " -> confluent_kafka"]
    only_typed = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import faust\n"
    assert io_loaded("m", {"m": only_typed}.get) == []
    assert io_loaded("m", {"m": "import aiohttp.web"}.get) == ["m -> aiohttp"]
