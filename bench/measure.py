"""Run a command in a child process and report its wall time and peak resident memory."""

from __future__ import annotations

import json
import subprocess
import sys

# Blocking os.wait4, not Popen.wait(timeout): the latter polls with sleeps of up to 50 ms, which
# rounds a 0.1 s command to the next poll. A timer kills the command at the timeout.
_WRAPPER = (
    "import json, os, resource, signal, subprocess, sys, time\n"
    "killed = []\n"
    "t = time.perf_counter()\n"
    "p = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
    "def stop(*_):\n"
    "    killed.append(1)\n"
    "    p.kill()\n"
    "signal.signal(signal.SIGALRM, stop)\n"
    "signal.setitimer(signal.ITIMER_REAL, float(sys.argv[1]))\n"
    "while True:\n"
    "    try:\n"
    "        _, status, _ = os.wait4(p.pid, 0)\n"
    "        break\n"
    "    except InterruptedError:\n"
    "        continue\n"
    "seconds = time.perf_counter() - t\n"
    "signal.setitimer(signal.ITIMER_REAL, 0)\n"
    "rc = 'timeout' if killed else os.waitstatus_to_exitcode(status)\n"
    "print(json.dumps({'rc': rc, 'seconds': round(seconds, 3),\n"
    "                  'peak_rss_mb': round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}))\n"
)


def measure(cmd: list[str], timeout: float = 3600) -> dict:
    """Wall time and peak RSS of ``cmd`` (RUSAGE_CHILDREN of a fresh wrapper process, so only that
    command's tree counts). ``rc`` is 'timeout' when it ran past ``timeout`` seconds and was killed."""
    out = subprocess.run([sys.executable, "-c", _WRAPPER, str(timeout), *cmd], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)
