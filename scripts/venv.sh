#!/usr/bin/env bash
# Create .venv (once) and install align with the given extras into it. Usage: scripts/venv.sh [EXTRAS]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || $PY -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".${1:+[$1]}"
