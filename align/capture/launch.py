"""``nsys profile`` a command into a store entry, then export it to SQLite.

Defaults suit a mock layer or a single-process E2E run: CUDA and NVTX tracing, CUDA graphs traced
per node (so each replayed kernel is its own row), no CPU sampling or context switches (sampling
turns a tiny PyTorch run's capture into gigabytes). Whatever happens, the entry keeps nsys's log
and a ``meta.json`` saying how far it got.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from align.errors import AlignError, NsysFailed, arg
from align.capture.discover import NsysInfo, discover
from align.capture.export import export_sqlite, import_qdstrm
from align.files import write_text
from align.capture.run import console, run_logged
from align import store as st

CAPTURE_RANGES = ("none", "cudaProfilerApi", "nvtx")


@dataclass
class ProfileOptions:
    """How to call ``nsys profile``; ``extra`` flags are passed through unchanged, last."""

    trace: str = "cuda,nvtx"
    sample: str = "none"
    cpuctxsw: str = "none"
    cuda_graph_trace: str = "node"
    capture_range: str | None = None
    nvtx_capture: str | None = None
    capture_range_end: str | None = None
    delay: float | None = None
    duration: float | None = None
    extra: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if self.capture_range and self.capture_range not in CAPTURE_RANGES:
            raise AlignError(f"unknown capture range {self.capture_range!r}", f"use one of {', '.join(CAPTURE_RANGES)}")
        if self.capture_range == "nvtx" and not self.nvtx_capture:
            raise AlignError(f"{arg('capture_range', 'nvtx')} needs the range name", f"add {arg('nvtx_capture', 'NAME')} (or NAME@DOMAIN)")
        if self.nvtx_capture and self.capture_range not in (None, "nvtx"):
            raise AlignError(f"{arg('nvtx_capture')} only applies to {arg('capture_range', 'nvtx')}", "drop one of them")
        if self.delay is not None and self.delay < 0:
            raise AlignError(f"{arg('delay', format(self.delay, 'g'))} is negative", "pass the seconds to wait before collecting (0 or more)")
        if self.duration is not None and self.duration <= 0:
            raise AlignError(f"{arg('duration', format(self.duration, 'g'))} collects nothing", "pass a positive number of seconds")

    def nsys_args(self) -> list[str]:
        args = ["--trace", self.trace, "--sample", self.sample, "--cpuctxsw", self.cpuctxsw]
        if "cuda" in self.trace.split(",") and self.cuda_graph_trace:
            args += ["--cuda-graph-trace", self.cuda_graph_trace]
        capture = self.capture_range or ("nvtx" if self.nvtx_capture else None)
        if capture and capture != "none":
            args += ["--capture-range", capture]
            if capture == "nvtx":
                args += ["--nvtx-capture", self.nvtx_capture]
                # PyTorch's ranges are unregistered strings, which nsys ignores as triggers by default.
                args += ["--env-var", "NSYS_NVTX_PROFILER_REGISTER_ONLY=0"]
            # nsys's default ("stop-shutdown") kills the program when the range ends; a mock or E2E
            # script should run to completion so its exit code means something.
            args += ["--capture-range-end", self.capture_range_end or "stop"]
        if self.delay is not None:
            args += ["--delay", f"{self.delay:g}"]
        if self.duration is not None:
            args += ["--duration", f"{self.duration:g}"]
        return args + list(self.extra)


@dataclass
class ProfileResult:
    name: str
    path: Path
    sqlite: Path | None
    report: Path | None
    exit_code: int | None
    status: str
    meta: dict

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def build_command(nsys: NsysInfo, output_base: Path, options: ProfileOptions, cmd: list[str]) -> list[str]:
    return [nsys.path, "profile", *options.nsys_args(), "--force-overwrite", "true", "--output", str(output_base), *cmd]


def profile(cmd: list[str], kind: str = "mock", name: str | None = None, store: st.Store | None = None,
            options: ProfileOptions | None = None, nsys: NsysInfo | None = None, overwrite: bool = False,
            quiet: bool = False, export: bool = True, op: str | None = None,
            planted: str | None = None) -> ProfileResult:
    """Profile ``cmd`` under nsys into ``store/<name>/`` and export it; see the module docstring.
    ``planted``: what was planted in this run to test the checks (recorded; such a capture is never
    taken as the newest pair of its op)."""
    if not cmd:
        raise AlignError("no command to profile", "put it after --, e.g. align profile mock -- python mock.py")
    options = options or ProfileOptions()
    options.validate()
    nsys = nsys or discover()
    store, name, entry, started = new_entry(store, name, kind, overwrite)
    try:
        with terminate_as_interrupt() as stop:
            return _capture(cmd, kind, name, entry, options, nsys, quiet, export, op, started, stop, planted)
    finally:
        store.release(name)


def new_entry(store: st.Store | None, name: str | None, prefix: str, overwrite: bool
              ) -> tuple[st.Store, str, Path, dt.datetime]:
    """(store, name, entry folder held by this process, start time) of a capture starting now; the
    name defaults to ``<prefix>-<local time>``. Release the entry with ``store.release(name)``."""
    store = store or st.Store()
    started = dt.datetime.now(dt.timezone.utc)
    name = name if name is not None else f"{prefix}-{started.astimezone().strftime('%Y%m%d-%H%M%S')}"
    return store, name, store.create(name, overwrite=overwrite), started


@contextlib.contextmanager
def terminate_as_interrupt():
    """SIGTERM during a capture ends it as Ctrl-C does (nsys is asked to stop and write what it has,
    meta.json says ``interrupted``) instead of killing align with its entry left ``running``. Yields
    a dict whose ``signal`` names the signal once one came."""
    state: dict = {"signal": None}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum, frame):
        state["signal"] = signal.Signals(signum).name
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield state
    finally:
        signal.signal(signal.SIGTERM, old)


def _capture(cmd, kind, name, entry, options, nsys, quiet, export, op, started, stop, planted=None) -> ProfileResult:
    base = entry / Path(st.REPORT).stem
    log = entry / st.LOG
    nsys_cmd = build_command(nsys, base, options, cmd)
    meta = start_meta(name, kind, op, cmd, nsys, nsys_cmd, options, started,
                      **({"planted": planted} if planted else {}))
    write_meta(entry, meta)
    t0 = time.monotonic()
    status = "ok"
    rc: int | None = None
    report: Path | None = None
    sqlite: Path | None = None
    try:
        if not quiet:
            console.print(f"[bold]profiling[/] {shlex.join(cmd)} [dim]-> {entry}[/]")
        try:
            rc = run_logged(nsys_cmd, log, title=f"nsys profile ({kind})", quiet=quiet)
        except OSError as exc:
            raise NsysFailed(f"could not start nsys at {nsys.path}: {exc}", "check NSYS or your install")
        meta["exit_code"] = rc
        report = find_report(entry, nsys, log)
        if report is None:
            status = "no-report"
            raise NsysFailed(f"nsys wrote no report (exit {rc})",
                             f"see {log}; with a capture range, check that the program reaches it")
        meta["files"]["report"] = report.name
        if export:
            try:
                sqlite = export_sqlite(report, entry / st.SQLITE, nsys=nsys, log=log, quiet=quiet)
            except NsysFailed:
                status = "export-failed"
                raise
            meta["files"]["sqlite"] = sqlite.name
            meta.update(contents(sqlite, nsys))
        if rc not in (0, None):
            status = "app-failed"
    except (KeyboardInterrupt, Exception) as exc:
        status = stopped_status(status, exc)
        raise
    finally:
        if stop["signal"]:
            status = "interrupted"
            meta["signal"] = stop["signal"]
        finish_meta(entry, meta, status, t0)
    return ProfileResult(name=name, path=entry, sqlite=sqlite, report=report, exit_code=rc, status=status, meta=meta)


def stopped_status(status: str, exc: BaseException) -> str:
    """The status of a capture that ``exc`` stopped: interrupted by Ctrl-C, else failed unless a more
    precise one (no-report, export-failed, ...) was already set."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return "failed" if status == "ok" else status


