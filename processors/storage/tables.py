"""The ClickHouse tables of ept, as versioned migrations applied by ``ept clickhouse migrate``.

Raw events live in one wide table ``events`` (partitioned by day, dropped whole parts
after the raw retention); hourly and daily rollups are fed by materialized views and
kept for the rollup retention. The specification's analytics SQL reads ``events``
verbatim through ALIAS columns (``templateId``, ``statusCode``, ...). The same DDL runs
on the embedded engine and on a server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from ept.core.settings import Settings

RAW_TABLE = "events"
ROLLUP_TABLES = ("events_hourly", "events_daily")
EVENT_NAME_INDEX = "event_name_set"

# Our event names, except that a successful render is called ``video_rendered`` by the
# specification's analytics ("Error Rate by Template"); ``event`` keeps our own name.
SPEC_EVENT_NAME = "if(event = 'render_completed', 'video_rendered', event)"

EVENTS_COLUMNS = """
    event_id UUID,
    event LowCardinality(String),
    timestamp DateTime64(3, 'UTC'),
    service LowCardinality(String),
    environment LowCardinality(String),
    sdk_version LowCardinality(String),
    user_id Nullable(String),
    account_id Nullable(String),
    render_id String,
    template_id String,
    render_type LowCardinality(String),
    reason LowCardinality(String),
    error_message String CODEC(ZSTD(3)),
    duration Float64,
    retry_attempt UInt16,
    threshold_ms Nullable(Float64),
    slowness_factor Nullable(Float64),
    width Nullable(UInt32),
    height Nullable(UInt32),
    endpoint LowCardinality(String),
    method LowCardinality(String),
    status_code Nullable(UInt16),
    request_id String,
    rate_limited Bool,
    retry_after_s Nullable(Float64),
    source_topic LowCardinality(String),
    source_partition UInt32,
    source_offset UInt64,
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3),
    event_name LowCardinality(String) ALIAS {spec_event_name},
    templateId String ALIAS template_id,
    renderType LowCardinality(String) ALIAS render_type,
    statusCode Nullable(UInt16) ALIAS status_code,
    slownessFactor Nullable(Float64) ALIAS slowness_factor
