"""``ept``: the single command line of the whole system.

Subcommands import their component lazily, so ``ept broker status`` does not load Faust.
"""

from __future__ import annotations

import datetime as dt
import getpass
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ept.core.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from ept.deploy.broker import LocalBroker


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def _who(by: str | None) -> str:
    """``--by``, by default the current user."""
    return by or getpass.getuser()


def _now_ms() -> int:
    """Now, in ms since the epoch: when a decision was made."""
    return int(time.time() * 1000)


def _iso(at_ms: int) -> str:
    """``2026-11-29T10:00:00+00:00``: a decision's time as the lists print it."""
    return dt.datetime.fromtimestamp(at_ms / 1000, dt.UTC).isoformat(timespec="seconds")


@click.group()
def main() -> None:
    """ept: Error & Performance Tracking for renders and API calls."""


# -- broker -------------------------------------------------------------------------------

@main.group()
def broker() -> None:
    """Run a local single-node Apache Kafka broker (KRaft) for development and tests."""


def _broker_options(func: Callable[..., None]) -> Callable[..., None]:
    func = click.option("--port", type=int, default=9092, show_default=True,
                        help="client port; the controller uses port+1")(func)
    func = click.option("--data-dir", type=click.Path(path_type=Path), default=None,
                        help="broker state [default: $EPT_STATE_DIR/kafka]")(func)
    return func


def _local_broker(port: int, data_dir: Path | None) -> LocalBroker:
    from ept.deploy.broker import LocalBroker

    return LocalBroker(data_dir or _settings().state_dir / "kafka", port)


@broker.command("start")
@_broker_options
def broker_start(port: int, data_dir: Path | None) -> None:
    """Start the broker (idempotent) and wait until it answers."""
    from ept.deploy.broker import BrokerError

    local = _local_broker(port, data_dir)
    try:
        status = local.start()
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(status.describe())


@broker.command("stop")
@_broker_options
def broker_stop(port: int, data_dir: Path | None) -> None:
    """Stop the broker cleanly; no process is left behind."""
    local = _local_broker(port, data_dir)
    click.echo("broker stopped" if local.stop() else "broker was not running")


@broker.command("status")
@_broker_options
def broker_status(port: int, data_dir: Path | None) -> None:
    """Print the broker's version, address and data directory (exit 1 when down)."""
    status = _local_broker(port, data_dir).status()
    click.echo(status.describe())
    if not status.answering:
        sys.exit(1)


@main.group("kafka")
def kafka_group() -> None:
    """Kafka administration."""


@kafka_group.command("access")
@click.option("--passwords", "passwords_file", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="a file of `user=password` lines, one per component user")
def kafka_access(passwords_file: Path) -> None:
    """Create each component's SCRAM user and ACLs (deploy/kafka_access.py) on the
    cluster of EPT_KAFKA_* (as an admin). Passwords come from a file, never arguments."""
    from confluent_kafka import KafkaException

    from ept.deploy.kafka_access import (
        apply_access,
        component_grants,
        missing_passwords,
        parse_passwords,
    )

    settings = _settings()
    passwords = parse_passwords(passwords_file.read_text())
    missing = missing_passwords(settings.topics, passwords)
    if missing:
        raise click.ClickException(f"{passwords_file}: no password for {', '.join(missing)}")
    try:
        apply_access(settings, passwords)
    except KafkaException as exc:
        raise click.ClickException(f"the broker refused: {exc}") from None
    click.echo(f"users and ACLs applied: {', '.join(component_grants(settings.topics))}")


# -- ClickHouse ---------------------------------------------------------------------------

def _logging(verbose: bool = False) -> None:
    import logging

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.group()
def clickhouse() -> None:
    """Manage the ClickHouse tables."""


@clickhouse.command("migrate")
def clickhouse_migrate() -> None:
    """Apply the table migrations (idempotent) and the configured retention."""
    from ept.processors.storage.connection import clickhouse_client
    from ept.processors.storage.tables import migrate

    settings = _settings()
    applied = migrate(clickhouse_client(settings), settings)
    click.echo("applied: " + ", ".join(applied) if applied else "schema is up to date")


@clickhouse.command("ddl")
@click.option("--cluster", required=True, help="ClickHouse cluster name (remote_servers)")
@click.option("--database", default="ept", show_default=True)
def clickhouse_ddl(cluster: str, database: str) -> None:
    """Print the tables as ReplicatedMergeTree shards + Distributed tables for a cluster."""
    from ept.processors.storage.tables import cluster_ddl

    click.echo(cluster_ddl(_settings(), cluster, database), nl=False)


