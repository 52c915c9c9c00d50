"""``ept delete-account`` as an operator runs it: the deletion is recorded on the deletions
topic, then the stored rows are removed where ClickHouse can be opened."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ept.core.deletions import Deletion
from ept.core.kafka import ensure_topics
from ept.core.settings import Settings
from tests.helpers import read_topics
from tests.worker_process import REPO


def ept(environment: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ept.deploy.cli", *arguments],
                          env=environment, cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)


def test_a_deletion_is_recorded_then_the_stored_rows_are_removed(settings: Settings,
                                                                 tmp_path: Path) -> None:
    ensure_topics(settings)
    environment = {**os.environ, "EPT_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
                   "EPT_TOPIC_PREFIX": settings.topic_prefix,
                   "EPT_STATE_DIR": str(tmp_path / "state"),
                   "EPT_CLICKHOUSE_PATH": str(tmp_path / "clickhouse")}
    environment.pop("EPT_CLICKHOUSE_URL", None)  # an embedded engine no sink holds
    assert ept(environment, "clickhouse", "migrate").returncode == 0

    account = ept(environment, "delete-account", " acct_gone ", "--by", "dpo")
    assert account.returncode == 0, account.stderr
    assert account.stdout == (
        "account acct_gone: deletion recorded; sinks drop its events from now on and remove "
        "its stored rows\nevents: 0 rows removed\nevents_hourly: 0 rows removed\n"
        "events_daily: 0 rows removed\n")
    user = ept(environment, "delete-account", "--user", "u_gone", "--by", "dpo")
    assert user.stdout.splitlines()[1:] == ["events: 0 rows removed"], user.stderr
    recorded = [Deletion.decode(m.value()) for m in read_topics(
        settings.kafka_bootstrap, [settings.topics.deletions], timeout=10, idle=1.0)]
    assert sorted((d.key, d.by) for d in recorded) == [("account:acct_gone", "dpo"),
                                                        ("user:u_gone", "dpo")]

    empty = ept(environment, "delete-account", "  ")
    assert (empty.returncode, empty.stderr) == (1, "Error: account id: must not be empty\n")
