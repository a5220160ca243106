#!/usr/bin/env bash
# Usage: ensure-apt-python.sh MODULE PACKAGE
# Installs Debian's PACKAGE with apt-get when /usr/bin/python3 (Debian's
# Python, which Debian's python3-* packages install into) cannot import
# MODULE.
set -euo pipefail
module="$1"
pkg="$2"
py=/usr/bin/python3
# -I: isolated, so that a directory named like the module in the
# current directory (this repository has a kafka/) does not count.
check() { [ -x "$py" ] && "$py" -I -c "import $module" >/dev/null 2>&1; }
check && exit 0
echo "python module $module not found for $py; installing $pkg with apt-get" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "need root or sudo to install $pkg" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
check || { echo "$pkg installed but $py still cannot import $module" >&2; exit 1; }
