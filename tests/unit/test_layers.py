"""The architecture's layers, checked on every module's imports: they only point down.

    4  ept.deploy        CLI, supervisor, demo, local broker, manifests
    3  ept.processors    worker, sink, web; alerts and storage, which they share
    2  ept               the SDK: tracker, delivery, measurement, integrations
    1  ept.core          settings, topic names, Kafka clients by role
    0  ept.schemas       the wire contract

Within layer 3, worker, sink and web meet only through ``alerts``, ``storage`` and
``ept.core`` (:data:`MAY_IMPORT`); and the worker's pure logic (every module of
:data:`PURE_PACKAGE`) loads no I/O library, through any import.
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
PROCESSORS = "ept.processors"
# The components of layer 3, and those each may import: worker, sink and web never
# import one another; what they share is in alerts and storage, which import none of them.
MAY_IMPORT = {"worker": {"worker", "alerts", "storage"},
              "sink": {"sink", "alerts", "storage"},
              "web": {"web", "alerts", "storage"},
              "alerts": {"alerts"},
              "storage": {"storage"}}
# A process module composes the servers it runs: the sink process serves the web (query
# API, SQL endpoint, dashboard); the worker's /metrics takes the web's API token check.
PROCESS_SERVES_WEB = frozenset({"ept.processors.sink.service", "ept.processors.worker.service"})
PURE_PACKAGE = "ept.processors.worker.logic"
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


def component(module: str) -> str | None:
    """The component of layer 3 ``module`` belongs to (``worker`` for
    ``ept.processors.worker.logic.rules``); None for ``ept.processors`` itself."""
    parts = module.split(".")
    return parts[2] if len(parts) > 2 else None


def component_violation(importer: str, imported: str) -> str | None:
    """Why ``importer`` may not import ``imported`` (both of layer 3), or None."""
    mine, theirs = component(importer), component(imported)
    if theirs is None:
        return None  # the ``ept.processors`` package itself: nothing in it
    if mine not in MAY_IMPORT:
        return f"{importer} is in no component of ept.processors ({', '.join(MAY_IMPORT)})"
    if theirs in MAY_IMPORT[mine] or (theirs == "web" and importer in PROCESS_SERVES_WEB):
        return None
    return (f"{importer} ({mine}) imports {imported} ({theirs}): {mine} may import only "
            f"{', '.join(sorted(MAY_IMPORT[mine]))} of ept.processors (worker, sink and "
            f"web meet only through alerts, storage and ept.core)")


def violations(importer: str, source: str, where: str) -> list[str]:
    found = []
    for line, imported in imports_of(source):
        if layer(imported) > layer(importer):
            found.append(f"{where}:{line}: {importer} (layer {layer(importer)}) imports "
                         f"{imported} (layer {layer(imported)})")
        elif layer(importer) == layer(imported) == 3 and (
                why := component_violation(importer, imported)):
            found.append(f"{where}:{line}: {why}")
    return found


def pure_modules() -> list[str]:
    """Every module of :data:`PURE_PACKAGE`, the package itself included."""
    folder = REPO / "processors" / Path(*PURE_PACKAGE.split(".")[2:])
    return [module_name(path) for path in sorted(folder.rglob("*.py"))]


def test_every_import_points_down() -> None:
    paths = [path for folder in FOLDER_OF_PACKAGE.values()
             for path in sorted((REPO / folder).rglob("*.py"))]
    assert len(paths) > 50
    found = [problem for path in paths for problem in
             violations(module_name(path), path.read_text(), str(path.relative_to(REPO)))]
    assert not found, "imports that point up a layer:\n" + "\n".join(found)


def test_the_check_sees_upward_imports() -> None:
    lazy = "def f():\n    from ept.processors.worker.service import create_app\n"
    assert violations("ept.tracker", lazy, "x.py") == [
        "x.py:2: ept.tracker (layer 2) imports ept.processors.worker.service (layer 3)"]
    assert violations("ept.core.settings", "import ept.tracker\n", "y.py")
    assert violations("ept.deploy.cli", "from ept.processors.worker.service import run_worker",
                      "c.py") == []


def test_the_check_sees_components_importing_one_another() -> None:
    def check(importer: str, imported: str) -> list[str]:
        return violations(importer, f"from {imported} import x\n", "m.py")

    assert check("ept.processors.storage.tables", "ept.processors.sink.rows") == [
        "m.py:1: ept.processors.storage.tables (storage) imports ept.processors.sink.rows "
        "(sink): storage may import only storage of ept.processors (worker, sink and web "
        "meet only through alerts, storage and ept.core)"]
    for importer, imported in (("worker.evaluate_stage", "sink.consumer"),
                               ("worker.logic.rules", "web.http"),
                               ("sink.consumer", "worker.logic.rules"),
                               ("sink.rows", "web.query_api"),
                               ("web.dashboard", "worker.logic.rules"),
                               ("web.sql.endpoint", "sink.service"),
                               ("alerts.topic", "worker.logic.rules"),
                               ("storage.connection", "alerts.notice")):
        assert check(f"ept.processors.{importer}", f"ept.processors.{imported}"), importer
    for importer, imported in (("worker.logic.alert_state", "alerts.notice"),
                               ("web.dashboard", "alerts.topic"),
                               ("web.sql.endpoint", "storage.analyst"),
                               ("sink.consumer", "storage.deletion"),
                               ("sink.service", "web.dashboard"),
                               ("worker.service", "web.http")):
        assert check(f"ept.processors.{importer}", f"ept.processors.{imported}") == []
    assert check("ept.processors.stray", "ept.processors.storage.tables") == [
        "m.py:1: ept.processors.stray is in no component of ept.processors "
        "(worker, sink, web, alerts, storage)"]


def test_the_pure_logic_loads_no_io_library() -> None:
    modules = pure_modules()
    assert PURE_PACKAGE in modules and f"{PURE_PACKAGE}.rules" in modules
    found = [chain for module in modules for chain in io_loaded(module)]
    assert not found, "pure logic that loads an I/O library:\n" + "\n".join(found)


def test_the_check_sees_io_loaded_through_other_modules() -> None:
    state, topic = "ept.processors.worker.logic.alert_state", "ept.processors.alerts.topic"
    planted = {state: f"def f():\n    from {topic} import AlertNotice\n",
               topic: "from ept.core.compacted import read_topic\n",
               "ept.core.compacted": "import typing\nimport confluent_kafka.admin\n",
               "ept.processors.alerts": "", "ept.processors.worker": "",
               "ept.processors.worker.logic": "", "ept.processors": "", "ept.core": "",
               "ept": ""}
    assert io_loaded(state, planted.get) == [
        f"{state} -> {topic} -> ept.core.compacted -> confluent_kafka"]
    only_typed = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import faust\n"
    assert io_loaded("m", {"m": only_typed}.get) == []
    assert io_loaded("m", {"m": "import aiohttp.web"}.get) == ["m -> aiohttp"]
