#!/usr/bin/env bash
# Debian's chromium, for the test that opens align's HTML report in a real headless browser.
# No-op when a chromium is already installed.
set -euo pipefail
if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then exit 0; fi
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
if ! command -v apt-get >/dev/null; then
  echo "setup-chromium: no chromium and no apt-get: install chromium to run the report test" >&2
  exit 2
fi
echo "setup-chromium: installing Debian's chromium" >&2
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium >/dev/null
