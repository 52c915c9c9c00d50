"""ClickHouse storage: the tables (versioned migrations), named queries, account deletion."""
