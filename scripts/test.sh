#!/usr/bin/env bash
# The test suite on a fresh machine: installs nsys and chromium (Debian) and align's dev extras,
# then runs pytest. Real nsys and a real browser are required (ALIGN_REQUIRE_NSYS=1,
# ALIGN_REQUIRE_CHROMIUM=1): their tests fail rather than skip without them.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-nsys.sh
scripts/setup-chromium.sh
scripts/venv.sh dev
ALIGN_REQUIRE_NSYS=1 ALIGN_REQUIRE_CHROMIUM=1 .venv/bin/python -m pytest -q "$@"
