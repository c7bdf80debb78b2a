"""Lock files under contention (issue 29 item 4): processes racing for one stale lock, real processes."""

from __future__ import annotations

import subprocess
import sys
import time

from align import pidlock

RACER = """
import sys, time
from pathlib import Path
from align import pidlock
lock, start = Path(sys.argv[1]), float(sys.argv[2])
while time.time() < start:
    pass
try:
    pidlock.acquire(lock)
except pidlock.LockBusy:
    print("busy", flush=True)
else:
    print("held", flush=True)
    time.sleep(0.5)
    pidlock.release(lock)
"""


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_processes_racing_for_one_stale_lock_leave_one_holder(tmp_path):
    """A holder killed with kill -9 left its lock; 6 processes find it stale at the same instant.
    Exactly one takes it over, each round; the others are told it is busy; nothing is left behind."""
    import socket

    lock = tmp_path / "entry.lock"
    for _ in range(5):
        lock.write_text(f"{_dead_pid()} {socket.gethostname()}\n")
        start = time.time() + 1.5
        procs = [subprocess.Popen([sys.executable, "-c", RACER, str(lock), str(start)], stdout=subprocess.PIPE,
                                  text=True) for _ in range(6)]
        said = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
        assert said == ["busy"] * 5 + ["held"], said
        assert not lock.exists() and sorted(x.name for x in tmp_path.iterdir()) == []


def test_a_live_holder_keeps_its_lock_and_release_is_the_holders_only(tmp_path):
    lock = tmp_path / "x.lock"
    pidlock.acquire(lock)
    try:
        holder = subprocess.run([sys.executable, "-c", RACER, str(lock), "0"], capture_output=True, text=True,
                                timeout=60)
        assert holder.stdout.strip() == "busy"
        other = subprocess.run([sys.executable, "-c", f"from align import pidlock; pidlock.release({str(lock)!r})"],
                               timeout=60)
        assert other.returncode == 0 and lock.exists()  # not its lock: left alone
    finally:
        pidlock.release(lock)
    assert not lock.exists()
