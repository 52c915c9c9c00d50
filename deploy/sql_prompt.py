"""``ept sql`` without SQL, at a terminal: an interactive prompt.

Statements may span several lines and end with ``;``; each runs as ``ept sql`` runs one
(:func:`~ept.processors.storage.sql_client.run_sql`). The history is kept across sessions
in ``$EPT_STATE_DIR/sql_history``.
"""

from __future__ import annotations

import click

from ept.core.settings import Settings

EXIT_WORDS = ("exit", "quit")


class StatementLines:
    """Lines typed at the prompt, assembled into statements."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    @property
    def prompt(self) -> str:
        """``ept> `` before a statement, ``...> `` within one."""
        return "...> " if self._lines else "ept> "

    def ends_session(self, line: str) -> bool:
        """Whether ``line`` leaves the prompt: ``exit`` or ``quit`` outside a statement."""
        return not self._lines and line.strip().lower() in EXIT_WORDS

    def add(self, line: str) -> str | None:
        """The statement ``line`` completes (it ends with ``;``), without its ``;``; None
        while the statement goes on."""
        self._lines.append(line)
        if not line.rstrip().endswith(";"):
            return None
        statement = "\n".join(self._lines).rstrip().rstrip(";")
        self._lines = []
        return statement


def sql_prompt(settings: Settings, fmt: str) -> None:
    """Read statements until Ctrl-D or ``exit`` and print each one's result in ``fmt``
    (a statement ClickHouse refuses prints its error on stderr, and the prompt goes on).
    Blocks on the terminal; raises OSError when the history cannot be read or written."""
    import readline

    from ept.processors.storage.analyst import ClickHouseError
    from ept.processors.storage.sql_client import run_sql

    history = settings.state_dir / "sql_history"
    history.parent.mkdir(parents=True, exist_ok=True)
    if history.exists():
        readline.read_history_file(history)
    click.echo("ept sql: end a statement with ';', leave with Ctrl-D or exit")
    lines = StatementLines()
    try:
        while True:
            try:
                line = input(lines.prompt)
            except EOFError:
                break
            if lines.ends_session(line):
                break
            statement = lines.add(line)
            if statement is None:
                continue
            try:
                click.echo(run_sql(settings, statement, fmt).decode(errors="replace"), nl=False)
            except (ClickHouseError, RuntimeError) as exc:
                click.echo(str(exc), err=True)
    finally:
        readline.write_history_file(history)
