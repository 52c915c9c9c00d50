"""``ept``'s root imports lazily (PEP 562): the lower layers load without the SDK."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import ept

pytestmark = pytest.mark.unit

SDK_MODULES = ("ept.tracker", "ept.delivery", "ept.default", "ept.spool", "confluent_kafka")


def loaded_after(statement: str) -> list[str]:
    """The SDK modules loaded by ``statement`` in a fresh interpreter."""
    probe = (f"import json, sys\n{statement}\n"
             f"print(json.dumps([m for m in {list(SDK_MODULES)!r} if m in sys.modules]))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True, timeout=60)
    found: list[str] = json.loads(result.stdout)
    return found


@pytest.mark.parametrize("statement", ["import ept.schemas", "import ept.core.settings",
                                       "import ept", "from ept.schemas import Decoder"])
def test_the_lower_layers_load_without_the_tracker(statement: str) -> None:
    assert loaded_after(statement) == []


def test_a_public_name_loads_its_module_on_first_use() -> None:
    assert loaded_after("import ept\nept.track_render_failed") == list(SDK_MODULES)


def test_every_public_name_resolves_to_its_definition() -> None:
    exports = ept._EXPORTS
    assert sorted(exports) == sorted(ept.__all__)
    for name, module in exports.items():
        assert getattr(ept, name) is getattr(importlib.import_module(module), name), name
    with pytest.raises(AttributeError, match="no_such_name"):
        ept.__getattr__("no_such_name")


def test_what_type_checkers_see_is_what_runs() -> None:
    """The ``if TYPE_CHECKING:`` imports name the same modules as ``_EXPORTS``."""
    tree = ast.parse(Path(ept.__file__).read_text())
    [block] = [node for node in tree.body if isinstance(node, ast.If)
               and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"]
    seen = {alias.name: node.module for node in block.body
            if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert seen == ept._EXPORTS