@main.command()
@click.option("--group", default="ept-sink", show_default=True, help="consumer group")
@click.option("-v", "--verbose", is_flag=True)
def sink(group: str, verbose: bool) -> None:
    """Consume the event topics into ClickHouse (and serve the query API)."""
    from ept.processors.sink.service import run_sink

    _logging(verbose)
    finished = run_sink(_settings(), group=group)
    click.echo(f"sink stopped: {finished.counters}")


@main.command()
@click.argument("name", required=False)
@click.option("--since", help="ISO date/time or relative (-2h, -7d)")
@click.option("--until", help="ISO date/time or relative")
@click.option("--template", help="only this template id")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True)
def query(name: str | None, since: str | None, until: str | None, template: str | None,
          fmt: str) -> None:
    """Run a named analytics query (no NAME: list them)."""
    from ept.processors.storage import queries
    from ept.processors.web.query_client import run_query

    if name is None:
        for named in queries.QUERIES.values():
            click.echo(f"{named.name:28} {named.description}")
        return
    try:
        click.echo(run_query(_settings(), name, since, until, template, fmt))
    except (ValueError, KeyError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.argument("query_text", metavar="SQL", required=False)
@click.option("--format", "fmt", default="table", show_default=True,
              type=click.Choice(["table", "tsv", "csv", "json", "parquet"]))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="write the result to this file (required for parquet)")
def sql(query_text: str | None, fmt: str, output: Path | None) -> None:
    """Run your own SQL (read-only) on ClickHouse; no SQL: an interactive prompt.

    Works on the embedded engine (directly, or through the running sink's SQL endpoint)
    and on a ClickHouse server (EPT_CLICKHOUSE_URL) alike.
    """
    from ept.processors.storage.sql_client import BINARY_FORMATS

    settings = _settings()
    if fmt in BINARY_FORMATS and output is None:
        raise click.UsageError(f"--format {fmt} is binary: name a file with --output")
    if query_text is not None:
        _run_sql(settings, query_text, fmt, output)
    elif not sys.stdin.isatty():
        _run_sql(settings, sys.stdin.read(), fmt, output)
    else:
        from ept.deploy.sql_prompt import sql_prompt

        sql_prompt(settings, fmt)