def finish_meta(entry: Path, meta: dict, status: str, t0: float, host_gpus: bool = False) -> None:
    """Write a finished capture's meta.json: status, end time, duration and GPUs (the host's with
    ``host_gpus``, else only where the export named none)."""
    meta["status"] = status
    meta["end_time"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    meta["duration_s"] = round(time.monotonic() - t0, 3)
    if host_gpus:
        meta["gpus"] = gpus_from_smi()
    else:
        meta.setdefault("gpus", gpus_from_smi())
    write_meta(entry, meta)


def start_meta(name: str, kind: str, op: str | None, cmd: list[str], nsys: NsysInfo, nsys_cmd: list[str],
               options: ProfileOptions, started: dt.datetime, **extra) -> dict:
    """meta.json of a capture that starts now (status ``running``); every way of capturing writes
    these keys, ``extra`` adds its own (a server's window, say)."""
    return {"name": name, "kind": kind, "op": op, "command": cmd, "command_line": shlex.join(cmd), "cwd": os.getcwd(),
            "nsys": {"path": nsys.path, "version": nsys.version, "source": nsys.source}, "nsys_command": nsys_cmd,
            "options": asdict(options), **extra, "host": socket.gethostname(), "pid": os.getpid(),
            "start_time": started.isoformat(timespec="seconds"), "status": "running", "exit_code": None,
            "git": git_revisions(cmd), "align_version": _align_version(),
            "files": {"report": None, "sqlite": None, "log": st.LOG}}


def find_report(entry: Path, nsys: NsysInfo, log: Path) -> Path | None:
    rep = entry / st.REPORT
    if rep.exists():
        return rep
    qdstrm = rep.with_suffix(".qdstrm")
    if qdstrm.exists():
        return import_qdstrm(qdstrm, rep, nsys=nsys, log=log)
    return None


def write_meta(entry: Path, meta: dict) -> None:
    write_text(entry / st.META, json.dumps(meta, indent=2, default=str) + "\n", "the profile's")


def git_revisions(cmd: list[str]) -> dict:
    """Git revision (and whether the tree was dirty) of the working folder and of the profiled script."""
    out = {}
    places = {"cwd": Path.cwd()}
    for word in cmd[:3]:
        p = Path(word)
        if p.suffix == ".py" and p.exists():
            places["script"] = p.resolve().parent
            break
    seen = set()
    for label, where in places.items():
        info = _git_info(where)
        if info and info["root"] not in seen:
            seen.add(info["root"])
            out[label] = info
    return out


def _git_info(where: Path) -> dict | None:
    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    rev = git("rev-parse", "HEAD")
    if not rev:
        return None
    return {"root": git("rev-parse", "--show-toplevel"), "revision": rev,
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def contents(sqlite: Path, nsys: NsysInfo) -> dict:
    """What meta.json says of the export, read in one opening: GPUs, what it holds (for the next
    command to suggest), and a warning when NVTX ranges were silently dropped."""
    from align.profile.reader import Profile

    with Profile(sqlite) as p:
        gpus = p.gpus()
        out = {"gpus": gpus["name"].dropna().astype(str).tolist() if "name" in gpus else [],
               "holds": {"kernels": bool(p.has_kernels), "nvtx": bool(p.has_nvtx)}}
        silent = nvtx_not_recorded(p, nsys)
    if silent:
        out["warning"] = silent
    return out


def nvtx_not_recorded(p, nsys: NsysInfo) -> str | None:
    """The program created or destroyed NVTX domains but nsys recorded no range or mark: what the
    Python ``nvtx`` package from 0.2.12 on looks like to nsys 2022.4 (its ranges are silently dropped)."""
    from align.profile.schema import NVTX_TABLE

    if not p.schema.has(NVTX_TABLE):
        return None
    et = p.schema.event_type
    domains = [c for c in (et("NvtxDomainCreate"), et("NvtxDomainDestroy")) if c >= 0]
    marks = [c for c in (et(n) for n in ("NvtxPushPopRange", "NvtxStartEndRange", "NvtxMark",
                                         "NvtxtPushPopRange", "NvtxtStartEndRange", "NvtxtMark")) if c >= 0]
    n_dom = p.conn.execute(f"SELECT count(*) FROM {NVTX_TABLE} WHERE eventType IN "
                           f"({','.join(map(str, domains))})").fetchone()[0] if domains else 0
    n_rng = p.conn.execute(f"SELECT count(*) FROM {NVTX_TABLE} WHERE eventType IN "
                           f"({','.join(map(str, marks))})").fetchone()[0] if marks else 0
    if n_dom and not n_rng:
        return (f"the program created NVTX domains but nsys {nsys.version} recorded no range: with nsys 2022.4 the "
                "Python nvtx package from 0.2.12 on is not recorded; install nvtx==0.2.11 (or use torch.cuda.nvtx)")
    return None


def gpus_from_smi() -> list[str]:
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in r.stdout.splitlines() if line.strip()] if r.returncode == 0 else []


def _align_version() -> str:
    from align import __version__

    return __version__
