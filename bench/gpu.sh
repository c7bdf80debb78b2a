#!/usr/bin/env bash
# bench/attribution.py on a GPU machine of ours, against its nsys 2025.3, with align shipped as a
# wheel: build the wheels here first (align, and those missing there: duckdb, its SQLite reader,
# sqlite-utils and deps) into .whl/, and the libdw .debs into .debs/ (see scripts/gpu-env.sh):
#   pip wheel --no-deps -w .whl . && pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl duckdb==1.5.5 \
#     duckdb-extension-sqlite-scanner==1.5.5 sqlite-utils click-default-group sqlite-fts4
# then run there: bench/gpu.sh [bench/attribution.py options]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-env.sh
# the wheel, not the checkout, must be what runs
export PYTHONPATH=/tmp/align-site
cd /tmp
python3 -c 'import align, sys; print("align from", align.__file__, file=sys.stderr)'
python3 "$OLDPWD/bench/attribution.py" --source "$OLDPWD/profiles/examples/llama_e2e_eager/report.sqlite" "$@"