def _run_sql(settings: Settings, query_text: str, fmt: str, output: Path | None) -> None:
    from ept.processors.storage.analyst import ClickHouseError
    from ept.processors.storage.sql_client import run_sql

    try:
        result = run_sql(settings, query_text, fmt)
    except (ClickHouseError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None
    if output is not None:
        output.write_bytes(result)
        click.echo(f"{len(result):,} bytes written to {output}", err=True)
    else:
        click.echo(result.decode(errors="replace"), nl=False)


@main.command("delete-account")
@click.argument("subject_id", metavar="ID")
@click.option("--user", is_flag=True, help="ID is a user id (default: an account id)")
@click.option("--by", help="who asked [default: the current user]")
def delete_account_command(subject_id: str, user: bool, by: str | None) -> None:
    """Delete an account's data (with --user: a user's).

    Records the deletion first: running sinks drop every event of ID they read from then
    on (events still queued in Kafka included), remove its stored rows once what they read
    before is stored, and `ept dlq replay` skips its dead letters. Then removes the stored
    rows here too when ClickHouse can be opened (a server, or the embedded engine no sink
    holds).
    """
    from confluent_kafka import KafkaException

    from ept.core.deletions import ACCOUNT, USER, BadDeletion, Deletion
    from ept.processors.storage.deletion import delete_subject

    def recorded(deletion: Deletion) -> None:
        click.echo(f"{deletion.kind} {deletion.subject_id}: deletion recorded; sinks drop its "
                   "events from now on and remove its stored rows")

    settings = _settings()
    try:
        deletion = Deletion(USER if user else ACCOUNT, subject_id.strip(), _now_ms(), _who(by))
        removed = delete_subject(settings, deletion, recorded)
    except (BadDeletion, KafkaException) as exc:
        raise click.ClickException(str(exc)) from None
    if removed is None:
        click.echo("the running sink holds the embedded engine: it removes the stored rows")
        return
    for table, rows in removed.items():
        click.echo(f"{table}: {rows} rows removed")


@main.group()
def dlq() -> None:
    """The dead-letter topic."""


@dlq.command("replay")
@click.option("--dry-run", is_flag=True, help="count only; produce nothing")
def dlq_replay(dry_run: bool) -> None:
    """Re-feed dead letters that now decode to their original topics."""
    from ept.processors.sink.replay import replay_dead_letters

    report = replay_dead_letters(_settings(), dry_run=dry_run)
    click.echo(f"replayed {report.replayed}, still invalid {report.still_invalid}, "
               f"without a valid origin {report.no_origin}, of deleted subjects {report.deleted}")


# -- worker and alerts --------------------------------------------------------------------

@main.command()
@click.option("--rules", "rules_file", type=click.Path(path_type=Path, dir_okay=False),
              help="rules file (TOML) [default: $EPT_RULES_FILE or the built-in rules]")
@click.option("-l", "--loglevel", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warn", "error"]))
@click.option("--processes", type=click.IntRange(1, 256), default=1, show_default=True,
              envvar="EPT_WORKER_PROCESSES",
              help="worker processes on this host (one per core), pages on EPT_WORKER_PORT "
                   "and the ports after it [env: EPT_WORKER_PROCESSES]")
def worker(rules_file: Path | None, loglevel: str, processes: int) -> None:
    """Run the Faust worker: windowed rules, alerts and live stats."""
    from ept.processors.worker.logic.rules import RulesError, load_rules

    settings = _settings()
    try:
        rules = load_rules(rules_file or settings.rules_file)
    except RulesError as exc:
        raise click.ClickException(str(exc)) from None
    if processes > 1:
        from ept.deploy.worker_processes import run_processes

        arguments = ["-l", loglevel] + (["--rules", str(rules_file)] if rules_file else [])
        run_processes(processes, arguments, settings.worker_port, click.echo)
        return
    from ept.processors.worker.service import run_worker

    run_worker(settings, rules, loglevel)


@main.command()
@click.option("--from-beginning", is_flag=True, help="replay the whole alert topic")
@click.option("--json", "as_json", is_flag=True, help="print raw JSON, one object per line")
def alerts(from_beginning: bool, as_json: bool) -> None:
    """Tail the alert topic, one coloured line per alert."""
    from ept.deploy.alert_tail import tail_alerts

    tail_alerts(_settings(), from_beginning=from_beginning, as_json=as_json)


@main.group()
def templates() -> None:
    """The template kill switch: disable a failing template, re-enable it."""


@templates.command("list")
@click.option("--all", "show_all", is_flag=True, help="also templates enabled again")
def templates_list(show_all: bool) -> None:
    """The disabled templates (with --all: every template ever controlled)."""
    from ept.core.template_controls import read_controls

    try:
        controls = [c for c in read_controls(_settings()) if show_all or c.disabled]
    except TimeoutError as exc:
        raise click.ClickException(str(exc)) from None
    if not controls:
        click.echo("no template is disabled")
    for control in controls:
        click.echo(f"{control.template_id}  {control.state}  by {control.by} at "
                   f"{_iso(control.at_ms)}: {control.reason}")


def _set_template(template_id: str, state: str, reason: str, by: str | None) -> None:
    from confluent_kafka import KafkaException

    from ept.core.template_controls import BadTemplateControl, TemplateControl, change_state

    settings = _settings()
    try:
        control = TemplateControl(template_id.strip(), state, reason, _who(by), _now_ms())
        change = change_state(settings, control)
    except (BadTemplateControl, TimeoutError, KafkaException) as exc:
        raise click.ClickException(str(exc)) from None
    if change.published:
        click.echo(f"{control.template_id} {state}")
    elif change.current is None:
        click.echo(f"{control.template_id} is not disabled")
    else:
        click.echo(f"{control.template_id} is already {state} (by {change.current.by}: "
                   f"{change.current.reason})")


@templates.command("disable")
@click.argument("template_id")
@click.option("--reason", required=True, help="why (shown to whoever re-enables it)")
@click.option("--by", help="who decided [default: the current user]")
def templates_disable(template_id: str, reason: str, by: str | None) -> None:
    """Disable TEMPLATE_ID: services that enforce template controls refuse its renders."""
    from ept.core.template_controls import DISABLED

    _set_template(template_id, DISABLED, reason, by)


@templates.command("enable")
@click.argument("template_id")
@click.option("--reason", default="re-enabled", show_default=True)
@click.option("--by", help="who decided [default: the current user]")
def templates_enable(template_id: str, reason: str, by: str | None) -> None:
    """Enable TEMPLATE_ID again."""
    from ept.core.template_controls import ENABLED

    _set_template(template_id, ENABLED, reason, by)


@main.group()
def thresholds() -> None:
    """Slow thresholds per template, tuned from the stored durations."""


@thresholds.command("suggest")
@click.option("--since", default="-7d", show_default=True,
              help="durations stored since (-7d, -12h, or an ISO date/time)")
@click.option("--quantile", default=0.95, show_default=True, type=float,
              help="the share of a template's renders that are not slow")
@click.option("--min-renders", default=100, show_default=True, type=int,
              help="templates with fewer completed renders are left out")
@click.option("--apply", "apply", is_flag=True,
              help="publish the suggestions: services use them from then on")
@click.option("--by", help="who decided [default: the current user]")
def thresholds_suggest(since: str, quantile: float, min_renders: int, apply: bool,
                       by: str | None) -> None:
    """Per-template slow thresholds from the durations in ClickHouse, next to today's."""
    from confluent_kafka import KafkaException

    from ept.processors.storage.analyst import ClickHouseError
    from ept.processors.storage.queries import parse_time
    from ept.processors.storage.slow_thresholds import (
        publish_suggestions,
        quantile_label,
        since_label,
        suggest,
        thresholds_today,
    )

    settings = _settings()
    try:
        start = parse_time(since, "since")
        assert start is not None
        suggestions = suggest(settings, start, quantile, min_renders)
        today = thresholds_today(settings, suggestions)
    except (ValueError, ClickHouseError, RuntimeError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None
    if not suggestions:
        click.echo(f"no template has {min_renders} completed renders since "
                   f"{since_label(start)}: nothing to suggest")
        return
    label = quantile_label(quantile)
    click.echo(f"{'template':<28} {'operation':<14} {'renders':>8} {label + ' ms':>11} "
               f"{'today ms':>10} {'suggested ms':>13}")
    for s, today_ms in zip(suggestions, today, strict=True):
        click.echo(f"{s.template_id:<28} {s.operation:<14} {s.renders:>8} "
                   f"{s.quantile_ms:>11.0f} {today_ms:>10.0f} {s.suggested_ms:>13.0f}")
    if not apply:
        click.echo("(--apply publishes the suggested thresholds)")
        return
    try:
        publish_suggestions(settings, suggestions, quantile, start, _who(by), _now_ms())
    except KafkaException as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"published {len(suggestions)} thresholds to {settings.topics.slow_thresholds}")


@thresholds.command("set")
@click.argument("operation")
@click.argument("threshold_ms", type=float)
@click.option("--template", "template_id", help="one template [default: every template]")
@click.option("--reason", default="set by hand", show_default=True)
@click.option("--by", help="who decided [default: the current user]")
def thresholds_set(operation: str, threshold_ms: float, template_id: str | None, reason: str,
                   by: str | None) -> None:
    """Tune OPERATION's slow threshold (render_video, api_call, ...) to THRESHOLD_MS."""
    _publish_threshold(operation, threshold_ms, template_id, reason, by)


@thresholds.command("clear")
@click.argument("operation")
@click.option("--template", "template_id", help="one template [default: every template]")
@click.option("--by", help="who decided [default: the current user]")
def thresholds_clear(operation: str, template_id: str | None, by: str | None) -> None:
    """Clear a tuned threshold: the static one applies again."""
    _publish_threshold(operation, None, template_id, "cleared", by)


def _publish_threshold(operation: str, threshold_ms: float | None, template_id: str | None,
                       reason: str, by: str | None) -> None:
    from confluent_kafka import KafkaException

    from ept.threshold_controls import BadSlowThreshold, SlowThreshold, publish_threshold

    settings = _settings()
    try:
        threshold = SlowThreshold(operation.strip(), template_id, threshold_ms, _who(by),
                                  _now_ms(), reason)
        publish_threshold(settings, threshold)
    except (BadSlowThreshold, KafkaException) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{threshold.key}: " + ("cleared" if threshold_ms is None
                                       else f"{threshold_ms:.0f} ms"))


