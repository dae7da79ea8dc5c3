#!/usr/bin/env bash
# Make sure a Java 17 runtime is there for Spark; install the headless JRE through apt if not.
set -euo pipefail
if ls /usr/lib/jvm/java-17-openjdk*/bin/java >/dev/null 2>&1; then
  exit 0
fi
if command -v java >/dev/null 2>&1 && java -version 2>&1 | grep -qE 'version "(17|1[89]|2[0-9])'; then
  exit 0
fi
echo "Java 17 not found: installing openjdk-17-jre-headless with apt" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends openjdk-17-jre-headless
