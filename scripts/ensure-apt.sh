#!/usr/bin/env bash
# Usage: ensure-apt.sh COMMAND PACKAGE
# Installs Debian's PACKAGE with apt-get when COMMAND is not on PATH.
set -euo pipefail
cmd="$1"
pkg="$2"
command -v "$cmd" >/dev/null 2>&1 && exit 0
[ -x "/usr/sbin/$cmd" ] && exit 0
echo "$cmd not found; installing $pkg with apt-get" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "need root or sudo to install $pkg" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || { echo "$pkg installed but $cmd still not found" >&2; exit 1; }
