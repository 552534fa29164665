#!/usr/bin/env bash
# Installs everything Switchboard needs into .venv (idempotent).
#   bash .ci/setup.sh          runtime + training (for the demo)
#   bash .ci/setup.sh --test   also the test tools: Chromium, Prometheus/promtool, linters
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "error: Switchboard needs Python 3.11 (found $("$PYTHON" --version 2>&1)); set PYTHON=python3.11" >&2
  exit 1
fi

if [ "$want_test" = 1 ]; then
  missing=()
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip=".venv/bin/pip"
$pip install -q --upgrade pip
# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
$pip install -q torch==2.13.0
extras="train"
[ "$want_test" = 1 ] && extras="train,test"
$pip install -q -e ".[$extras]"
