#!/usr/bin/env bash
# Creates ept's ClickHouse users (deploy/clickhouse/users.sql) with their passwords taken
# from the environment: EPT_CLICKHOUSE_WRITER_PASSWORD and EPT_CLICKHOUSE_ANALYST_PASSWORD.
# Refuses an empty, short or placeholder password. Run by the ClickHouse image's
# entrypoint (docker-entrypoint-initdb.d, compose), or by hand against a server:
#   CLICKHOUSE_USER=admin CLICKHOUSE_PASSWORD=... bash deploy/clickhouse/create-users.sh
# The statements go to ${CLICKHOUSE_CLIENT:-clickhouse-client --multiquery}, which reads its
# own credentials from CLICKHOUSE_USER / CLICKHOUSE_PASSWORD: no password on a command line.
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true  # '&' in a password stays an '&'

sql="${EPT_USERS_SQL:-/etc/ept/users.sql}"
[ -f "$sql" ] || sql="$(dirname "$0")/users.sql"
statements="$(<"$sql")"
for name in EPT_CLICKHOUSE_WRITER_PASSWORD EPT_CLICKHOUSE_ANALYST_PASSWORD; do
  value="${!name:-}"
  case "$(printf '%s' "$value" | tr '[:upper:]' '[:lower:]')" in
    ""|change-me|changeme|change-me-too|password|secret|default|admin)
      echo "create-users: $name is empty or a placeholder: set a real password" >&2; exit 1 ;;
  esac
  if [ "${#value}" -lt 12 ]; then
    echo "create-users: $name is shorter than 12 characters" >&2; exit 1
  fi
  escaped="${value//\\/\\\\}"           # a SQL string literal: \ and ' escaped
  escaped="${escaped//\'/\\\'}"
  statements="${statements//"{{$name}}"/$escaped}"
done
printf '%s\n' "$statements" | ${CLICKHOUSE_CLIENT:-clickhouse-client --multiquery}
