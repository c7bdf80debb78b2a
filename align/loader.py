"""Open a profile by path or store name; export ``.nsys-rep`` files on the way when needed."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from align.errors import AlignError
from align.profile.reader import Profile, is_sqlite
from align.store import Store, resolve_profile

STALE_AFTER_S = 2.0


def export(report: str | os.PathLike, out: str | os.PathLike | None = None, quiet: bool = True) -> Path:
    """Export one ``.nsys-rep`` (or import and export a ``.qdstrm``) to SQLite next to it."""
    from align.capture.discover import discover
    from align.capture.export import export_sqlite, import_qdstrm

    report = Path(report)
    nsys = discover()
    # the log lies beside what is written: a shipped or read-only report's folder stays untouched
    log = Path(out).with_suffix(".export.log") if out else report.with_suffix(".export.log")
    if report.suffix == ".qdstrm":
        report = import_qdstrm(report, nsys=nsys, log=log)
    return export_sqlite(report, out, nsys=nsys, log=log, quiet=quiet)


def load(ref: str | os.PathLike | Profile, store: Store | None = None) -> Profile:
    """A :class:`Profile` from an SQLite export, a ``.nsys-rep`` (exported when it has no fresh
    ``.sqlite`` beside it), a store folder, or a store entry name; an opened Profile is itself."""
    if isinstance(ref, Profile):
        return ref
    path = resolve_profile(ref, store)
    if path.suffix not in (".nsys-rep", ".qdstrm"):
        return Profile(path)
    sibling = path.with_suffix(".sqlite")
    if not (sibling.exists() and is_sqlite(sibling)):
        return Profile(export(path))
    # A checkout or copy can leave the report a little newer than its export: only a clearly
    # newer report is re-exported, and an nsys too old to read it keeps the existing export.
    if path.stat().st_mtime - sibling.stat().st_mtime > STALE_AFTER_S:
        try:
            return Profile(export(path))
        except AlignError as exc:
            warnings.warn(f"using {sibling}, which is older than {path.name}: {exc}", stacklevel=2)
    return Profile(sibling)
