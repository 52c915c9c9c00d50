-- Users for a ClickHouse server: the sink writes, analysts only read.
-- Passwords come from the server's environment (docker-entrypoint) or your secret store;
-- replace the placeholders when applying by hand.
CREATE USER IF NOT EXISTS ept_writer IDENTIFIED WITH sha256_password BY 'change-me'
    SETTINGS async_insert = 0;
CREATE USER IF NOT EXISTS ept_analyst IDENTIFIED WITH sha256_password BY 'change-me-too'
    SETTINGS readonly = 1, max_execution_time = 60;

CREATE DATABASE IF NOT EXISTS ept;
GRANT SELECT, INSERT, CREATE TABLE, CREATE VIEW, ALTER, DROP TABLE ON ept.* TO ept_writer;
GRANT SELECT ON ept.* TO ept_analyst;
