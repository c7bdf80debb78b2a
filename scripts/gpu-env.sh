# Source this on a GPU machine of ours (H100/H200 image) before running align there:
#   . scripts/gpu-env.sh
# - installs the wheels in $ALIGN_WHEELS (folders, space-separated; default .whl/: align's
#   dependencies missing there, or align itself) into /tmp/align-site and puts it and the checkout
#   on PYTHONPATH (a carry is limited in size: a large wheel can come in an earlier call of its own);
# - where the only nsys is the one bundled with Nsight Compute, makes its importer loadable
#   (Debian's libdw1/libelf1 .debs in .debs/) and links the host-linux-x64 folder it looks for,
#   then exports NSYS.
WHEELS=$(for d in ${ALIGN_WHEELS:-.whl}; do ls "$d"/*.whl 2>/dev/null || true; done)
if [ -n "$WHEELS" ]; then
  # shellcheck disable=SC2086
  ${PYTHON:-python3} -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/align-site $WHEELS
  export PYTHONPATH=/tmp/align-site:${PYTHONPATH:-}
fi
# mock/ is the package align_mock (pyproject's package-dir); without an install, link it
mkdir -p /tmp/align-pkgs && ln -sfn "$PWD/mock" /tmp/align-pkgs/align_mock
export PYTHONPATH=$PWD:/tmp/align-pkgs:${PYTHONPATH:-}
NCU_HOST=$(ls -d /opt/nvidia/nsight-compute/*/host 2>/dev/null | sort -V | tail -1 || true)
if [ -z "${NSYS:-}" ] && ! command -v nsys >/dev/null && [ -n "$NCU_HOST" ]; then
  if [ -d .debs ]; then
    mkdir -p /tmp/dw && for d in .debs/*.deb; do dpkg -x "$d" /tmp/dw; done
    export LD_LIBRARY_PATH=/tmp/dw/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
  fi
  desktop=$(ls -d "$NCU_HOST"/linux-desktop-* | head -1)
  [ -e "$NCU_HOST/host-linux-x64" ] || ln -sfn "$desktop" "$NCU_HOST/host-linux-x64"
  export NSYS=$NCU_HOST/target-linux-x64/nsys
fi
