#!/usr/bin/env bash
# Builds the pinned Toxiproxy server (the TCP fault proxy of the fault tests)
# with `go install` into the cache path given as $1, once; later runs reuse
# the cached binary. The module's server command is cmd/server, installed
# as `server`; it is cached under a versioned name.
set -euo pipefail
dest="$1"
version="$2"
[ -x "$dest" ] && exit 0
echo "building Toxiproxy server $version (once; cached at $dest)" >&2
mkdir -p "$(dirname "$dest")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
GOBIN="$tmp" GOFLAGS=-buildvcs=false go install "github.com/Shopify/toxiproxy/v2/cmd/server@$version"
mv "$tmp/server" "$dest.tmp"
mv "$dest.tmp" "$dest"
