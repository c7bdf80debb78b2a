"""Find a working ``nsys``: the ``NSYS`` variable, PATH, then the usual install folders.

Nsight Compute ships its own nsys (``.../nsight-compute/<ver>/host/target-linux-x64/nsys``), which
is the only one on some GPU images; its report importer lives in a sibling ``host-linux-x64``
folder that may be missing or unable to load, in which case profiling leaves only a ``.qdstrm``.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from align.errors import NsysNotFound

INSTALL_HINT = (
    "install Nsight Systems (https://developer.nvidia.com/nsight-systems; on Debian: "
    "apt-get install nsight-systems from non-free) or set NSYS=/path/to/nsys"
)

# Searched after NSYS and PATH, newest version first.
SEARCH_GLOBS = (
    "/opt/nvidia/nsight-systems/*/bin/nsys",
    "/opt/nvidia/nsight-systems/*/target-linux-x64/nsys",
    "/opt/nvidia/nsight-systems-cli/*/bin/nsys",
    "/opt/nvidia/nsight-systems-cli/*/target-linux-x64/nsys",
    "/usr/local/cuda*/bin/nsys",
    "/usr/local/cuda*/nsight-systems-*/bin/nsys",
    "/usr/local/cuda*/nsight-systems-*/target-linux-x64/nsys",
    "/opt/nvidia/nsight-compute/*/host/target-linux-x64/nsys",
    "/usr/lib/nsight-systems/bin/nsys",
    "/usr/lib/x86_64-linux-gnu/nsight-systems/target-linux-x64/nsys",
)


@dataclass(frozen=True)
class NsysInfo:
    """A located nsys: where it is, its version, and whether it can turn a capture into a report."""

    path: str
    version: str
    source: str
    importer: str | None
    can_import: bool
    import_problem: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _version_of(path: str) -> str | None:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"(\d{4}\.\d+(?:\.\d+)*)", out.stdout + out.stderr)
    return m.group(1) if m else None


def _version_key(path: str) -> tuple[int, ...]:
    m = re.search(r"(\d{4})\.(\d+)(?:\.(\d+))?", path)
    return tuple(int(g or 0) for g in m.groups()) if m else (0,)


def find_importer(nsys_path: str) -> str | None:
    """QdstrmImporter next to nsys: ``<target dir>/../host-linux-x64`` (or the bin/ layout of full installs)."""
    override = os.environ.get("NSYS_IMPORTER")
    if override:
        return override if os.access(override, os.X_OK) else None
    real = Path(os.path.realpath(nsys_path))
    candidates = [
        real.parent.parent / "host-linux-x64" / "QdstrmImporter",
        real.parent.parent / "host-linux-x64" / "QdstrmImporter.bin",
    ]
    # Nsight Compute's bundle names its host folder after the glibc it was built for.
    candidates += [Path(p) for p in sorted(glob.glob(str(real.parent.parent / "linux-desktop-*" / "QdstrmImporter")))]
    candidates += [Path(p) for p in sorted(glob.glob(str(real.parent.parent.parent / "*" / "host-linux-x64" / "QdstrmImporter")))]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    return None


def importer_problem(nsys_path: str, importer: str | None) -> str | None:
    """Why nsys would leave only a ``.qdstrm``, or None when the importer is where nsys looks and runs."""
    if importer is None:
        return "no QdstrmImporter found next to nsys"
    real = Path(os.path.realpath(nsys_path))
    expected = real.parent.parent / "host-linux-x64"
    if not expected.is_dir():
        return f"nsys looks for its importer in {expected}, which does not exist (link it to {Path(importer).parent})"
    try:
        out = subprocess.run([importer, "--help"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"QdstrmImporter does not run: {exc}"
    if out.returncode != 0:
        lines = (out.stderr or out.stdout).strip().splitlines()
        return "QdstrmImporter does not run: " + (lines[-1] if lines else f"exit code {out.returncode}")
    return None


def _candidates() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    on_path = shutil.which("nsys")
    if on_path:
        found.append((on_path, "PATH"))
    globbed: list[str] = []
    for pattern in SEARCH_GLOBS:
        globbed.extend(glob.glob(pattern))
    for p in sorted(set(globbed), key=_version_key, reverse=True):
        found.append((p, "install folder"))
    return found


def locate(path: str) -> tuple[str, str]:
    """Resolve an explicit nsys path (file or folder holding it)."""
    p = Path(path).expanduser()
    if p.is_dir():
        for sub in ("nsys", "bin/nsys", "target-linux-x64/nsys"):
            if (p / sub).is_file():
                p = p / sub
                break
    if not (p.is_file() and os.access(p, os.X_OK)):
        raise NsysNotFound(f"NSYS={path} is not an executable nsys", INSTALL_HINT)
    return str(p), "NSYS"


def discover(explicit: str | None = None) -> NsysInfo:
    """The nsys to use. ``explicit`` (or the NSYS variable) wins; otherwise the first that runs."""
    explicit = explicit or os.environ.get("NSYS")
    candidates = [locate(explicit)] if explicit else _candidates()
    if not candidates:
        raise NsysNotFound("nsys not found", INSTALL_HINT)
    broken = []
    for path, source in candidates:
        version = _version_of(path)
        if version is None:
            broken.append(path)
            continue
        importer = find_importer(path)
        problem = importer_problem(path, importer)
        return NsysInfo(path=path, version=version, source=source, importer=importer,
                        can_import=problem is None, import_problem=problem)
    raise NsysNotFound(f"nsys found but does not run ({', '.join(broken)})", INSTALL_HINT)
