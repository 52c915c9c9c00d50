"""The SQL endpoint: ClickHouse's HTTP interface over the embedded engine, for analysts."""
