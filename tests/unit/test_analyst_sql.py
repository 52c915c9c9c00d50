"""The pure parts of analysts' SQL: errors, formats, setting literals, the bind rule."""

from __future__ import annotations

import pytest

from ept.core.settings import SettingsError, load_settings
from ept.processors.storage.analyst import (
    ClickHouseError,
    output_format,
    setting_literal,
)
from ept.processors.web.sql.endpoint import content_type


def test_engine_errors_keep_clickhouses_code_name_and_message() -> None:
    error = ClickHouseError.from_engine(RuntimeError(
        "Code: 164. DB::Exception: Code: 164. DB::Exception: Cannot modify 'max_threads' "
        "setting in readonly mode. (READONLY) (version 26.9.2.1). (READONLY)"))
    assert (error.code, error.name) == (164, "READONLY")
    assert str(error) == ("Code: 164. DB::Exception: Cannot modify 'max_threads' setting in "
                          "readonly mode. (READONLY)")
    question = ClickHouseError.from_engine(RuntimeError(
        "Code: 47. DB::Exception: Did you forget to add it?. (UNKNOWN_IDENTIFIER)"))
    assert str(question).endswith("Did you forget to add it? (UNKNOWN_IDENTIFIER)")
    other = ClickHouseError.from_engine(RuntimeError("engine exploded"))
    assert (other.code, other.name) == (1001, "STD_EXCEPTION")


def test_the_format_clause_wins_over_the_default() -> None:
    assert output_format("SELECT 1 FORMAT Parquet", "CSV") == "Parquet"
    assert output_format("SELECT 1 format JSONEachRow;", None) == "JSONEachRow"
    assert output_format("SELECT 'FORMAT CSV' AS x", "JSON") == "JSON"
    assert output_format("SELECT 1", None) == "TabSeparated"
    assert content_type("Parquet") == "application/octet-stream"
    assert content_type("CSVWithNames").startswith("text/csv")


def test_setting_literals_are_quoted_and_names_checked() -> None:
    assert setting_literal("max_threads", "2") == "max_threads = 2"
    assert setting_literal("date_time_output_format", "iso") == "date_time_output_format = 'iso'"
    assert setting_literal("x", "a'b\\c") == "x = 'a\\'b\\\\c'"
    with pytest.raises(ClickHouseError, match="Unknown setting 'bad name;'"):
        setting_literal("bad name;", "1")


def test_serving_sql_beyond_loopback_needs_a_password() -> None:
    with pytest.raises(SettingsError, match=r"EPT_SQL_BIND=0\.0\.0\.0 .*EPT_ANALYST_PASSWORD"):
        load_settings(sql_bind="0.0.0.0")
    assert load_settings(sql_bind="0.0.0.0", analyst_password="s3cret").sql_bind == "0.0.0.0"
    assert "s3cret" not in repr(load_settings(sql_bind="0.0.0.0", analyst_password="s3cret"))
