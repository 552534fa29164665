#!/usr/bin/env bash
# Sets up Switchboard, trains the example support bot if it has no model yet, and serves
# it with the web chat at http://127.0.0.1:8000/
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if ! ls examples/support/models/*/manifest.json >/dev/null 2>&1; then
  echo "training the example bot (first run only)..."
  .venv/bin/switchboard train examples/support
fi
export SWITCHBOARD_DATA_DIR=${SWITCHBOARD_DATA_DIR:-data}
if [ -z "${SWITCHBOARD_ADMIN_TOKEN:-}" ]; then
  SWITCHBOARD_ADMIN_TOKEN=$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(16))')
  export SWITCHBOARD_ADMIN_TOKEN
  echo "admin token for this run (transcripts API): $SWITCHBOARD_ADMIN_TOKEN"
fi
echo "web chat: http://127.0.0.1:8000/"
exec .venv/bin/switchboard serve examples/support --host 127.0.0.1 --port 8000
