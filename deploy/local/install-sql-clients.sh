#!/usr/bin/env bash
# Builds the ClickHouse clients the SQL endpoint's tests run (tests/clients/) into the
# cache, once: ~/.cache/ept/clients (or $EPT_CACHE_DIR/clients).
#
#   jdbc/  ClickHouse's JDBC driver com.clickhouse:jdbc-v2 and its dependencies from Maven
#          Central (lib/) and tests/clients/jdbc/ClickHouseJdbc.java compiled (classes/)
#   go/    tests/clients/go built with clickhouse-go v2 from the Go module proxy (chgo)
#
# Each is rebuilt only when its sources change (a stamp holds their hash), so a second run
# costs nothing. Needs Maven + a JDK and Go (install-system-deps.sh --clients).
set -euo pipefail
cd "$(dirname "$0")/../.."

cache="${EPT_CACHE_DIR:-$HOME/.cache/ept}/clients"
mkdir -p "$cache"

fingerprint() { cat "$@" | sha256sum | cut -c1-16; }

jdbc="$cache/jdbc"
stamp="$(fingerprint tests/clients/jdbc/pom.xml tests/clients/jdbc/ClickHouseJdbc.java)"
if [ "$(cat "$jdbc/.stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "building the JDBC client (jdbc-v2, Maven Central) into $jdbc" >&2
  rm -rf "$jdbc"
  mvn -q -B -Dstyle.color=never -f tests/clients/jdbc/pom.xml dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$jdbc/lib"
  javac -d "$jdbc/classes" -cp "$jdbc/lib/*" tests/clients/jdbc/ClickHouseJdbc.java
  echo "$stamp" > "$jdbc/.stamp"
fi

go_client="$cache/go"
stamp="$(fingerprint tests/clients/go/go.mod tests/clients/go/go.sum tests/clients/go/main.go)"
if [ "$(cat "$go_client/.stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "building the Go client (clickhouse-go v2, Go module proxy) into $go_client" >&2
  rm -rf "$go_client"
  mkdir -p "$go_client"
  (cd tests/clients/go && GOFLAGS="-mod=readonly -buildvcs=false" go build -o "$go_client/chgo" .)
  echo "$stamp" > "$go_client/.stamp"
fi
