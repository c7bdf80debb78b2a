#!/usr/bin/env bash
# Install a real nsys on a Debian (bookworm) CPU machine: Debian's non-free nsight-systems 2022.4,
# plus the link its profiler needs to find the report importer. No-op when an nsys already works.
set -euo pipefail
if [ -n "${NSYS:-}" ] && "$NSYS" --version >/dev/null 2>&1; then exit 0; fi
if command -v nsys >/dev/null && nsys --version >/dev/null 2>&1; then
  :
else
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  if ! command -v apt-get >/dev/null; then
    echo "setup-nsys: no nsys and no apt-get: install Nsight Systems yourself or set NSYS=/path/to/nsys" >&2
    exit 2
  fi
  echo "setup-nsys: installing Debian's nsight-systems (about 170 MB)" >&2
  $SUDO tee /etc/apt/sources.list.d/align-nonfree.sources >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: contrib non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq nsight-systems >/dev/null
fi
# Debian splits the importer from the target folder; nsys looks for it beside the target folder.
if [ -d /usr/lib/nsight-systems/host-linux-x64 ] && [ -d /usr/lib/x86_64-linux-gnu/nsight-systems ] \
   && [ ! -e /usr/lib/x86_64-linux-gnu/nsight-systems/host-linux-x64 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO ln -sfn /usr/lib/nsight-systems/host-linux-x64 /usr/lib/x86_64-linux-gnu/nsight-systems/host-linux-x64
fi
nsys --version