@thresholds.command("list")
def thresholds_list() -> None:
    """The tuned thresholds in force (the static ones apply elsewhere)."""
    from ept.threshold_controls import read_thresholds

    try:
        tuned = read_thresholds(_settings())
    except TimeoutError as exc:
        raise click.ClickException(str(exc)) from None
    if not tuned:
        click.echo("no tuned threshold: the static ones apply")
    for t in tuned:
        click.echo(f"{t.key}  {t.threshold_ms:.0f} ms  by {t.by} at {_iso(t.at_ms)}: {t.reason}")


@main.command()
@click.option("-v", "--verbose", is_flag=True)
def notify(verbose: bool) -> None:
    """Deliver the alert topic to Alertmanager (EPT_ALERTMANAGER_URLS)."""
    from ept.processors.alerts.notifier import run_notifier

    settings = _settings()
    if not settings.alertmanager_url_list:
        raise click.ClickException("EPT_ALERTMANAGER_URLS is not set: name the Alertmanager(s) "
                                   "to deliver to, e.g. http://127.0.0.1:9093")
    _logging(verbose)
    run_notifier(settings)


@main.command()
@click.option("--demo", is_flag=True, help="also drive synthetic traffic with scripted incidents")
@click.option("--worker-processes", type=click.IntRange(1, 256), default=1, show_default=True,
              envvar="EPT_WORKER_PROCESSES",
              help="worker processes (`ept worker --processes`) [env: EPT_WORKER_PROCESSES]")
def run(demo: bool, worker_processes: int) -> None:
    """Run the whole pipeline locally: broker, topics, worker, sink, dashboard."""
    from ept.deploy.supervisor import run_pipeline

    try:
        run_pipeline(_settings(), demo, click.echo, worker_processes)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":
    main()
