#!/usr/bin/env bash
# Installs the system packages ept needs on Debian/Ubuntu when they are missing:
# Java 17+ and Maven (the native Kafka broker); with `--browser` also Chromium (the
# dashboard's browser test), with `--clients` Node.js and npm, a JDK and Go (the
# ClickHouse clients the SQL endpoint is tested with: JavaScript, JDBC, Go), with
# `--bench` also wrk (the integrations benchmark).
set -euo pipefail

missing=()
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
case "${1:-}" in
  --browser) command -v chromium >/dev/null 2>&1 || missing+=(chromium) ;;
  --clients)
    command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
    command -v javac >/dev/null 2>&1 || missing+=(openjdk-17-jdk-headless)
    command -v go >/dev/null 2>&1 || missing+=(golang-go) ;;
  --bench) command -v wrk >/dev/null 2>&1 || missing+=(wrk) ;;
esac
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "missing: ${missing[*]}; install them with your package manager" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing ${missing[*]} (apt-get)"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
