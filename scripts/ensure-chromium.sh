#!/usr/bin/env bash
# Make sure a headless Chromium is there for the report's browser test; install Debian's through
# apt if not (as scripts/ensure-java.sh does for Java).
set -euo pipefail
for b in chromium chromium-browser; do
  command -v "$b" >/dev/null 2>&1 && exit 0
done
echo "Chromium not found: installing Debian's chromium with apt" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends chromium
