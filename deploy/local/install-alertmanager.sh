#!/usr/bin/env bash
# Builds Prometheus Alertmanager from its Go module into ~/.cache/ept (or $EPT_CACHE_DIR)
# and prints the binary's path; does nothing when it is already built.
#
# Needs the Go toolchain (1.22 or later). The module archive lacks Alertmanager's prebuilt
# web UI, which its code embeds: the build supplies two placeholder pages for it (ept uses
# the API only; the UI is not served).
set -euo pipefail

version="${EPT_ALERTMANAGER_VERSION:-0.35.0}"
cache="${EPT_CACHE_DIR:-$HOME/.cache/ept}"
binary="$cache/alertmanager-$version/alertmanager"
if [ -x "$binary" ]; then
  echo "$binary"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "Alertmanager is built from source and needs Go (https://go.dev/dl/); or set" \
       "EPT_ALERTMANAGER_BINARY to an alertmanager binary" >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
export GOPATH="$work/gopath" GOFLAGS=-modcacherw
echo "building Alertmanager v$version from its Go module (about a minute)" >&2
module_dir="$(cd "$work" && go mod download -json "github.com/prometheus/alertmanager@v$version" \
  | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
cp -r "$module_dir" "$work/src"
chmod -R u+w "$work/src"
for ui in elm mantine; do
  mkdir -p "$work/src/ui/app/dist/$ui"
  echo "<!doctype html><title>Alertmanager</title><p>UI not built; use the API." \
    > "$work/src/ui/app/dist/$ui/index.html"
done
(cd "$work/src" && go build -o "$work/alertmanager" ./cmd/alertmanager)
mkdir -p "$(dirname "$binary")"
mv "$work/alertmanager" "$binary"
echo "$binary"
