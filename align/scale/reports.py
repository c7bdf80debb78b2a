"""Many reports, one question: the per-report part of an analysis as one Dask task per export, each
opened by its worker where it lies (only the small result travels back), combined in the client.

One report without ``--scheduler`` runs in this process as before: no cluster is started for it.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from align.errors import AlignError

EXPORT_SUFFIXES = (".sqlite", ".nsys-rep", ".qdstrm")


def kind(ref: str | os.PathLike) -> str:
    """What an input names: ``glob`` (a pattern), ``folder`` (of exports, not a store entry) or ``one``
    (a file or store entry)."""
    from align.store import REPORT, SQLITE

    text = str(ref)
    if any(c in text for c in "*?["):
        return "glob"
    if Path(text).is_dir() and not any((Path(text) / f).exists() for f in (SQLITE, REPORT)):
        return "folder"
    return "one"


def expand(inputs: Sequence[str | os.PathLike], store=None) -> list[str]:
    """Each input as the exports it names, in order, without repeats: a file or store entry (as its
    absolute path, so a worker elsewhere opens the same file), a glob, or a folder of exports (a
    ``.nsys-rep`` whose ``.sqlite`` lies beside it counts once). A glob or folder naming nothing is bad input."""
    from align.store import EXPORT_SUFFIXES, resolve_profile

    out: list[str] = []
    for item in inputs:
        text = str(item)
        what = kind(text)
        if what == "glob":
            found = sorted(glob.glob(text))
            if not found:
                raise AlignError(f"{text} matches no file", "check the pattern (quote it so the shell leaves it to align)")
        elif what == "folder":
            found = _exports_in(Path(text))
            if not found and Path(text).suffix in EXPORT_SUFFIXES:
                raise AlignError(f"{text} is a folder, not an export file", "name the export files, or a folder that holds them")
            if not found:
                raise AlignError(f"{text} holds no export (*.sqlite, *.nsys-rep)", "name the files or a folder that holds them")
        else:
            found = [str(resolve_profile(text, store).resolve())]
        for f in found:
            f = str(Path(f).resolve())
            if f not in out:
                out.append(f)
    if not out:
        raise AlignError("no report given", "name one or more exports, a folder or a glob")
    return out


def _exports_in(folder: Path) -> list[str]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in EXPORT_SUFFIXES)
    have_sqlite = {p.with_suffix("") for p in files if p.suffix == ".sqlite"}
    return [str(p) for p in files if p.suffix == ".sqlite" or p.with_suffix("") not in have_sqlite]


def map_reports(task: Callable[..., Any], paths: Sequence[str], *args: Any, scheduler: str | None = None,
                workers: int | None = None, progress: Callable[[int, int], None] | None = None) -> list[Any]:
    """``[task(path, *args) for path in paths]``, as Dask tasks when there is more than one report or a
    scheduler is named (a local cluster of up to ``workers`` processes otherwise), in this process when
    there is one. A task's error is raised here as it was raised there (the first one to fail)."""
    from align.scale.cluster import dask_client, scheduler_address, unpicklable

    if len(paths) == 1 and scheduler_address(scheduler) is None:
        return [task(paths[0], *args)]
    from distributed import as_completed

    with dask_client(scheduler, min(workers or os.cpu_count() or 1, len(paths))) as client:
        futures = [client.submit(task, p, *args, key=f"align-{task.__name__}-{i}-{os.getpid()}-{id(paths)}",
                                 pure=False) for i, p in enumerate(paths)]
        done = 0
        for fut in as_completed(futures, loop=client.loop):
            if fut.status == "error":
                exc = fut.exception()
                raise unpicklable(exc) or exc  # the task's own exception, as it was raised there
            done += 1
            if progress is not None:
                progress(done, len(paths))
        return [f.result() for f in futures]
