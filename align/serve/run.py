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

import datetime as dt
import os
import re
import shlex
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

from align.errors import AlignError, NsysFailed
from align.nsys.discover import NsysInfo, discover
from align.nsys.export import export_sqlite
from align.nsys.launch import ProfileOptions, ProfileResult, _find_report, _gpus_from_smi, _write_meta, git_revisions
from align.nsys.run import console
from align.profile import store as st
from align.serve.load import LoadSpec, send_load, wait_ready

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


@dataclass
class ServeOptions:
    delay: float = 30.0
    duration: float = 20.0
    ready_url: str | None = None
    ready_timeout: float = 900.0
    load: LoadSpec | None = field(default_factory=LoadSpec)
    port: int | None = None
    env: dict = field(default_factory=dict)


def presets() -> dict:
    return tomllib.loads(resources.files("align").joinpath("data/serve.toml").read_text())["presets"]


def preset_command(name: str, model: str | None, tp: int, port: int | None) -> tuple[list[str], dict]:
    """The server command of a preset and its settings (port, ready path, endpoint, env)."""
    all_presets = presets()
    if name not in all_presets:
        raise AlignError(f"unknown preset {name!r}", f"presets: {', '.join(all_presets)}")
    if not model:
        raise AlignError(f"--preset {name} needs --model", "e.g. --model /path/to/DeepSeek-V3.2")
    p = all_presets[name]
    port = port or p["port"]
    cmd = shlex.split(p["command"].format(model=model, tp=tp, port=port))
    return cmd, {"port": port, "ready": p["ready"], "endpoint": p["endpoint"], "env": dict(p.get("env", {}))}


def port_from(url: str | None) -> int | None:
    m = re.match(r"https?://[^/:]+:(\d+)", url or "")
    return int(m.group(1)) if m else None


def check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise AlignError(f"port {port} is taken", "stop what listens there or pass another --port") from None


def _kill_group(pgid: int, grace: float = 5.0) -> list[int]:
    """SIGTERM then SIGKILL every process of the group; returns pids that had to be killed hard."""
    def members() -> list[int]:
        out = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    if os.getpgid(int(d)) == pgid:
                        out.append(int(d))
                except (ProcessLookupError, PermissionError):
                    pass
        return out

    if not members():
        return []
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return []
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and members():
        time.sleep(0.1)
    hard = members()
    if hard:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return hard


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
        raise AlignError("no server command", "put it after --, or use --preset NAME --model M")
    if serve.duration <= 0:
        raise AlignError("--duration must be > 0 with --serve", "the capture window is --delay S to S + --duration")
    options = options or ProfileOptions(trace="cuda,nvtx,osrt", sample="system-wide", cpuctxsw="system-wide")
    options.delay, options.duration = serve.delay, serve.duration
    options.validate()
    port = serve.port or port_from(serve.ready_url)
    if port is None:
        raise AlignError("which port does the server listen on?", "pass --port or --ready-url http://127.0.0.1:PORT/health")
    check_port_free(port)
    ready_url = serve.ready_url or f"http://127.0.0.1:{port}/health"
    base_url = re.match(r"(https?://[^/]+)", ready_url).group(1)
    nsys = nsys or discover()
    store = store or st.Store()
    started = dt.datetime.now(dt.timezone.utc)
    name = name or f"serve-{started.astimezone().strftime('%Y%m%d-%H%M%S')}"
    entry = store.create(name, overwrite=overwrite)
    log = entry / st.LOG
    base = entry / Path(st.REPORT).stem
    nsys_cmd = [nsys.path, "profile", *options.nsys_args(), "--force-overwrite", "true", "--output", str(base), *cmd]
    meta = {"name": name, "kind": "e2e", "op": op, "serve": True, "command": cmd, "command_line": shlex.join(cmd),
            "cwd": os.getcwd(), "nsys": {"path": nsys.path, "version": nsys.version, "source": nsys.source},
            "nsys_command": nsys_cmd, "options": asdict(options),
            "window": {"delay_s": serve.delay, "duration_s": serve.duration}, "ready_url": ready_url,
            "load_spec": asdict(serve.load) if serve.load else None, "host": socket.gethostname(),
            "start_time": started.isoformat(timespec="seconds"), "status": "running", "exit_code": None,
            "git": git_revisions(cmd), "files": {"report": None, "sqlite": None, "log": st.LOG}}
    _write_meta(entry, meta)
    status, report, sqlite, rc = "ok", None, None, None
    logf = open(log, "w")
    logf.write(f"$ {shlex.join(nsys_cmd)}\n")
    logf.flush()
    env = {**os.environ, **serve.env}
    t0 = time.monotonic()
    proc = subprocess.Popen(nsys_cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    pgid = proc.pid
    say = (lambda msg: None) if quiet else (lambda msg: console.print(msg))
    try:
        say(f"[bold]serving[/] {shlex.join(cmd)} under nsys [dim]-> {entry}[/]")
        try:
            waited = wait_ready(ready_url, serve.ready_timeout, alive=lambda: proc.poll() is None)
        except AlignError as exc:
            status = "never-ready"
            raise AlignError(f"{exc.message}; last server/nsys lines:\n{_tail(log)}", exc.hint) from None
        meta["ready_after_s"] = round(waited, 2)
        window_start = t0 + serve.delay
        window_end = window_start + serve.duration
        if time.monotonic() > window_start:
            meta["warning"] = "the server became ready after the capture window opened; raise --delay"
            say(f"[yellow]warning:[/] {meta['warning']}")
        while time.monotonic() < window_start + 0.5:
            time.sleep(0.1)
        if serve.load:
            say(f"capture window open: sending {serve.load.requests} requests, {serve.load.concurrency} at a time")
            result = send_load(base_url, serve.load)
            meta["load"] = result.summary()
            say(f"load: {result.ok} answered, {result.errors} errors of {result.sent} sent")
            if time.monotonic() > window_end:
                meta["load_warning"] = "the load outlasted the capture window; lengthen --duration or send less"
            if result.errors:
                status = "load-errors"
        with console.status("capturing until the window closes, then nsys writes the report"):
            while proc.poll() is None:
                time.sleep(0.2)
        rc = proc.returncode
        meta["exit_code"] = rc
        if time.monotonic() < window_end - 0.5 and status == "ok":
            status = "server-died"
    except KeyboardInterrupt:
        status = "interrupted"
        try:
            os.killpg(pgid, signal.SIGINT)  # nsys still writes the report of what it captured
            proc.wait(timeout=120)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        raise
    except Exception:
        if status == "ok":
            status = "failed"
        raise
    finally:
        leftover = _kill_group(pgid)
        if proc.poll() is None:
            proc.wait(timeout=30)
        meta["killed_leftovers"] = leftover
        logf.close()
        try:
            report = _find_report(entry, nsys, log)
            if report is not None:
                meta["files"]["report"] = report.name
                sqlite = export_sqlite(report, entry / st.SQLITE, nsys=nsys, log=log, quiet=True)
                meta["files"]["sqlite"] = sqlite.name
            elif status == "ok":
                status = "no-report"
        except NsysFailed as exc:
            meta["export_error"] = str(exc)
            status = "export-failed" if status == "ok" else status
        meta["status"] = status
        meta["end_time"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        meta["duration_s"] = round(time.monotonic() - t0, 3)
        meta["gpus"] = _gpus_from_smi()
        _write_meta(entry, meta)
    if status == "no-report":
        raise NsysFailed(f"nsys wrote no report (exit {rc})", f"see {log}")
    return ProfileResult(name=name, path=entry, sqlite=sqlite, report=report, exit_code=rc, status=status, meta=meta)
