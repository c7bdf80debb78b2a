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

import pandas as pd

from align.errors import AlignError

REPORT = "report.nsys-rep"
SQLITE = "report.sqlite"
META = "meta.json"
LOG = "nsys.log"

_NAME = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)?$")


def default_root() -> Path:
    return Path(os.environ.get("ALIGN_STORE", "profiles"))


class Store:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root else default_root()

    def path(self, name: str) -> Path:
        return self.root / name

    def create(self, name: str, overwrite: bool = False) -> Path:
        """A fresh entry folder; refuses to replace an existing one unless ``overwrite``."""
        if not _NAME.match(name) or ".." in name.split("/"):
            raise AlignError(f"bad profile name {name!r}", "use letters, digits, '.', '_' and '-'")
        d = self.path(name)
        if d.exists():
            if not overwrite:
                raise AlignError(f"profile {name!r} already exists in {self.root}",
                                 "pass --overwrite or pick another --name")
            shutil.rmtree(d)
        d.mkdir(parents=True)
        return d

    def entries(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        found = [p.parent for p in self.root.glob(f"*/{META}")] + [p.parent for p in self.root.glob(f"*/*/{META}")]
        return sorted(set(found))

    def list(self) -> pd.DataFrame:
        """One row per entry: name, kind, when, status, exit code, GPU, command."""
        rows = []
        for d in self.entries():
            try:
                meta = json.loads((d / META).read_text())
            except (OSError, json.JSONDecodeError):
                meta = {"status": "unreadable meta.json"}
            rows.append({
                "name": str(d.relative_to(self.root)),
                "kind": meta.get("kind"),
                "op": meta.get("op"),
                "start_time": meta.get("start_time"),
                "status": meta.get("status"),
                "exit_code": meta.get("exit_code"),
                "gpu": ", ".join(meta.get("gpus") or []) or None,
                "nsys_version": (meta.get("nsys") or {}).get("version"),
                "sqlite": (d / SQLITE).exists(),
                "command": meta.get("command_line"),
            })
        cols = ["name", "kind", "op", "start_time", "status", "exit_code", "gpu", "nsys_version", "sqlite", "command"]
        df = pd.DataFrame(rows, columns=cols)
        return df.sort_values("start_time", na_position="first", kind="stable").reset_index(drop=True)

    def resolve(self, name: str) -> Path | None:
        """The SQLite export of entry ``name``, or None when there is no such entry."""
        if not _NAME.match(name):
            return None
        for candidate in (self.path(name), self.root / "examples" / name):
            if (candidate / SQLITE).exists():
                return candidate / SQLITE
            if (candidate / REPORT).exists():
                return candidate / REPORT
        return None


def resolve_profile(ref: str | os.PathLike, store: Store | None = None) -> Path:
    """A path to an export: an existing file or folder, else a store entry of that name."""
    p = Path(ref)
    if p.is_dir():
        for f in (SQLITE, REPORT):
            if (p / f).exists():
                return p / f
        raise AlignError(f"{p} holds no {SQLITE} or {REPORT}", "pass a profile file or a store entry")
    if p.exists():
        return p
    found = (store or Store()).resolve(str(ref))
    if found is None:
        raise AlignError(f"{ref}: no such file or stored profile",
                         "pass an nsys .sqlite/.nsys-rep path or a name listed by `align profiles`")
    return found
