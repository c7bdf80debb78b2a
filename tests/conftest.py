"""Shared fixtures: the real nsys (skipped with a reason when absent, a failure in CI) and CLI runners."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = ROOT / "tests" / "programs"


@pytest.fixture(scope="session")
def nsys():
    from align.errors import NsysNotFound
    from align.capture.discover import discover

    try:
        return discover()
    except NsysNotFound as exc:
        if os.environ.get("ALIGN_REQUIRE_NSYS") == "1":
            pytest.fail(f"ALIGN_REQUIRE_NSYS=1 but {exc}")
        pytest.skip(f"real nsys needed: {exc}")


# in-process library calls record verdicts too (align.verdict): never into the developer's store
_STORE = tempfile.mkdtemp(prefix="align-test-store-")
os.environ["ALIGN_STORE"] = _STORE


def run_align(*args: str, env: dict | None = None, cwd: Path | None = None,
              file_limit: int | None = None) -> subprocess.CompletedProcess:
    """The installed CLI as a user runs it, in a child process. The default store is a temporary
    folder (verdicts are recorded there), never the checkout's profiles/. ``file_limit``: no file may
    grow past this many bytes (RLIMIT_FSIZE: writes fail as on a full disk)."""
    full_env = {**os.environ, "ALIGN_STORE": _STORE, **(env or {})}
    def limits() -> None:
        if file_limit is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    return subprocess.run([sys.executable, "-m", "align", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=600, preexec_fn=limits if file_limit is not None else None)
