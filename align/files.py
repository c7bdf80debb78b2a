"""Writing user-visible files so that a failure (a read-only folder, a full disk, a kill) leaves
either the old file or the new one, never half of one: write a hidden temporary beside the
target, rename it over the target when complete, remove it when anything fails."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Callable, Iterator

from align.errors import AlignError


class WriteFailed(AlignError):
    """A file align was asked to write cannot be written (a user-fixable place or a full disk)."""


def describe_os_error(exc: OSError) -> str:
    """``path: reason`` of an OSError, in one line."""
    where = exc.filename if exc.filename is not None else ""
    reason = exc.strerror or str(exc)
    return f"{where}: {reason}" if where else reason


def check_target(path: str | os.PathLike, flag: str) -> Path:
    """Refuse an output path that cannot be written before any long work starts: a folder, a
    missing or non-folder parent, a parent align may not write."""
    path = Path(path)
    hint = f"pass {flag} a file in a folder you can write"
    if path.is_dir():
        raise WriteFailed(f"{flag} {path} is a folder", hint)
    if path.exists() and not path.is_file():
        raise WriteFailed(f"{flag} {path} is not a regular file (a FIFO, socket or device)", hint)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise WriteFailed(f"{flag} {path}: folder {parent} does not exist", "create it first, or " + hint)
    if not parent.is_dir():
        raise WriteFailed(f"{flag} {path}: {parent} is not a folder", hint)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise WriteFailed(f"{flag} {path}: cannot write in {parent} (permission denied)", hint)
    return path


@contextlib.contextmanager
def replacing(path: str | os.PathLike, what: str = "") -> Iterator[Path]:
    """Yields a temporary path beside ``path``; it replaces ``path`` when the block ends normally
    and is removed otherwise. OS errors become one :class:`WriteFailed` line naming ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise WriteFailed(f"cannot write {what + ' ' if what else ''}{path}: {exc.strerror or exc}",
                          "free space or pick a folder you can write; nothing was half-written") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str, what: str = "") -> Path:
    """``text`` into ``path`` whole or not at all (flushed to disk before the rename)."""
    with replacing(path, what) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def write_with(path: str | os.PathLike, writer: Callable[[Path], object], what: str = "") -> Path:
    """Let ``writer(tmp)`` write the file (e.g. ``df.to_parquet``), then swap it in whole."""
    with replacing(path, what) as tmp:
        writer(tmp)
    return Path(path)
