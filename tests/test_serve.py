"""align profile e2e --serve with the real nsys, system-wide, on a stand-in multi-process server
(tests/programs/standin_server.py): capture window, load, per-process attribution, failure paths,
and never an orphan process."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest

import align
from align.profile.processes import process_table

from .conftest import PROGRAMS, run_align

pytestmark = pytest.mark.nsys
SERVER = str(PROGRAMS / "standin_server.py")
DELAY, DURATION = 3, 7


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def no_standin_left() -> bool:
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                cmd = Path(f"/proc/{d}/cmdline").read_bytes()
            except OSError:
                continue
            if b"standin_server.py" in cmd and alive(int(d)):
                return False
    return True


def serve(tmp_path: Path, name: str, *server_args: str, load: str = "requests=8,concurrency=4,input=16,output=4",
          extra: tuple[str, ...] = (), ready_timeout: str = "60") -> tuple:
    port = free_port()
    pids = tmp_path / f"{name}.pids.json"
    r = run_align("profile", "e2e", "--serve", "--name", name, "--store", str(tmp_path / "store"), "--port", str(port),
                  "--delay", str(DELAY), "--duration", str(DURATION), "--trace", "nvtx,osrt", "--load", load,
                  "--ready-timeout", ready_timeout, "--report-timeout", "45", "-q", "-f", "json", *extra, "--",
                  sys.executable, SERVER, "--port", str(port), "--workers", "2", "--pid-file", str(pids),
                  "--startup-delay", "0.5", *server_args)
    entry = tmp_path / "store" / name
    meta = json.loads((entry / "meta.json").read_text()) if (entry / "meta.json").exists() else {}
    started = json.loads(pids.read_text()) if pids.exists() else None
    return r, entry, meta, started


def serve_until_nsys_finishes(tmp_path: Path, name: str, *server_args: str, **options) -> tuple:
    """``serve``, tried again while nsys hangs. Debian's nsys 2022.4 sometimes hangs in system-wide
    mode after the window (seen in about one run in three, with an incomplete .qdstrm). align
    reports that as status nsys-hung, keeps the partial capture and leaves no process behind; the
    capture is then simply tried again."""
    for attempt in range(4):
        r, entry, meta, pids = serve(tmp_path, f"{name}{attempt}", *server_args, **options)
        if meta.get("status") != "nsys-hung":
            break
        assert r.returncode == 1 and no_standin_left()
        assert (entry / "report.incomplete.qdstrm").exists()
    return r, entry, meta, pids


def test_served_profile_window_load_and_processes(nsys, tmp_path):
    r, entry, meta, pids = serve_until_nsys_finishes(tmp_path, "srv")
    assert r.returncode == 0, r.stderr
    assert meta["status"] == "ok" and meta["load"]["sent"] == 8 and meta["load"]["answered"] == 8
    assert meta["ready_after_s"] < DELAY
    workers = {int(p) for p in pids["workers"].values()}
    with align.load(entry) as p:
        nvtx = p.nvtx(marks=False)
        span = p.summary()["session"]
        procs = process_table(p)
    # nsys was told the window and kept to it (a loaded machine starts and stops it late by seconds,
    # so the span is checked against the window loosely), and everything the load caused is in it:
    # 8 requests x (1 prefill + 4 decode steps), each a forward step with layer ranges
    told = meta["nsys_command"]
    assert told[told.index("--duration") + 1] == str(DURATION) and told[told.index("--delay") + 1] == str(DELAY)
    assert DURATION / 2 < span["duration_ns"] / 1e9 < DURATION + 5
    steps = nvtx[nvtx["text"].str.startswith("[Executor] _forward_step")]
    if "load_warning" in meta:  # a busy machine: the load outlasted the window, and align said so
        assert 0 < len(steps) <= 8 * 5 and "outlasted the capture window" in meta["load_warning"]
    else:
        assert len(steps) == 8 * 5
    # every worker's ranges belong to that worker; both workers served requests; none in the main process
    layer = nvtx[nvtx["text"] == "layers.0.self_attn"]
    assert set(layer["pid"]) == workers and set(steps["pid"]) == workers
    assert int(pids["main"]) not in set(steps["pid"])
    assert workers <= set(procs["pid"])
    for pid in [int(pids["main"]), *workers]:
        assert not alive(pid)
    assert no_standin_left()
    # the analyses take a process: the forward steps of one worker only
    one = sorted(workers)[0]
    r = run_align("events", str(entry), "--kind", "nvtx", "--limit", "0", "-f", "json")
    rows = [e for e in json.loads(r.stdout) if e["text"].startswith("[Executor]")]
    assert {e["pid"] for e in rows} == workers and sum(e["pid"] == one for e in rows) > 0


def test_server_never_ready(nsys, tmp_path):
    r, entry, meta, _ = serve(tmp_path, "never", "--never-ready", ready_timeout="4")
    assert r.returncode == 1 and "did not answer 200" in r.stderr and "Traceback" not in r.stderr
    assert meta["status"] == "never-ready" and (entry / "nsys.log").exists()
    assert no_standin_left()


def test_server_dies_during_capture(nsys, tmp_path):
    r, entry, meta, pids = serve_until_nsys_finishes(tmp_path, "dies", "--die-after", "1",
                                                     load="requests=200,concurrency=2,input=8,output=8")
    assert r.returncode == 1
    assert meta["status"] in ("server-died", "load-errors") and meta["load"]["errors"] > 0
    assert (entry / "nsys.log").exists()
    assert no_standin_left() and not any(alive(int(p)) for p in pids["workers"].values())


def test_load_errors_are_reported(nsys, tmp_path):
    r, entry, meta, _ = serve_until_nsys_finishes(tmp_path, "errs", "--error-rate", "0.5")
    assert r.returncode == 1 and "load-errors" in r.stderr
    assert meta["status"] == "load-errors" and meta["load"]["errors"] == 4 and meta["load"]["answered"] == 4
    assert (entry / "report.sqlite").exists()
    assert no_standin_left()


def test_port_taken(nsys, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run_align("profile", "e2e", "--serve", "--port", str(port), "--store", str(tmp_path), "--",
                      sys.executable, SERVER, "--port", str(port))
    assert r.returncode == 2 and f"port {port} is taken" in r.stderr
    assert no_standin_left()


def test_nsys_fails(nsys, tmp_path):
    r, entry, meta, _ = serve(tmp_path, "badflag", extra=("--no-such-nsys-flag",), ready_timeout="20")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert meta["status"] in ("never-ready", "no-report") and "usage" in (entry / "nsys.log").read_text().lower()
    assert no_standin_left()


def test_presets_build_commands():
    from align.capture.serve import preset_command

    cmd, p = preset_command("trtllm", "/models/DeepSeek-V3.2", 8, None)
    assert cmd[:2] == ["trtllm-serve", "/models/DeepSeek-V3.2"] and cmd[cmd.index("--tp_size") + 1] == "8"
    assert p["port"] == 8000 and p["ready"] == "/health"
    cmd, p = preset_command("vllm", "m", 2, 9000)
    assert cmd[:3] == ["vllm", "serve", "m"] and p["env"]["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"
    cmd, p = preset_command("sglang", "m", 4, None)
    assert "sglang.launch_server" in cmd and p["port"] == 30000
