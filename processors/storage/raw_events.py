"""The statements the sink runs against the raw events table.

The sink hands this module Avro blocks and source offsets; the SQL, the column names and
the insert settings that make a retried batch a no-op live here, beside the table's DDL.
"""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

from ept.processors.storage.tables import RAW_TABLE

# Event fields stored under another column name (the specification's query vocabulary).
COLUMN_OF_FIELD = {"event_time": "timestamp", "duration_ms": "duration"}

_STORED_OFFSETS = (
    f"SELECT source_topic, source_partition, source_offset FROM {RAW_TABLE} "
    "WHERE has({keys:Array(String)}, concat(source_topic, ':', toString(source_partition))) "
    "AND source_offset >= {starts:Array(UInt64)}[indexOf({keys:Array(String)}, "
    "concat(source_topic, ':', toString(source_partition)))]")


def insert_avro(client: Client, columns: list[str], block: bytes, deduplication_token: str
                ) -> None:
    """Insert one Avro container of rows. Blocks; raises the client's error on failure.

    The same ``deduplication_token`` inserted again (a retry after a lost reply) stores
    nothing, in the raw table and in the rollups its materialized views feed.
    """
    client.raw_insert(RAW_TABLE, columns, insert_block=block, fmt="Avro",
                      settings={"insert_deduplication_token": deduplication_token,
                                "deduplicate_blocks_in_dependent_materialized_views": 1})


def stored_offsets(client: Client, starts: dict[tuple[str, int], int]
                   ) -> dict[tuple[str, int], set[int]]:
    """Per (topic, partition), the source offsets at or after its start already stored.

    One query for every partition given. Blocks; raises the client's error on failure.
    """
    stored: dict[tuple[str, int], set[int]] = {key: set() for key in starts}
    if not starts:
        return stored
    keys = sorted(starts)
    parameters = {"keys": [f"{topic}:{partition}" for topic, partition in keys],
                  "starts": [starts[key] for key in keys]}
    for topic, partition, offset in client.query(_STORED_OFFSETS,
                                                 parameters=parameters).result_rows:
        stored[(topic, partition)].add(offset)
    return stored
