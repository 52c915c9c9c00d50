"""Deleting an account's or a user's stored data (the specification's account deletion).

The stored half of a deletion: :mod:`ept.core.deletions` keeps what Kafka still holds
from being stored afterwards. :func:`delete_subject` (``ept delete-account``) does both,
in that order.
"""

from __future__ import annotations

from collections.abc import Callable

from clickhouse_connect.driver.client import Client

from ept.core.deletions import ACCOUNT, USER, Deletion, publish_deletion
from ept.core.settings import Settings
from ept.processors.storage.connection import EngineHeldElsewhere, clickhouse_client
from ept.processors.storage.tables import RAW_TABLE, ROLLUP_TABLES


def delete_subject(settings: Settings, deletion: Deletion,
                   recorded: Callable[[Deletion], None]) -> dict[str, int] | None:
    """Record ``deletion``, then remove its subject's stored rows here; rows removed per
    table (:func:`delete_stored`), or None when the running sink holds the embedded engine
    (it removes them, as every running sink does once what it read before is stored).

    Recording first is what makes the deletion complete: from then on sinks drop every
    event of the subject they read, events still queued in Kafka included. ``recorded`` is
    called once it is recorded, before the rows are removed. Blocks; raises KafkaException
    when the broker did not acknowledge the record (nothing is removed then); ClickHouse
    errors propagate.
    """
    publish_deletion(settings, deletion)
    recorded(deletion)
    try:
        client = clickhouse_client(settings)
    except EngineHeldElsewhere:
        return None
    return delete_stored(client, deletion.kind, deletion.subject_id,
                         settings.clickhouse_cluster)


def delete_stored(client: Client, kind: str, subject_id: str, cluster: str | None = None
                  ) -> dict[str, int]:
    """Remove every row of account or user ``subject_id``; rows removed per table.

    Accounts leave the raw table and the rollups (kept per account); users only the raw
    table (rollups hold no user). On the sharded layout (``cluster``) the mutations run on
    the ``*_local`` tables ``ON CLUSTER``: ClickHouse refuses mutations of a Distributed
    table. Blocks until the deletions are applied (synchronous mutations). Raises
    ValueError for an empty id or an unknown kind; ClickHouse errors propagate.
    """
    if not subject_id.strip():
        raise ValueError(f"{kind} id: must not be empty")
    if kind == ACCOUNT:
        targets = {RAW_TABLE: "account_id", **{table: "account" for table in ROLLUP_TABLES}}
    elif kind == USER:
        targets = {RAW_TABLE: "user_id"}
    else:
        raise ValueError(f"kind: must be {ACCOUNT} or {USER}, got {kind!r}")
    removed: dict[str, int] = {}
    for table, column in targets.items():
        condition = f"{column} = {{subject:String}}"
        count_expression = "count()" if table == RAW_TABLE else "sum(events)"
        rows = client.query(f"SELECT {count_expression} FROM {table} WHERE {condition}",
                            parameters={"subject": subject_id}).result_rows[0][0]
        removed[table] = int(rows or 0)
        if removed[table]:
            target = f"{table}_local ON CLUSTER {cluster}" if cluster else table
            client.command(f"ALTER TABLE {target} DELETE WHERE {condition}",
                           parameters={"subject": subject_id},
                           settings={"mutations_sync": 2})
    return removed
