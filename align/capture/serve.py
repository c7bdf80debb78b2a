"""``align profile e2e --serve``: profile a multi-process server while it is warm and under load.

Worker processes are spawned by the server, so nsys runs system-wide and starts the server itself
(CUDA is traced only in processes launched under nsys). The capture window is nsys's own
``--delay``/``--duration`` (``nsys launch`` + ``start``/``stop`` hung on our CPU machines): align
starts nsys and the server in one new process group, waits until the server answers its ready
URL, sends the load inside the window, lets nsys end the collection (it stops the server with
SIGTERM), and then makes sure no process of the group is left. Whatever happens, the store entry
keeps nsys's and the server's log and a ``meta.json`` saying how far it got.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from align import datafiles
from align.errors import AlignError, NsysFailed, ServeFailed, arg
from align.capture.discover import NsysInfo, discover
from align.capture.export import export_sqlite
from align.capture.launch import (ProfileOptions, ProfileResult, build_command, check_program, contents, find_report,
                                  finish_meta, new_entry, start_meta, stopped_status, write_meta)
from align.capture.run import console
from align import store as st
from align.capture.load import LoadSpec, send_load, wait_ready


@dataclass
class ServeOptions:
    delay: float = 30.0
    duration: float = 20.0
    ready_url: str | None = None
    ready_timeout: float = 900.0
    load: LoadSpec | None = field(default_factory=LoadSpec)
    port: int | None = None
    env: dict = field(default_factory=dict)
    report_timeout: float = 300.0  # after the window closes, for nsys to stop the server and write

    def __post_init__(self) -> None:
        for name, value in (("delay", self.delay), ("duration", self.duration),
                            ("ready_timeout", self.ready_timeout), ("report_timeout", self.report_timeout)):
            if value is None or value < 0 or (value == 0 and name != "delay"):
                raise AlignError(f"{arg(name, str(value))}: out of range",
                                 f"pass seconds: {arg('delay')} 0 or more, the others more than 0")
        if self.port is not None and not 0 < self.port < 65536:
            raise AlignError(f"{arg('port', str(self.port))} is not a TCP port", "pass 1 to 65535")


def presets() -> dict:
    return datafiles.builtin("serve")["presets"]


def mixing_steps(meta: dict | None) -> str | None:
    """What of a served capture's command line a serve.toml [steps] mixed pattern matches (its steps may
    mix prefill and decode), or None: not served, or batching that keeps phases apart."""
    if not meta or not meta.get("serve"):
        return None
    line = str(meta.get("command_line", ""))
    found = (re.search(rx, line) for rx in datafiles.builtin("serve").get("steps", {}).get("mixed", []))
    return next((m.group(0) for m in found if m), None)


def preset_command(name: str, model: str | None, tp: int, port: int | None) -> tuple[list[str], dict]:
    """The server command of a preset and its settings (port, ready path, endpoint, env)."""
    all_presets = presets()
    if name not in all_presets:
        raise AlignError(f"unknown preset {name!r}", f"presets: {', '.join(all_presets)}")
    if not model:
        raise AlignError(f"{arg('preset', name)} needs {arg('model')}", f"e.g. {arg('model', '/path/to/DeepSeek-V3.2')}")
    p = all_presets[name]
    port = port or p["port"]
    cmd = shlex.split(p["command"].format(model=shlex.quote(model), tp=tp, port=port,
                                          python=shlex.quote(sys.executable)))
    return cmd, {"port": port, "ready": p["ready"], "endpoint": p["endpoint"], "env": dict(p.get("env", {}))}


def port_from(url: str | None) -> int | None:
    m = re.match(r"https?://[^/:]+:(\d+)", url or "")
    return int(m.group(1)) if m else None


def check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # as servers bind: the TIME_WAIT connections a previous server on this port left are no listener
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise AlignError(f"port {port} is taken", f"stop what listens there or pass another {arg('port')}") from None


def listeners(port: int) -> set[int]:
    """The pids holding a TCP socket that listens on ``port`` (IPv4 or IPv6), from /proc; empty where
    /proc says nothing (another OS, or no right to read other processes' descriptors)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{f[9]}]")
    pids = set()
    if not inodes:
        return pids
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{d}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{d}/fd/{fd}") in inodes:
                    pids.add(int(d))
                    break
            except OSError:
                continue
    return pids


def check_answered_by(port: int, ours: set[int]) -> None:
    """The server that answered the ready URL is the one align started: another program may have
    taken the port after it was checked free (ours then failed to listen, and theirs answers)."""
    owners = listeners(port)
    if owners and not owners & ours:
        pid = min(owners)
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            cmd = "?"
        raise ServeFailed(f"port {port} answered, but pid {pid} ({cmd[:80]}) listens there, not the server align started",
                          f"stop it or pass another {arg('port')}")


def _proc_table() -> dict[int, tuple[int, int, int]]:
    """pid -> (parent pid, process group, session) of every process."""
    table = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()
            if fields[0] != "Z":
                table[int(d)] = (int(fields[1]), int(fields[2]), int(fields[3]))
    return table


def family(root: int) -> set[int]:
    """``root``, its descendants, and everything in their process groups and sessions: nsys starts
    the server in a session of its own, and workers may start more."""
    table = _proc_table()
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in found or pid not in table:
            continue
        found.add(pid)
        todo += [c for c, (ppid, _, _) in table.items() if ppid == pid]
    groups = {table[p][1] for p in found} | {table[p][2] for p in found}
    return found | {p for p, (_, pg, sid) in table.items() if pg in groups or sid in groups} - {os.getpid()}


def _kill_all(pids: set[int], grace: float = 5.0) -> list[int]:
    """SIGTERM, then SIGKILL what is still alive after ``grace``; returns the pids killed hard."""
    def alive() -> list[int]:
        table = _proc_table()
        return [p for p in pids if p in table]

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 1.0)):
        left = alive()
        if not left:
            return [] if sig == signal.SIGTERM else left
        for p in left:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and alive():
            time.sleep(0.1)
        if sig == signal.SIGKILL:
            return left
    return []


