"""Lock files that name their holder: one writer of a store entry or a collection folder at a time.

The file is created with ``O_CREAT | O_EXCL`` and holds ``<pid> <host>``. A lock whose process is
gone (on this host) is stale and taken over, so a holder killed with ``kill -9`` blocks nobody.
Taking over (read the holder, remove its file, create ours) happens under an ``flock`` of the lock's
folder, so two processes finding the same stale lock cannot both end up holding it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path


class LockBusy(Exception):
    """The lock is held by a live process: ``holder`` is (pid, host), or None if unreadable."""

    def __init__(self, holder: tuple[int, str] | None):
        super().__init__(holder)
        self.holder = holder

    def who(self) -> str:
        return f"process {self.holder[0]} on {self.holder[1]}" if self.holder else "another process"


@contextlib.contextmanager
def _guarded(folder: Path):
    """An exclusive ``flock`` of ``folder`` for the few system calls of a take-over (no file left behind)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def acquire(lock: Path) -> None:
    """Take ``lock`` for this process; raises LockBusy, or OSError when its folder is unusable."""
    lock = Path(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with _guarded(lock.parent):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = read_holder(lock)
            if holder is None or alive(*holder):
                raise LockBusy(holder) from None
            lock.unlink(missing_ok=True)  # stale: its process is gone, and nobody else is taking it over now
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()} {socket.gethostname()}\n")


def release(lock: Path) -> None:
    """Remove ``lock`` if this process holds it."""
    lock = Path(lock)
    if not lock.parent.is_dir():
        return
    with _guarded(lock.parent):
        if read_holder(lock) == (os.getpid(), socket.gethostname()):
            lock.unlink(missing_ok=True)


def read_holder(lock: Path) -> tuple[int, str] | None:
    try:
        pid, host = Path(lock).read_text().split()[:2]
        return int(pid), host
    except (OSError, ValueError):
        return None


def alive(pid: int, host: str) -> bool:
    """Whether ``pid`` runs; a process of another host is taken to be alive."""
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
