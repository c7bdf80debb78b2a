"""Turn captures into SQLite: ``nsys export``, and the QdstrmImporter step nsys skips when its importer is missing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from align.errors import NsysFailed
from align.capture.discover import NsysInfo, discover
from align.capture.run import ChildStopped, run_logged
from align.profile.reader import is_sqlite


def import_qdstrm(qdstrm: str | os.PathLike, rep: str | os.PathLike | None = None,
                  nsys: NsysInfo | None = None, log: Path | None = None) -> Path:
    """Run QdstrmImporter on a ``.qdstrm`` nsys left behind; returns the ``.nsys-rep``."""
    nsys = nsys or discover()
    qdstrm = Path(qdstrm)
    rep = Path(rep) if rep else qdstrm.with_suffix(".nsys-rep")
    if not nsys.importer:
        raise NsysFailed(f"nsys left only {qdstrm} and no QdstrmImporter was found next to {nsys.path}",
                         "set NSYS_IMPORTER=/path/to/QdstrmImporter")
    partial = rep.with_name(rep.name.removesuffix(".nsys-rep") + ".partial.nsys-rep")  # a stopped import leaves none
    cmd = [nsys.importer, "-i", str(qdstrm), "-o", str(partial), "-f"]
    try:
        try:
            rc = run_logged(cmd, log, title=f"importing {qdstrm.name}")
        except ChildStopped as exc:
            if exc.rc == 0 and partial.exists():  # it finished all the same: kept
                os.replace(partial, rep)
            raise
        if rc != 0 or not partial.exists():
            raise NsysFailed(f"QdstrmImporter failed on {qdstrm} (exit {rc})",
                             f"see {log}" if log else "run it by hand to see why")
        os.replace(partial, rep)
    finally:
        partial.unlink(missing_ok=True)
    return rep


def export_sqlite(rep: str | os.PathLike, out: str | os.PathLike | None = None, nsys: NsysInfo | None = None,
                  log: Path | None = None, quiet: bool = False) -> Path:
    """``nsys export --type sqlite`` into a temporary file, moved over ``out`` only once it is a
    complete SQLite file: a failed export (say, an nsys too old for the report) keeps the old one."""
    rep = Path(rep)
    if not rep.exists():
        raise NsysFailed(f"{rep}: no such report", "profile first, or pass an existing .nsys-rep")
    out = Path(out) if out else rep.with_suffix(".sqlite")
    nsys = nsys or discover()
    partial = out.with_name(out.stem + ".partial.sqlite")
    cmd = [nsys.path, "export", "--type", "sqlite", "--force-overwrite", "true", "--output", str(partial), str(rep)]
    try:
        try:
            rc = run_logged(cmd, log, title=f"exporting {rep.name} to SQLite", quiet=quiet)
        except ChildStopped as exc:
            if exc.rc == 0 and is_sqlite(partial):  # it finished all the same: kept
                os.replace(partial, out)
            raise
        if rc != 0 or not is_sqlite(partial):
            raise NsysFailed(f"nsys {nsys.version} could not export {rep} (exit {rc})",
                             f"see {log}" if log else f"run: {subprocess.list2cmdline(cmd)}")
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out
