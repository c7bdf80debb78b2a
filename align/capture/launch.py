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
import shutil
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
from align.capture.run import ChildStopped, console, run_logged
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


def build_command(nsys: NsysInfo, output_base: Path, options: ProfileOptions, cmd: list[str],
                  app_tmpdir: str | None = None) -> list[str]:
    """``nsys profile`` of ``cmd``; ``app_tmpdir``: the program's own TMPDIR where nsys is given another."""
    args = options.nsys_args()
    if app_tmpdir:
        args = with_app_env(args, "TMPDIR", app_tmpdir)
    return [nsys.path, "profile", *args, "--force-overwrite", "true", "--output", str(output_base), *cmd]


def with_app_env(args: list[str], name: str, value: str) -> list[str]:
    """``args`` setting ``name=value`` for the program too: nsys takes one ``--env-var A=B,C=D`` only,
    so it joins the one already there (a user's own value of ``name`` wins)."""
    for i, word in enumerate(args):
        for flag in ("--env-var", "-e"):
            if word == flag and i + 1 < len(args):
                at, given, head = i + 1, args[i + 1], ""
            elif word.startswith(flag + "=") and flag == "--env-var":
                at, given, head = i, word[len(flag) + 1:], flag + "="
            else:
                continue
            if any(pair.split("=", 1)[0] == name for pair in given.split(",")):
                return args
            return [*args[:at], f"{head}{given},{name}={value}", *args[at + 1:]]
    return [*args, "--env-var", f"{name}={value}"]


def profile(cmd: list[str], kind: str = "mock", name: str | None = None, store: st.Store | None = None,
            options: ProfileOptions | None = None, nsys: NsysInfo | None = None, overwrite: bool = False,
            quiet: bool = False, export: bool = True, op: str | None = None,
            planted: str | None = None) -> ProfileResult:
    """Profile ``cmd`` under nsys into ``store/<name>/`` and export it; see the module docstring.
    ``planted``: what was planted in this run to test the checks (recorded; such a capture is never
    taken as the newest pair of its op)."""
    if not cmd:
        raise AlignError("no command to profile", "put it after --, e.g. align profile mock -- python mock.py")
    check_program(cmd)
    if name is not None:
        st.check_name(name)  # a bad name is said before nsys is looked for
    options = options or ProfileOptions()
    options.validate()
    nsys = nsys or discover()
    store, name, entry, started = new_entry(store, name, kind, overwrite)
    try:
        with terminate_as_interrupt() as stop:
            return _capture(cmd, kind, name, entry, options, nsys, quiet, export, op, started, stop, planted)
    finally:
        store.release(name)


def check_program(cmd: list[str]) -> None:
    """Refuse a program that cannot start before nsys runs it and before an entry is made: nsys
    only logs "Program not found" and writes no report, which reads as a capture that failed."""
    prog = cmd[0]
    if os.sep in prog or (os.altsep and os.altsep in prog):
        path = Path(prog)
        if not path.exists():
            raise AlignError(f"{prog}: no such program", "check the command after --")
        if path.is_dir():
            raise AlignError(f"{prog} is a folder, not a program", "check the command after --")
        if not os.access(path, os.X_OK):
            raise AlignError(f"{prog} is not executable", f"chmod +x {prog}, or run it through its interpreter")
    elif shutil.which(prog) is None:
        raise AlignError(f"{prog}: program not found (not on PATH)",
                         "check the command after -- (its spelling, or activate the environment that has it)")


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
    """SIGTERM or SIGHUP during a capture ends it as Ctrl-C does (nsys is asked to stop and write what
    it has, meta.json says ``interrupted``) instead of killing align with its entry left ``running``.
    Yields a dict whose ``signal`` names the signal once one came."""
    state: dict = {"signal": None}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum, frame):
        state["signal"] = signal.Signals(signum).name
        raise KeyboardInterrupt

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield state
    finally:
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


# nsys's own temporary files (the raw capture, session files) go here, inside the entry: what an
# aborted nsys leaves is kept with its capture, and nothing of it is left in the system's /tmp
NSYS_TMP = ".nsys-tmp"


