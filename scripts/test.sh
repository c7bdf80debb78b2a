#!/usr/bin/env bash
# The test suite on a fresh machine: installs nsys and chromium (Debian) and align's dev extras,
# then runs pytest. Real nsys, a real browser and aiconfigurator itself are required
# (ALIGN_REQUIRE_NSYS=1, ALIGN_REQUIRE_CHROMIUM=1, ALIGN_REQUIRE_AIC=1): those tests fail rather
# than skip without them.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-nsys.sh
scripts/setup-chromium.sh
scripts/venv.sh dev,aic
ALIGN_REQUIRE_NSYS=1 ALIGN_REQUIRE_CHROMIUM=1 ALIGN_REQUIRE_AIC=1 .venv/bin/python -m pytest -q "$@"
