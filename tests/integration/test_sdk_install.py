"""The SDK as a render service installs it: the wheel, no extras, a fresh virtualenv.

Checks the install footprint (no pipeline packages), the import footprint (no ClickHouse,
Faust, aiohttp or pydantic module loaded), the namespace (only ``ept`` at the top of
site-packages) and that ``ept.track_render_failed`` reaches the real broker.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ept.core.kafka import ensure_topics
from ept.core.settings import Settings
from tests.helpers import read_topics

REPO = Path(__file__).resolve().parents[2]
PIPELINE_PACKAGES = {"faust-streaming", "chdb-core", "chdb", "pandas", "pyarrow", "aiohttp",
                     "clickhouse-connect", "pydantic", "click"}
HEAVY_MODULES = ["clickhouse_connect", "faust", "aiohttp", "pydantic", "chdb", "mode"]

PROBE = textwrap.dedent("""
    import json, sys, sysconfig, pathlib
    import ept
    ept.configure(strict=True, service="render-svc")
    ept.track_render_failed("render_001", "timeout", "Render timed out after 30 seconds",
                            "template_hero_001", 30000, 0)
    undelivered = ept.flush(30)
    site = pathlib.Path(sysconfig.get_paths()["purelib"])
    print(json.dumps({
        "undelivered": undelivered,
        "loaded": sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY}),
        "top_level": sorted(p.name for p in site.iterdir()),
        "ept_file": ept.__file__,
    }))
""")


@pytest.fixture(scope="module")
def sdk_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv holding the ept wheel installed without extras."""
    root = tmp_path_factory.mktemp("sdk-install")
    wheels = root / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(wheels), str(REPO)],
                   check=True, cwd=root)
    (wheel,) = wheels.glob("ept-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                    str(wheel)], check=True, cwd=root)
    return venv


def test_wheel_without_extras_installs_only_the_sdk(sdk_venv: Path) -> None:
    listed = subprocess.run([str(sdk_venv / "bin" / "python"), "-m", "pip", "list",
                             "--format", "json"], check=True, capture_output=True, text=True)
    installed = {package["name"].lower() for package in json.loads(listed.stdout)}
    assert {"ept", "confluent-kafka", "fastavro"} <= installed
    assert not installed & PIPELINE_PACKAGES, installed & PIPELINE_PACKAGES


def test_sdk_publishes_to_the_broker_and_loads_no_pipeline(sdk_venv: Path, settings: Settings,
                                                           tmp_path: Path) -> None:
    ensure_topics(settings)
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                   "EPT_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
                   "EPT_TOPIC_PREFIX": settings.topic_prefix,
                   "EPT_STATE_DIR": str(tmp_path / "state")}
    probe = PROBE.replace("{HEAVY}", repr(set(HEAVY_MODULES)))
    result = subprocess.run([str(sdk_venv / "bin" / "python"), "-c", probe], cwd=tmp_path,
                            env=environment, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["undelivered"] == 0
    assert report["loaded"] == []
    assert "site-packages" in report["ept_file"]
    for generic in ("producers", "processors", "schemas", "deploy"):
        assert generic not in report["top_level"]
    assert "ept" in report["top_level"]
    messages = read_topics(settings.kafka_bootstrap,
                           [settings.topics.event("render_failed")], expected=1)
    assert len(messages) == 1
