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
if ! .venv/bin/switchboard users list 2>/dev/null | grep -q '^admin[[:space:]]'; then
  password=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(12))')
  echo "$password" | .venv/bin/switchboard users add admin --role admin --password-stdin >/dev/null
  echo "review UI sign-in (first run only): admin / $password"
fi
echo "web chat:  http://127.0.0.1:8000/"
echo "review UI: http://127.0.0.1:8000/review/"
exec .venv/bin/switchboard serve examples/support --host 127.0.0.1 --port 8000
