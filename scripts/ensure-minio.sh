#!/usr/bin/env bash
# Builds the pinned MinIO server with `go install` into the cache path given
# as $1, once; later runs reuse the cached binary.
set -euo pipefail
dest="$1"
version="$2"
[ -x "$dest" ] && exit 0
echo "building MinIO server $version (once; cached at $dest)" >&2
mkdir -p "$(dirname "$dest")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
GOBIN="$tmp" GOFLAGS=-buildvcs=false go install "github.com/minio/minio@$version"
mv "$tmp/minio" "$dest.tmp"
mv "$dest.tmp" "$dest"
