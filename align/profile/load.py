"""Open a profile by path or store name; export ``.nsys-rep`` files on the way when needed."""

from __future__ import annotations

import os
from pathlib import Path

from align.profile.reader import Profile, is_sqlite
from align.profile.store import Store, resolve_profile


def export(report: str | os.PathLike, out: str | os.PathLike | None = None, quiet: bool = True) -> Path:
    """Export one ``.nsys-rep`` (or import and export a ``.qdstrm``) to SQLite next to it."""
    from align.nsys.discover import discover
    from align.nsys.export import export_sqlite, import_qdstrm

    report = Path(report)
    nsys = discover()
    log = report.with_suffix(".export.log")
    if report.suffix == ".qdstrm":
        report = import_qdstrm(report, nsys=nsys, log=log)
    return export_sqlite(report, out, nsys=nsys, log=log, quiet=quiet)


def load(ref: str | os.PathLike, store: Store | None = None) -> Profile:
    """A :class:`Profile` from an SQLite export, a ``.nsys-rep`` (exported when it has no fresh
    ``.sqlite`` beside it), a store folder, or a store entry name."""
    path = resolve_profile(ref, store)
    if path.suffix in (".nsys-rep", ".qdstrm"):
        sibling = path.with_suffix(".sqlite")
        fresh = (sibling.exists() and is_sqlite(sibling)
                 and (path.suffix == ".qdstrm" or sibling.stat().st_mtime >= path.stat().st_mtime))
        path = sibling if fresh else export(path)
    return Profile(path)
