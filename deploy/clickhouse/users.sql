-- Users for a ClickHouse server: the sink writes, analysts only read.
-- Apply with deploy/clickhouse/create-users.sh, which fills the passwords from the
-- environment (and refuses empty or placeholder ones); never edit a password in here.
CREATE USER IF NOT EXISTS ept_writer IDENTIFIED WITH sha256_password
    BY '{{EPT_CLICKHOUSE_WRITER_PASSWORD}}'
    SETTINGS async_insert = 0;

-- Analysts: read-only (readonly = 1 also keeps them from raising their limits), bounded
-- like the embedded engine's SQL endpoint (EPT_SQL_MAX_*).
CREATE SETTINGS PROFILE IF NOT EXISTS ept_analyst_limits SETTINGS
    readonly = 1,
    max_execution_time = 60,
    max_result_rows = 10000000, max_result_bytes = 1073741824, result_overflow_mode = 'throw',
    max_memory_usage = 2147483648;
CREATE USER IF NOT EXISTS ept_analyst IDENTIFIED WITH sha256_password
    BY '{{EPT_CLICKHOUSE_ANALYST_PASSWORD}}'
    SETTINGS PROFILE 'ept_analyst_limits';

CREATE DATABASE IF NOT EXISTS ept;
GRANT SELECT, INSERT, CREATE TABLE, CREATE VIEW, ALTER, DROP TABLE ON ept.* TO ept_writer;

-- Every column but the account and user identifiers (personal data); grant those
-- (GRANT SELECT(user_id, account_id) ON ept.events TO ...) to whoever needs them.
GRANT SELECT(event_id, event, timestamp, service, environment, sdk_version, render_id,
             template_id, render_type, reason, error_message, duration, retry_attempt,
             threshold_ms, slowness_factor, width, height, endpoint, method, status_code,
             request_id, rate_limited, retry_after_s, source_topic, source_partition,
             source_offset, inserted_at, event_name, templateId, renderType, statusCode,
             slownessFactor) ON ept.events TO ept_analyst;
GRANT SELECT ON ept.events_hourly TO ept_analyst;
GRANT SELECT ON ept.events_daily TO ept_analyst;
