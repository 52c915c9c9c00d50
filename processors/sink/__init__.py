"""The ClickHouse sink: Kafka event topics -> ``events`` table, exactly once."""