"""


_EVENTS_COLUMNS_SQL = EVENTS_COLUMNS.format(spec_event_name=SPEC_EVENT_NAME)


def _events_ddl(settings: Settings) -> list[str]:
    return [f"""
        CREATE TABLE IF NOT EXISTS {RAW_TABLE} ({_EVENTS_COLUMNS_SQL})
        ENGINE = MergeTree
        PARTITION BY toDate(timestamp)
        ORDER BY (event, timestamp, template_id)
        TTL toDateTime(timestamp) + INTERVAL {settings.raw_retention_days} DAY
        SETTINGS ttl_only_drop_parts = 1, non_replicated_deduplication_window = 10000
    """]


def _rollup_ddl(table: str, bucket: str, settings: Settings) -> list[str]:
    """A rollup table at ``bucket`` granularity and the materialized view feeding it."""
    keys = ("bucket, event, service, environment, template_id, render_type, reason, endpoint, "
            "status, rate_limited, account")
    return [f"""
        CREATE TABLE IF NOT EXISTS {table} (
            bucket DateTime('UTC'),
            event LowCardinality(String),
            service LowCardinality(String),
            environment LowCardinality(String),
            template_id String,
            render_type LowCardinality(String),
            reason LowCardinality(String),
            endpoint LowCardinality(String),
            status UInt16,
            rate_limited Bool,
            account String,
            events SimpleAggregateFunction(sum, UInt64),
            duration_sum SimpleAggregateFunction(sum, Float64),
            duration_max SimpleAggregateFunction(max, Float64),
            duration_quantiles AggregateFunction(quantilesTDigest(0.5, 0.9, 0.99), Float64),
            slowness_sum SimpleAggregateFunction(sum, Float64)
        )
        ENGINE = AggregatingMergeTree
        PARTITION BY toYYYYMM(bucket)
        ORDER BY ({keys})
        TTL bucket + INTERVAL {settings.rollup_retention_days} DAY
        SETTINGS non_replicated_deduplication_window = 10000
    """, f"""
        CREATE MATERIALIZED VIEW IF NOT EXISTS {table}_mv TO {table} AS
        SELECT
            {bucket}(timestamp) AS bucket, event, service, environment, template_id,
            render_type, reason, endpoint, ifNull(status_code, 0) AS status, rate_limited,
            ifNull(account_id, '') AS account,
            count() AS events, sum(duration) AS duration_sum, max(duration) AS duration_max,
            quantilesTDigestState(0.5, 0.9, 0.99)(duration) AS duration_quantiles,
            sum(ifNull(slowness_factor, 0)) AS slowness_sum
        FROM {RAW_TABLE}
        GROUP BY {keys}
    """]


def _event_name_index(settings: Settings) -> list[str]:
    """A skip index on the specification's ``event_name``: it is an ALIAS over ``event``,
    which the primary key cannot see through, so without it the specification's queries
    (``WHERE event_name = ...``) read every event type. Its own mutation fills it for
    the rows already stored."""
    return [f"ALTER TABLE {RAW_TABLE} ADD INDEX IF NOT EXISTS {EVENT_NAME_INDEX} event_name "
            "TYPE set(0) GRANULARITY 1",
            f"ALTER TABLE {RAW_TABLE} MATERIALIZE INDEX {EVENT_NAME_INDEX}"]


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: Callable[[Settings], list[str]]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "raw events table", _events_ddl),
    Migration(2, "hourly rollup", lambda s: _rollup_ddl("events_hourly", "toStartOfHour", s)),
    Migration(3, "daily rollup", lambda s: _rollup_ddl("events_daily", "toStartOfDay", s)),
    Migration(4, "event_name skip index", _event_name_index),
)


def cluster_ddl(settings: Settings, cluster: str, database: str = "ept") -> str:
    """The same tables for a ClickHouse cluster: ReplicatedMergeTree / ReplicatedAggregating-
    MergeTree shards ``*_local`` plus Distributed tables under the usual names, so the sink
    and every query stay unchanged. Written to deploy/clickhouse/cluster.sql."""
    statements = [f"CREATE DATABASE IF NOT EXISTS {database} ON CLUSTER {cluster}"]
    for migration in MIGRATIONS:
        for statement in migration.statements(settings):
            text = " ".join(statement.split())
            if text.startswith(f"ALTER TABLE {RAW_TABLE} "):
                statements.append(text.replace(
                    f"ALTER TABLE {RAW_TABLE} ",
                    f"ALTER TABLE {database}.{RAW_TABLE}_local ON CLUSTER {cluster} "))
                continue
            if "MATERIALIZED VIEW" in text:
                # The views feed the local rollup shard from the local raw shard.
                text = text.replace(" TO events_", " TO {db}.events_").replace(
                    f"FROM {RAW_TABLE}", f"FROM {{db}}.{RAW_TABLE}_local")
                name = text.split("EXISTS ", 1)[1].split(" ", 1)[0]
                text = text.replace(f"EXISTS {name} ",
                                    f"EXISTS {{db}}.{name} ON CLUSTER {cluster} ")
                text = text.replace("TO {db}.events_hourly", "TO {db}.events_hourly_local")
                text = text.replace("TO {db}.events_daily", "TO {db}.events_daily_local")
                statements.append(text.format(db=database))
                continue
            table = text.split("EXISTS ", 1)[1].split(" ", 1)[0]
            engine = text.split("ENGINE = ", 1)[1].split(" ", 1)[0]
            local = (text.replace(f"EXISTS {table} ", f"EXISTS {database}.{table}_local "
                                                      f"ON CLUSTER {cluster} ")
                     .replace(f"ENGINE = {engine}",
                              f"ENGINE = Replicated{engine}('/clickhouse/tables/{{shard}}/"
                              f"{database}/{table}_local', '{{replica}}')"))
            statements.append(local)
            sharding = "cityHash64(event_id)" if table == RAW_TABLE else "rand()"
            statements.append(
                f"CREATE TABLE IF NOT EXISTS {database}.{table} ON CLUSTER {cluster} "
                f"AS {database}.{table}_local "
                f"ENGINE = Distributed({cluster}, {database}, {table}_local, {sharding})")
    return ";\n\n".join(statements) + ";\n"


def migrate(client: Client, settings: Settings) -> list[str]:
    """Apply the migrations not yet applied, in order, then the configured retention.

    Idempotent. Returns the names of the migrations applied now. Blocks on ClickHouse.
    """
    client.command("""
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version UInt32, name String, applied_at DateTime DEFAULT now()
        ) ENGINE = ReplacingMergeTree ORDER BY version
    """)
    applied = {row[0] for row in client.query("SELECT version FROM schema_migrations").result_rows}
    done: list[str] = []
    for migration in MIGRATIONS:
        if migration.version in applied:
            continue
        for statement in migration.statements(settings):
            client.command(statement)
        client.insert("schema_migrations", [[migration.version, migration.name]],
                      column_names=["version", "name"])
        done.append(f"{migration.version:03d} {migration.name}")
    _apply_retention(client, settings)
    return done


def _apply_retention(client: Client, settings: Settings) -> None:
    """Make the tables' TTLs match the configured retention (a change applies to new merges)."""
    wanted = {
        RAW_TABLE: f"toDateTime(timestamp) + toIntervalDay({settings.raw_retention_days})",
        **{table: f"bucket + toIntervalDay({settings.rollup_retention_days})"
           for table in ROLLUP_TABLES},
    }
    for table, ttl in wanted.items():
        current = str(client.command(f"SHOW CREATE TABLE {table}"))
        if f"TTL {ttl}" not in current:
            client.command(f"ALTER TABLE {table} MODIFY TTL {ttl}",
                           settings={"materialize_ttl_after_modify": 0})