def _capture(cmd, kind, name, entry, options, nsys, quiet, export, op, started, stop, planted=None) -> ProfileResult:
    base = entry / Path(st.REPORT).stem
    log = entry / st.LOG
    tmp = entry / NSYS_TMP
    app_tmp = os.environ.get("TMPDIR") or "/tmp"
    private = "," not in app_tmp  # nsys's --env-var takes no comma
    nsys_cmd = build_command(nsys, base, options, cmd, app_tmpdir=app_tmp if private else None)
    meta = start_meta(name, kind, op, cmd, nsys, nsys_cmd, options, started,
                      **({"planted": planted} if planted else {}))
    write_meta(entry, meta)
    t0 = time.monotonic()
    status = "ok"
    rc: int | None = None
    report: Path | None = None
    sqlite: Path | None = None
    stopped: ChildStopped | None = None  # a Ctrl-C, SIGTERM or SIGHUP that nsys (or its export) was stopped by
    try:
        if not quiet:
            console.print(f"[bold]profiling[/] {shlex.join(cmd)} [dim]-> {entry}[/]")
        if private:
            tmp.mkdir(exist_ok=True)
        try:
            rc = run_logged(nsys_cmd, log, title=f"nsys profile ({kind})", quiet=quiet,
                            env={**os.environ, "TMPDIR": str(tmp)} if private else None,
                            stopping="waiting for nsys to write the report of what it captured")
        except ChildStopped as exc:
            stopped, rc = exc, exc.rc
        except OSError as exc:
            raise NsysFailed(f"could not start nsys at {nsys.path}: {exc}", "check NSYS or your install")
        meta["exit_code"] = rc
        keep_raw_capture(tmp, entry)
        aborted = stopped is not None and stopped.aborted
        try:
            report = (entry / st.REPORT if (entry / st.REPORT).exists() else None) if aborted \
                else find_report(entry, nsys, log)
        except ChildStopped as exc:  # the import of a raw capture, interrupted: the raw capture is kept
            stopped = stopped or exc
        if report is None and stopped is None:
            status = "no-report"
            raise NsysFailed(f"nsys wrote no report (exit {rc})",
                             f"see {log}; with a capture range, check that the program reaches it")
        if report is not None:
            meta["files"]["report"] = report.name
        if export and report is not None and not aborted:
            try:
                sqlite = export_sqlite(report, entry / st.SQLITE, nsys=nsys, log=log, quiet=quiet)
            except ChildStopped as exc:  # the export interrupted: the report is kept, export it later
                stopped = stopped or exc
                sqlite = entry / st.SQLITE if (entry / st.SQLITE).exists() else None  # it finished all the same
            except NsysFailed:
                status = "export-failed"
                raise
        if sqlite is not None:
            meta["files"]["sqlite"] = sqlite.name
            meta.update(contents(sqlite, nsys))
        if stopped is not None:
            status = "interrupted"
            meta.update(signal=stopped.signal, aborted=stopped.aborted)
        elif ended_by_duration(rc, options, time.monotonic() - t0):
            meta["ended_by"] = "duration"  # nsys ended the program as asked: not the program's failure
        elif rc not in (0, None):
            status = "app-failed"
    except (KeyboardInterrupt, Exception) as exc:
        status = stopped_status(status, exc)
        raise
    finally:
        if stop["signal"]:
            status = "interrupted"
            meta["signal"] = stop["signal"]
        if (entry / RAW).exists():
            meta["files"]["raw"] = RAW
        shutil.rmtree(tmp, ignore_errors=True)
        finish_meta(entry, meta, status, t0)
    return ProfileResult(name=name, path=entry, sqlite=sqlite, report=report, exit_code=rc, status=status, meta=meta)


RAW = Path(st.REPORT).with_suffix(".qdstrm").name


def ended_by_duration(rc: int | None, options: ProfileOptions, elapsed_s: float) -> bool:
    """Whether nsys itself ended the program when ``--duration`` ran out: it sends SIGTERM (its
    ``--kill`` default), so the program exits 143 once delay + duration have passed."""
    return (rc == 128 + signal.SIGTERM and options.duration is not None
            and elapsed_s >= (options.delay or 0) + options.duration)


def keep_raw_capture(tmp: Path, entry: Path) -> None:
    """The raw capture (``.qdstrm``) nsys left in its temporary folder, moved into the entry as
    ``report.qdstrm`` when nsys wrote no report (aborted, or its importer missing)."""
    if (entry / st.REPORT).exists() or (entry / RAW).exists() or not tmp.is_dir():
        return
    raw = sorted(tmp.glob("*.qdstrm"), key=lambda p: p.stat().st_size)
    if raw:
        os.replace(raw[-1], entry / RAW)


def stopped_line(result: ProfileResult) -> str:
    """One line on an interrupted capture: what stopped it and what of it was kept, where."""
    meta, where = result.meta, result.path
    how = f"{meta.get('signal') or 'SIGINT'}{' twice: aborted' if meta.get('aborted') else ''}"
    if result.sqlite is not None:
        return f"interrupted ({how}): the capture of what ran until then is kept in {where}, exported"
    if result.report is not None:
        return (f"interrupted ({how}) before the export: the report is kept in {where}; export it with: "
                f"align export {result.report}")
    raw = meta.get("files", {}).get("raw")
    kept = f"its raw capture ({raw}, likely incomplete) and nsys.log" if raw else "nsys.log"
    return f"interrupted ({how}): nsys wrote no report; {kept} kept in {where}"


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
