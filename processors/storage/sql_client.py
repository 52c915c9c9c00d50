"""Analysts' SQL from the command line (``ept sql``), wherever ClickHouse is.

* ``EPT_CLICKHOUSE_URL`` names a server: the query goes to its HTTP interface.
* Else the embedded engine: in an engine host started for the query when no other
  process holds it, otherwise sent to the SQL endpoint of the sink that does
  (``EPT_SQL_PORT``).

Either way the query runs read-only and bounded, and ClickHouse renders the result.
"""

from __future__ import annotations

import base64
import urllib.error
import urllib.parse
import urllib.request

from ept.core.settings import Settings
from ept.processors.storage.analyst import AnalystEngine, ClickHouseError
from ept.processors.storage.connection import EngineHeldElsewhere, engine_host

# ``ept sql --format`` -> the ClickHouse format that renders it
FORMATS = {"table": "PrettyCompactMonoBlock", "tsv": "TabSeparatedWithNames",
           "csv": "CSVWithNames", "json": "JSONEachRow", "parquet": "Parquet"}
BINARY_FORMATS = ("parquet",)


def run_sql(settings: Settings, sql: str, fmt: str, timeout_s: float = 600.0) -> bytes:
    """``sql``'s result as ``fmt`` (a key of FORMATS; the query's own FORMAT clause wins).
    Blocks. Raises ClickHouseError when ClickHouse refuses the query, RuntimeError when no
    ClickHouse can be reached."""
    clickhouse_format = FORMATS[fmt]
    server = settings.clickhouse_server
    if server is not None:
        scheme = "https" if server.secure else "http"
        return _over_http(f"{scheme}://{server.host}:{server.port}/", server.username,
                          server.password, server.database, sql, clickhouse_format, timeout_s)
    try:
        link = engine_host(settings)  # analysts' SQL never runs in this process
    except EngineHeldElsewhere:
        host = "127.0.0.1" if settings.sql_bind in ("0.0.0.0", "::") else settings.sql_bind
        password = settings.analyst_password
        return _over_http(f"http://{host}:{settings.sql_port}/", settings.analyst_user,
                          password.get_secret_value() if password else "", None, sql,
                          clickhouse_format, timeout_s)
    try:
        return AnalystEngine(link).run(sql, default_format=clickhouse_format).body
    finally:
        link.close()


def _over_http(url: str, user: str, password: str, database: str | None, sql: str,
               clickhouse_format: str, timeout_s: float) -> bytes:
    parameters = {"default_format": clickhouse_format}
    if database:
        parameters["database"] = database
    request = urllib.request.Request(
        f"{url}?{urllib.parse.urlencode(parameters)}", data=sql.encode(), method="POST",
        headers={"Authorization": "Basic " + base64.b64encode(
            f"{user}:{password}".encode()).decode()})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            return bytes(reply.read())
    except urllib.error.HTTPError as error:
        raise ClickHouseError.from_engine(
            RuntimeError(error.read().decode(errors="replace"))) from None
    except OSError as error:
        raise RuntimeError(f"ClickHouse at {url} does not answer ({error})") from None
