"""Which of the settings a client sends an analyst's session takes, as ClickHouse's
settings constraints would (``readonly = 1`` alone refuses them all).

A driver sends settings on every query: clickhouse-go ``max_execution_time`` (its
timeout + 5 s), output format settings, ``session_timezone``. Those that loosen nothing
are applied before ``readonly = 1``: a limit lowered (or kept), a format or time zone
chosen. A limit raised is refused here with ClickHouse's SETTING_CONSTRAINT_VIOLATION
(452), and any other setting is applied after ``readonly = 1``, where ClickHouse itself
refuses a change (READONLY, 164).
"""

from __future__ import annotations

from ept.processors.storage.analyst import ClickHouseError, SqlLimits

# Settings that only shape the output or the reading of the query: nothing to loosen.
_HARMLESS_PREFIXES = ("output_format_", "format_", "date_time_output_", "interval_output_")
_HARMLESS = frozenset({"session_timezone", "date_time_output_format", "extremes",
                       "join_use_nulls", "result_overflow_mode", "timeout_overflow_mode",
                       "totals_mode", "cast_keep_nullable", "max_block_size"})
# Transport settings the endpoint itself takes; they never reach the engine.
TRANSPORT = frozenset({"network_compression_method", "network_zstd_compression_level",
                       "client_protocol_version", "http_headers_progress_interval_ms",
                       "enable_http_compression", "http_zlib_compression_level",
                       "send_progress_in_http_headers", "wait_end_of_query",
                       "buffer_size", "compress", "decompress"})


def analyst_settings(given: dict[str, str], limits: SqlLimits
                     ) -> tuple[dict[str, str], dict[str, str]]:
    """``given`` split into (applied before ``readonly = 1``, applied after it); the
    transport settings dropped. Raises ClickHouseError(452) for a limit raised, or one
    that is not a number."""
    ceilings = {name: int(value) for name, value in limits.session_settings().items()
                if isinstance(value, int)}
    before: dict[str, str] = {}
    after: dict[str, str] = {}
    for name, value in given.items():
        if name in TRANSPORT:
            continue
        if name in ceilings:
            try:
                number = float(value)
            except ValueError:
                raise ClickHouseError(452, "SETTING_CONSTRAINT_VIOLATION",
                                      f"Setting {name} should be a number") from None
            # 0 means "no limit" to ClickHouse: a loosening like any value above
            if number > ceilings[name] or number <= 0:
                raise ClickHouseError(452, "SETTING_CONSTRAINT_VIOLATION",
                                      f"Setting {name} shouldn't be greater than "
                                      f"{ceilings[name]}")
            before[name] = value
        elif name == "readonly":  # the session's is 1 already; ClickHouse refuses others
            if value.strip() != "1":
                after[name] = value
        elif name in _HARMLESS or name.startswith(_HARMLESS_PREFIXES):
            before[name] = value
        else:
            after[name] = value
    return before, after