def _kill_agents(nsys_pid: int) -> list[int]:
    """nsys's agent runs in a session of its own, named after the nsys process; a hung capture can
    leave it behind."""
    killed = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "--start-agent" in cmd and re.search(rf"--session-name=profile-\S*-{nsys_pid}\b", cmd):
            try:
                os.kill(int(d), signal.SIGKILL)
                killed.append(int(d))
            except ProcessLookupError:
                pass
    return killed


def _keep_partial_capture(log: Path, entry: Path, meta: dict) -> None:
    """A capture nsys never finished stays in its temporary folder: move it into the entry (nothing
    is lost; the importer refuses an incomplete one, which says what happened)."""
    m = re.search(r"Generating '([^']+\.qdstrm)'", log.read_text(errors="replace")) if log.exists() else None
    if m and Path(m.group(1)).exists():
        target = entry / "report.incomplete.qdstrm"
        shutil.move(m.group(1), target)
        meta["files"]["incomplete_capture"] = target.name


def _tail(path: Path, n: int = 12) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def profile_serve(cmd: list[str], serve: ServeOptions, name: str | None = None, store: st.Store | None = None,
                  options: ProfileOptions | None = None, nsys: NsysInfo | None = None, overwrite: bool = False,
                  quiet: bool = False, op: str | None = None) -> ProfileResult:
    if not cmd:
        raise AlignError("no server command", f"put it after --, or use {arg('preset', 'NAME')} {arg('model', 'M')}")
    if serve.duration <= 0:
        raise AlignError(f"{arg('duration')} must be > 0 when serving", f"the capture window is {arg('delay', 'S')} to S + {arg('duration')}")
    options = options or ProfileOptions(trace="cuda,nvtx,osrt", sample="system-wide", cpuctxsw="system-wide")
    options.delay, options.duration = serve.delay, serve.duration
    options.validate()
    port = serve.port or port_from(serve.ready_url)
    if port is None:
        raise AlignError("which port does the server listen on?", f"pass {arg('port')} or {arg('ready_url', 'http://127.0.0.1:PORT/health')}")
    check_port_free(port)
    ready_url = serve.ready_url or f"http://127.0.0.1:{port}/health"
    base_url = re.match(r"(https?://[^/]+)", ready_url).group(1)
    check_program(cmd)
    nsys = nsys or discover()
    store, name, entry, started = new_entry(store, name, "serve", overwrite)
    try:
        log = entry / st.LOG
        base = entry / Path(st.REPORT).stem
        nsys_cmd = build_command(nsys, base, options, cmd)
        meta = start_meta(name, "e2e", op, cmd, nsys, nsys_cmd, options, started, serve=True,
                          window={"delay_s": serve.delay, "duration_s": serve.duration}, ready_url=ready_url,
                          load_spec=asdict(serve.load) if serve.load else None)
        write_meta(entry, meta)
        status, report, sqlite, rc = "ok", None, None, None
        logf = open(log, "w")
        logf.write(f"$ {shlex.join(nsys_cmd)}\n")
        logf.flush()
        env = {**os.environ, **serve.env}
        t0 = time.monotonic()
        proc = subprocess.Popen(nsys_cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        pgid = proc.pid
        seen: set[int] = set()
        say = (lambda msg: None) if quiet else (lambda msg: console.print(msg))
        try:
            say(f"[bold]serving[/] {shlex.join(cmd)} under nsys [dim]-> {entry}[/]")
            try:
                waited = wait_ready(ready_url, serve.ready_timeout, alive=lambda: proc.poll() is None)
            except ServeFailed as exc:
                status = "never-ready"
                raise ServeFailed(f"{exc.message}; last server/nsys lines:\n{_tail(log)}", exc.hint) from None
            meta["ready_after_s"] = round(waited, 2)
            seen |= family(proc.pid)  # the server and its workers, while nsys still holds them
            try:
                check_answered_by(port, seen)
            except ServeFailed:
                status = "port-taken"
                raise
            window_start = t0 + serve.delay
            window_end = window_start + serve.duration
            if time.monotonic() > window_start:
                meta["warning"] = "the server became ready after the capture window opened; raise the delay"
                say(f"[yellow]warning:[/] {meta['warning']}")
            while time.monotonic() < window_start + 0.5:
                time.sleep(0.1)
            if serve.load:
                say(f"capture window open: sending {serve.load.requests} requests, {serve.load.concurrency} at a time")
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

                with Progress(TextColumn("load"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[errs]}"),
                              TimeElapsedColumn(), console=console, disable=quiet) as bar:
                    task = bar.add_task("load", total=serve.load.requests, errs="")
                    result = send_load(base_url, serve.load, progress=lambda r: bar.update(
                        task, completed=r.sent, errs=f"{r.errors} errors" if r.errors else ""))
                meta["load"] = result.summary()
                say(f"load: {result.ok} answered, {result.errors} errors of {result.sent} sent")
                if time.monotonic() > window_end:
                    meta["load_warning"] = "the load outlasted the capture window; lengthen the duration or send less"
                if result.errors:
                    status = "load-errors"
            with console.status("capturing until the window closes, then nsys writes the report"):
                deadline = window_end + serve.report_timeout
                while proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.2)
            if proc.poll() is None:
                # seen with nsys 2022.4 in system-wide mode: the session neither ends nor answers; one
                # SIGINT is nsys's "stop and write the report" (a second one aborts without a report)
                status = "nsys-hung"
                meta["warning"] = f"nsys still running {serve.report_timeout:.0f} s after the window closed"
                os.killpg(pgid, signal.SIGINT)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    pass
            rc = proc.returncode
            meta["exit_code"] = rc
            if time.monotonic() < window_end - 0.5 and status == "ok":
                status = "server-died"
        except (KeyboardInterrupt, Exception) as exc:
            status = stopped_status(status, exc)
            if isinstance(exc, KeyboardInterrupt):
                try:
                    os.killpg(pgid, signal.SIGINT)  # nsys still writes the report of what it captured
                    proc.wait(timeout=120)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
            raise
        finally:
            leftover = _kill_all(seen | family(pgid)) + _kill_agents(proc.pid)
            if proc.poll() is None:
                proc.wait(timeout=30)
            meta["killed_leftovers"] = leftover
            logf.close()
            try:
                report = find_report(entry, nsys, log)
                if report is None:
                    _keep_partial_capture(log, entry, meta)
                if report is not None:
                    meta["files"]["report"] = report.name
                    sqlite = export_sqlite(report, entry / st.SQLITE, nsys=nsys, log=log, quiet=True)
                    meta["files"]["sqlite"] = sqlite.name
                    meta.update(contents(sqlite, nsys))  # what it holds; GPUs of the host are set below
                elif status == "ok":
                    status = "no-report"
            except NsysFailed as exc:
                meta["export_error"] = str(exc)
                status = "export-failed" if status == "ok" else status
            finish_meta(entry, meta, status, t0, host_gpus=True)
        if status == "no-report":
            raise NsysFailed(f"nsys wrote no report (exit {rc})", f"see {log}")
        return ProfileResult(name=name, path=entry, sqlite=sqlite, report=report, exit_code=rc, status=status,
                             meta=meta)
    finally:
        store.release(name)
