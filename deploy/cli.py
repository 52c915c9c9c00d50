"""``ept``: the single command line of the whole system.

Subcommands import their component lazily, so ``ept broker status`` does not load Faust.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from deploy.settings import Settings, SettingsError, load_settings


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def main() -> None:
    """ept: Error & Performance Tracking for renders and API calls."""


# -- broker -------------------------------------------------------------------------------

@main.group()
def broker() -> None:
    """Run a local single-node Apache Kafka broker (KRaft) for development and tests."""


def _broker_options(func):  # type: ignore[no-untyped-def]
    func = click.option("--port", type=int, default=9092, show_default=True,
                        help="client port; the controller uses port+1")(func)
    func = click.option("--data-dir", type=click.Path(path_type=Path), default=None,
                        help="broker state [default: $EPT_STATE_DIR/kafka]")(func)
    return func


def _local_broker(port: int, data_dir: Path | None):  # type: ignore[no-untyped-def]
    from deploy.broker import LocalBroker

    return LocalBroker(data_dir or _settings().state_dir / "kafka", port)


@broker.command("start")
@_broker_options
def broker_start(port: int, data_dir: Path | None) -> None:
    """Start the broker (idempotent) and wait until it answers."""
    from deploy.broker import BrokerError

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


if __name__ == "__main__":
    main()
