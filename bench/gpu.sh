#!/usr/bin/env bash
# bench/speed.py on a GPU machine of ours, against its nsys 2025.3, with align shipped as a wheel
# and the dependencies missing there (duckdb, its SQLite reader, typer < 0.29) beside it. Here:
#   mkdir -p .whl-speed && pip wheel --no-deps -w .whl-speed . && pip download --no-deps \
#     --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
#     --platform manylinux2014_x86_64 -d .whl-speed duckdb==1.5.5 \
#     duckdb-extension-sqlite-scanner==1.5.5 typer==0.28.0 annotated-doc shellingham
#   mkdir -p .whl-speed-duckdb && mv .whl-speed/duckdb-1.5.5-*.whl .whl-speed-duckdb/
# and the libdw .debs into .debs/ (scripts/gpu-env.sh). The checkout and every wheel exceed one
# carry (64 MiB): carry .whl-speed-duckdb in a first call (`true`), then, while the machine is
# warm, .whl-speed and .debs in the call that runs: bench/gpu.sh [bench/speed.py options]
set -euo pipefail
cd "$(dirname "$0")/.."
export ALIGN_WHEELS=".whl-speed-duckdb .whl-speed"
. scripts/gpu-env.sh
# the wheel, not the checkout, must be what runs
export PYTHONPATH=/tmp/align-site
cd /tmp
python3 -c 'import align, sys; print("align from", align.__file__, file=sys.stderr)'
python3 "$OLDPWD/bench/speed.py" "$@"
