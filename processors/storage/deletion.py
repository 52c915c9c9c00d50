"""Deleting an account's data from every table (the specification's account deletion)."""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

from ept.processors.storage.tables import RAW_TABLE, ROLLUP_TABLES


def delete_account(client: Client, account_id: str) -> dict[str, int]:
    """Remove every row of ``account_id`` from raw and rollup tables; rows removed per table.

    Blocks until the deletions are applied (synchronous mutations). Raises ValueError for
    an empty account id; ClickHouse errors propagate.
    """
    if not account_id.strip():
        raise ValueError("account_id: must not be empty")
    targets = {RAW_TABLE: "account_id", **{table: "account" for table in ROLLUP_TABLES}}
    removed: dict[str, int] = {}
    for table, column in targets.items():
        condition = f"{column} = {{account:String}}"
        count_expression = "count()" if table == RAW_TABLE else "sum(events)"
        rows = client.query(f"SELECT {count_expression} FROM {table} WHERE {condition}",
                            parameters={"account": account_id}).result_rows[0][0]
        removed[table] = int(rows or 0)
        if removed[table]:
            client.command(f"ALTER TABLE {table} DELETE WHERE {condition}",
                           parameters={"account": account_id}, settings={"mutations_sync": 2})
    return removed
