"""Running a named query from the command line: directly, or through the running sink.

The embedded engine admits one process per data directory. When the sink holds it,
the query goes to the sink's HTTP API instead; the result is the same.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

from ept.core.settings import Settings
from ept.processors.storage import queries
from ept.processors.storage.connection import EngineHeldElsewhere, clickhouse_client
from ept.processors.storage.queries import parse_time
from ept.processors.web.query_api import render


def run_query(settings: Settings, name: str, since: str | None, until: str | None,
              template: str | None, fmt: str) -> str:
    """The named query's result rendered as ``fmt``. Raises ValueError / KeyError for bad
    input and RuntimeError when neither ClickHouse nor the sink's API can be reached."""
    name = queries.canonical_name(name)
    since_time, until_time = parse_time(since, "since"), parse_time(until, "until")
    try:
        client = clickhouse_client(settings)
    except EngineHeldElsewhere:
        return _through_sink(settings, name, since, until, template, fmt)
    return render(queries.run(client, name, since_time, until_time, template), fmt)


def _through_sink(settings: Settings, name: str, since: str | None, until: str | None,
                  template: str | None, fmt: str) -> str:
    params = {key: value for key, value in
              {"since": since, "until": until, "template": template, "format": fmt}.items()
              if value}
    url = (f"http://{settings.http_host}:{settings.sink_port}/api/query/"
           f"{urllib.parse.quote(name)}?{urllib.parse.urlencode(params)}")
    request = urllib.request.Request(url)
    if settings.api_token is not None:
        request.add_header("Authorization", f"Bearer {settings.api_token.get_secret_value()}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as exc:
        detail = json.loads(exc.read() or b"{}").get("error", exc.reason)
        raise ValueError(detail) from None
    except OSError as exc:
        raise RuntimeError(
            f"the embedded ClickHouse is held by another process and the sink's API at "
            f"{url.split('/api')[0]} does not answer ({exc})") from None
