#!/usr/bin/env bash
# The test suite on a fresh machine: installs nsys (Debian) and align's dev extras, then runs
# pytest. Real nsys is required (ALIGN_REQUIRE_NSYS=1): its tests fail rather than skip without it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-nsys.sh
scripts/venv.sh dev
ALIGN_REQUIRE_NSYS=1 .venv/bin/python -m pytest -q "$@"
