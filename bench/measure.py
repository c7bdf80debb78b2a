"""Run a command in a child process and report its wall time and peak resident memory."""

from __future__ import annotations

import json
import subprocess
import sys

_WRAPPER = (
    "import json, resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "try:\n"
    "    r = subprocess.run(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=float(sys.argv[1]))\n"
    "    rc = r.returncode\n"
    "except subprocess.TimeoutExpired:\n"
    "    rc = 'timeout'\n"
    "print(json.dumps({'rc': rc, 'seconds': round(time.perf_counter() - t, 3),\n"
    "                  'peak_rss_mb': round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}))\n"
)


def measure(cmd: list[str], timeout: float = 3600) -> dict:
    """Wall time and peak RSS of ``cmd`` (RUSAGE_CHILDREN of a fresh wrapper process, so only that
    command's tree counts). ``rc`` is 'timeout' when it ran past ``timeout`` seconds and was killed."""
    out = subprocess.run([sys.executable, "-c", _WRAPPER, str(timeout), *cmd], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)
