"""The profile store: one folder per capture under ``profiles/`` (or ``$ALIGN_STORE``).

Each entry holds ``report.nsys-rep``, ``report.sqlite``, ``nsys.log`` and ``meta.json``; the
shipped real examples live one level down in ``profiles/examples/<name>/``. Commands accept an
entry's name wherever they take a profile path.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from align.lazy import pd

from align import pidlock
from align.rows import Rows
from align.errors import AlignError, arg

REPORT = "report.nsys-rep"
SQLITE = "report.sqlite"
META = "meta.json"
LOG = "nsys.log"

_NAME = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)?$")
# folders the store itself owns: never an entry, never replaced by one
EXAMPLES, VERDICTS = "examples", "verdicts"
RESERVED = (EXAMPLES, VERDICTS)


def default_root() -> Path:
    return Path(os.environ.get("ALIGN_STORE", "profiles"))


class Store:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root else default_root()

    def path(self, name: str) -> Path:
        return self.root / name

    def _check_root(self) -> None:
        """A store that exists must be a folder: a file passed as --store is a mistake, not an empty store."""
        if self.root.exists() and not self.root.is_dir():
            raise AlignError(f"store {self.root} is not a folder",
                             f"pass {arg('store')} (or set $ALIGN_STORE to) a folder, new or holding profiles")

    def create(self, name: str, overwrite: bool = False) -> Path:
        """A fresh entry folder, held by this process until :meth:`release`; refuses to replace an
        existing one unless ``overwrite``, and never replaces anything that is not an entry (the store
        itself, ``examples/``, ``verdicts/``, a folder of entries)."""
        check_name(name)
        d = self.path(name)
        self._lock(name)
        try:
            if d.exists() or d.is_symlink():
                if not overwrite:
                    raise AlignError(f"profile {name!r} already exists in {self.root}",
                                     f"pass {arg('overwrite', 'True')} or pick another {arg('name')}")
                if d.is_symlink() or not d.is_dir() or not (d / META).is_file():
                    raise AlignError(f"{d} is not a profile entry (no {META}): refusing to replace it",
                                     f"pick another {arg('name')}")
                shutil.rmtree(d)
            d.mkdir(parents=True)
        except OSError as exc:
            self.release(name)
            raise AlignError(f"cannot create the store entry {d}: {exc.strerror or exc}",
                             f"check {arg('store')} (or $ALIGN_STORE): a folder you can write") from None
        except BaseException:
            self.release(name)
            raise
        return d

    def _lock_path(self, name: str) -> Path:
        d = self.path(name)
        return d.parent / f".{d.name}.lock"

    def _lock(self, name: str) -> None:
        """One capture per entry at a time (align.pidlock: taken over once its holder is gone)."""
        lock = self._lock_path(name)
        try:
            pidlock.acquire(lock)
        except pidlock.LockBusy as busy:
            raise AlignError(f"profile {name!r} in {self.root} is being captured by {busy.who()}",
                             f"wait for it, or pick another {arg('name')} (lock: {lock})") from None
        except OSError as exc:
            raise AlignError(f"cannot use {lock.parent} as a store folder: {exc.strerror or exc}",
                             f"check {arg('store')} (or $ALIGN_STORE): a folder you can write") from None

    def record_verdict(self, folder_name: str, record: dict, when) -> Path:
        """Keep one verdict record as ``verdicts/<folder_name>/<time>.json`` (the op's name); the
        newest one of an op is what ``align collect`` obeys."""
        from align.files import write_text

        self._check_root()
        if not _NAME.match(folder_name) or "/" in folder_name or folder_name in (".", ".."):
            raise AlignError(f"{folder_name!r} is not a verdict folder name", "name the op with letters and digits")
        folder = self.root / VERDICTS / folder_name
        path = folder / f"{when.strftime('%Y%m%dT%H%M%S.%fZ')}.json"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            write_text(path, json.dumps(record, indent=2) + "\n", "the verdict record")
        except OSError as exc:
            raise AlignError(f"cannot record the verdict in {folder}: {exc.strerror or exc}",
                             f"check {arg('store')} (or $ALIGN_STORE): a folder you can write") from None
        return path

    def newest_verdict(self, op: str, match=None) -> dict | None:
        """The newest recorded verdict of ``op`` (with ``file``: where it lies) for which ``match``
        (a function of the record) is true, or None."""
        folder = self.root / VERDICTS / op
        files = sorted(folder.glob("*.json")) if folder.is_dir() else []
        for f in reversed(files):
            try:
                rec = {**json.loads(f.read_text()), "file": str(f)}
            except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8
                raise AlignError(f"cannot read the verdict record {f}: {exc}",
                                 f"run align verdict --op {op} again to write a new one") from None
            if match is None or match(rec):
                return rec
        return None

    def release(self, name: str) -> None:
        """Give up the entry taken by :meth:`create` (only our own lock is removed)."""
        pidlock.release(self._lock_path(name))

    def entries(self) -> list[Path]:
        self._check_root()
        if not self.root.is_dir():
            return []
        found = [p.parent for p in self.root.glob(f"*/{META}")] + [p.parent for p in self.root.glob(f"*/*/{META}")]
        return sorted(set(found))

    def list(self) -> pd.DataFrame:
        """One row per entry: name, kind, when, status, exit code, GPU, command."""
        return self.rows().to_frame()

    def rows(self) -> Rows:
        """:meth:`list` as plain rows, oldest first (undated entries before them)."""
        rows = []
        for d in self.entries():
            meta, problem = read_meta(d)
            if problem:
                meta["status"] = f"damaged meta.json ({problem})"
            rows.append({
                "name": str(d.relative_to(self.root)),
                "kind": meta.get("kind"),
                "op": meta.get("op"),
                "start_time": meta.get("start_time"),
                "status": effective_status(meta),
                "exit_code": meta.get("exit_code"),
                "gpu": ", ".join(meta.get("gpus") or []) or None,
                "nsys_version": (meta.get("nsys") or {}).get("version"),
                "sqlite": (d / SQLITE).exists(),
                "command": meta.get("command_line"),
            })
        cols = ["name", "kind", "op", "start_time", "status", "exit_code", "gpu", "nsys_version", "sqlite", "command"]
        return Rows(cols, [tuple(r[c] for c in cols) for r in rows]).sort([("start_time", True)], none_first=True)

    def resolve(self, name: str) -> Path | None:
        """The SQLite export of entry ``name``, or None when there is no such entry."""
        if not _NAME.match(name):
            return None
        self._check_root()
        for candidate in (self.path(name), self.root / EXAMPLES / name):
            if (candidate / SQLITE).exists():
                return candidate / SQLITE
            if (candidate / REPORT).exists():
                return candidate / REPORT
        return None


NAME_PART_MAX = 255 - len("..lock")  # the longest file name most file systems take, less the entry's lock file


def check_name(name: str) -> None:
    """An entry name: one or two path parts of letters, digits, '.', '_' and '-', never '.' or '..',
    never a folder the store owns."""
    parts = name.split("/")
    if not _NAME.match(name) or any(p in (".", "..") for p in parts):
        raise AlignError(f"bad profile name {name!r}", "use letters, digits, '.', '_' and '-' (one '/' at most)")
    longest = max(parts, key=len)
    if len(longest) > NAME_PART_MAX:
        raise AlignError(f"profile name {longest[:20]}... is {len(longest)} characters long, over the limit of "
                         f"{NAME_PART_MAX} (a file name holds 255, and the store adds .<name>.lock)",
                         f"pick a shorter {arg('name')}")
    if len(parts) == 1 and name in RESERVED:
        raise AlignError(f"profile name {name!r} is a folder the store owns", f"pick another {arg('name')}")


# what align reads from meta.json, and the type each value must have (ints are exact ints, not bools)
META_TYPES = {"name": str, "kind": str, "op": str, "command_line": str, "host": str, "start_time": str,
              "status": str, "exit_code": int, "pid": int, "gpus": list, "nsys": dict, "holds": dict}


def read_meta(entry: str | os.PathLike) -> tuple[dict, str | None]:
    """An entry's meta.json with every value align reads of the right type, and what was wrong
    (None when nothing): a hand-edited or damaged meta.json never breaks a listing or a command;
    values of the wrong type are left out, the rest is kept."""
    f = Path(entry) / META
    try:
        data = json.loads(f.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return {}, f"unreadable: {str(exc).splitlines()[0][:120]}"
    if not isinstance(data, dict):
        return {}, f"a JSON {type(data).__name__}, not an object"
    wrong = [k for k, t in META_TYPES.items() if k in data and data[k] is not None
             and (not isinstance(data[k], t) or (t is int and isinstance(data[k], bool)))]
    if isinstance(data.get("gpus"), list) and not all(isinstance(g, str) for g in data["gpus"]):
        wrong.append("gpus")
    meta = {k: v for k, v in data.items() if k not in wrong}
    return meta, f"wrong type of {', '.join(wrong)}" if wrong else None


def effective_status(meta: dict) -> str | None:
    """``running`` only while the capturing process lives; a capture killed outright (SIGKILL, a
    crash) left ``running`` behind and reads as ``interrupted``."""
    status = meta.get("status")
    if status == "running" and meta.get("pid") and not pidlock.alive(int(meta["pid"]), str(meta.get("host"))):
        return "interrupted"  # alive() takes a process of another host to be alive
    return status


EXPORT_SUFFIXES = (".sqlite", ".nsys-rep", ".qdrep", ".qdstrm")  # a folder named so was meant as a file


def resolve_profile(ref: str | os.PathLike, store: Store | None = None) -> Path:
    """A path to an export: an existing file or folder, else a store entry of that name."""
    p = Path(ref)
    if p.exists() and not (p.is_dir() or p.is_file()):
        raise AlignError(f"{p} is not a regular file (a FIFO, socket or device)", "pass an nsys export file")
    if p.is_dir():
        for f in (SQLITE, REPORT):
            if (p / f).exists():
                return p / f
        if p.suffix in EXPORT_SUFFIXES:
            raise AlignError(f"{p} is a folder, not an export file", "pass the export file itself, or a store entry")
        raise AlignError(f"{p} holds no {SQLITE} or {REPORT}", "pass a profile file or a store entry")
    if p.exists():
        return p
    found = (store or Store()).resolve(str(ref))
    if found is None:
        raise AlignError(f"{ref}: no such file or stored profile",
                         "pass an nsys .sqlite/.nsys-rep path or a name listed by `align profiles`")
    return found
