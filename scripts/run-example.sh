#!/usr/bin/env bash
# Installs the project into .venv (created if missing) and runs a campaign on a paper folder
# on the embedded default: a private nats-server, SQLite event stores, no model.
# Usage: scripts/run-example.sh [paper-folder] [autosota run options...]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --disable-pip-version-check -q --upgrade pip
.venv/bin/python -m pip install --disable-pip-version-check -q -e .
paper=${1:-examples/tiny-forecaster}
shift || true
exec .venv/bin/autosota run "$paper" "$@"
