"""Faults mid-run (issue 29 item 6): Ctrl-C, SIGTERM and SIGHUP during `align profile` (real nsys
2022.4 on CPU programs), `align export` and `align collect`; a Dask scheduler killed mid-collection;
an answer written to a closed pipe or a closed stdout; a damaged top-k trace record. Each: the
documented exit code, one line (at most two non-empty stderr lines), no traceback, the capture or
rows kept and recorded, no process left of those started, no temporary file left.

Signals are sent once the program (or the log) says it is ready, never after a fixed sleep."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from align.collect import writers

from .conftest import ROOT, run_align

EX = ROOT / "profiles" / "examples"
GUARD_S = 240  # a hang guard, far past what any of these takes

# a CPU program with NVTX ranges: writes its pid to MARKER once it has recorded 20 ranges, then
# ranges on until stopped (2 minutes at most); a SIGINT or SIGTERM from nsys ends it quietly
RANGES = """\
import os, signal, sys, time
import nvtx
signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
marker, end, i = sys.argv[1], time.time() + 120, 0
while time.time() < end:
    with nvtx.annotate(f"it_{i}"):
        time.sleep(0.005)
    i += 1
    if i == 20:
        with open(marker + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(marker + ".tmp", marker)
"""
# N ranges as fast as it can: an export that takes a moment
MANY = "import sys, nvtx\nfor _ in range(int(sys.argv[1])):\n    nvtx.push_range('r'); nvtx.pop_range()\n"


def _lines(text: str) -> list[str]:
    return [x for x in text.splitlines() if x.strip()]


def one_line(stderr: str, says: str) -> str:
    """The stderr of a fault: at most two non-empty lines, no traceback, one of them saying ``says``."""
    lines = _lines(stderr)
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert 1 <= len(lines) <= 2, stderr
    assert any(says in x for x in lines), stderr
    return next(x for x in lines if says in x)


def _wait(cond, what: str, proc: subprocess.Popen | None = None, timeout: float = GUARD_S) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the command ended before {what}: {proc.communicate()}")
        assert time.monotonic() < end, f"never: {what}"
        time.sleep(0.02)


def _running(pid: int) -> bool:
    """A process that still runs (a zombie runs nothing: its parent, init here, reaps it when it can)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return not f.read().split(") ", 1)[1].startswith("Z")
    except (FileNotFoundError, ProcessLookupError):
        return False


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` now."""
    out: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                kids = [int(x) for x in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
        out.update(kids)
        todo += kids
    return out


def _all_gone(pids: set[int], timeout: float = 60) -> bool:
    end = time.monotonic() + timeout
    while any(_running(p) for p in pids):
        if time.monotonic() > end:
            return False
        time.sleep(0.1)
    return True


class Started:
    """A command run as a terminal runs it: its own process group (so a Ctrl-C is sent to the group),
    a private TMPDIR (whatever is left in it is a temporary file left behind), every process it
    starts noted while it runs."""

    def __init__(self, args: list[str], tmp: Path, env: dict | None = None):
        self.tmpdir = tmp / "tmpdir"
        self.tmpdir.mkdir()
        full = {**os.environ, "TMPDIR": str(self.tmpdir), **(env or {})}
        self.proc = subprocess.Popen(args, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.seen: set[int] = set()

    def note(self) -> None:
        self.seen |= _descendants(self.proc.pid)

    def send(self, sig: int, group: bool = True) -> None:
        self.note()
        (os.killpg if group else os.kill)(self.proc.pid, sig)

    def finish(self) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=GUARD_S)
        assert _all_gone(self.seen | {self.proc.pid}), "a process it started is still running"
        assert not any(self.tmpdir.iterdir()), f"left in TMPDIR: {sorted(self.tmpdir.iterdir())}"
        return self.proc.returncode, out, err


def _profile(tmp: Path, name: str, program: list[str], *flags: str) -> Started:
    return Started([sys.executable, "-m", "align", "profile", "mock", "-q", "--name", name, "--store",
                    str(tmp / "store"), "--trace", "nvtx", *flags, "--", sys.executable, *program], tmp)


def _ranges(tmp: Path) -> tuple[list[str], Path]:
    prog = tmp / "ranges.py"
    prog.write_text(RANGES)
    return [str(prog), str(tmp / "ready")], tmp / "ready"


def _meta(entry: Path) -> dict:
    return json.loads((entry / "meta.json").read_text())


def _kept_capture(entry: Path) -> None:
    """A whole capture: report, export holding the program's ranges, nothing half-written."""
    import align

    names = {p.name for p in entry.iterdir()}
    assert {"report.nsys-rep", "report.sqlite", "nsys.log", "meta.json"} <= names, names
    assert not any(".partial" in n or n == ".nsys-tmp" for n in names), names
    with align.load(entry) as p:
        assert (p.nvtx()["text"].str.startswith("it_")).sum() >= 20


# ---- align profile -------------------------------------------------------------------------------
@pytest.mark.nsys
@pytest.mark.parametrize("sig, group, said", [
    (signal.SIGINT, True, "SIGINT"),    # Ctrl-C in a terminal: the whole process group
    (signal.SIGINT, False, "SIGINT"),   # kill -INT of align alone: passed on to nsys, not app-failed
    (signal.SIGTERM, False, "SIGTERM"),
    (signal.SIGHUP, False, "SIGHUP"),   # the terminal closed
])
def test_a_stopped_capture_keeps_its_report_and_export(nsys, tmp_path, sig, group, said):
    """Before: a Ctrl-C reached nsys twice (the terminal's and align's) and nsys dropped the report in
    2 of 3 runs (status no-report, the raw capture left in /tmp); SIGINT to align alone recorded
    app-failed. After: nsys is told once, writes the report, align exports it, status interrupted."""
    program, ready = _ranges(tmp_path)
    run = _profile(tmp_path, "x", program)
    _wait(ready.exists, "the program is ready", run.proc)
    app = int(ready.read_text())
    run.send(sig, group)
    rc, _, err = run.finish()
    assert rc == 130
    line = one_line(err, f"interrupted ({said})")
    entry = tmp_path / "store" / "x"
    assert str(entry) in line
    meta = _meta(entry)
    assert meta["status"] == "interrupted" and meta["signal"] == said and meta["aborted"] is False
    assert meta["files"]["sqlite"] == "report.sqlite"
    _kept_capture(entry)
    assert not _running(app) and not (tmp_path / "store" / ".x.lock").exists()


@pytest.mark.nsys
def test_a_second_ctrl_c_aborts_and_says_what_was_kept(nsys, tmp_path):
    """The second Ctrl-C aborts nsys (it drops the report): one line says so and what is kept."""
    program, ready = _ranges(tmp_path)
    run = _profile(tmp_path, "x", program)
    _wait(ready.exists, "the program is ready", run.proc)
    log = tmp_path / "store" / "x" / "nsys.log"
    run.send(signal.SIGINT)
    time.sleep(0.05)  # two key presses, not one signal
    run.send(signal.SIGINT)
    rc, _, err = run.finish()
    assert rc == 130
    entry = tmp_path / "store" / "x"
    meta = _meta(entry)
    assert meta["status"] == "interrupted" and meta["signal"] == "SIGINT"
    names = {p.name for p in entry.iterdir()}
    assert not any(".partial" in n or n == ".nsys-tmp" for n in names) and "nsys.log" in names
    if meta["aborted"]:  # both came while nsys ran
        line = one_line(err, "twice: aborted")
        assert "nsys.log" in line and str(entry) in line
        assert ("report.qdstrm" in names) == ("report.qdstrm" in line) == (meta["files"].get("raw") == "report.qdstrm")
    else:  # nsys had written its report before the second one: the capture is whole
        one_line(err, "interrupted (SIGINT)")
        _kept_capture(entry)
    assert "stopped by SIGINT" in log.read_text()


@pytest.mark.nsys
def test_ctrl_c_during_the_export_keeps_the_report(nsys, tmp_path):
    """Interrupted while nsys exports: the report stays, no half-written export, and the line says
    how to export it later."""
    prog = tmp_path / "many.py"
    prog.write_text(MANY)
    run = _profile(tmp_path, "x", [str(prog), "100000"])
    log = tmp_path / "store" / "x" / "nsys.log"
    _wait(lambda: log.exists() and " export " in log.read_text(), "the export started", run.proc)
    run.send(signal.SIGINT)
    rc, _, err = run.finish()
    assert rc == 130
    entry = tmp_path / "store" / "x"
    meta = _meta(entry)
    assert meta["status"] == "interrupted" and meta["files"]["report"] == "report.nsys-rep"
    names = {p.name for p in entry.iterdir()}
    assert "report.nsys-rep" in names and not any(".partial" in n or n == ".nsys-tmp" for n in names)
    if "report.sqlite" in names:  # the export finished before the signal landed: kept and recorded
        one_line(err, "exported")
        assert meta["files"]["sqlite"] == "report.sqlite"
    else:
        line = one_line(err, "before the export")
        assert f"align export {entry / 'report.nsys-rep'}" in line and meta["files"]["sqlite"] is None


@pytest.fixture(scope="module")
def big_report(nsys, tmp_path_factory) -> Path:
    """A report whose export takes a moment (100,000 ranges), with its export beside it."""
    tmp = tmp_path_factory.mktemp("big")
    prog = tmp / "many.py"
    prog.write_text(MANY)
    r = run_align("profile", "mock", "-q", "--name", "big", "--store", str(tmp / "store"), "--trace", "nvtx",
                  "--", sys.executable, str(prog), "100000")
    assert r.returncode == 0, r.stderr
    return tmp / "store" / "big"


@pytest.mark.nsys
def test_an_interrupted_export_leaves_the_old_export_whole(big_report, tmp_path):
    """`align export` stopped by Ctrl-C: exit 130, one line, the existing SQLite unchanged, no partial file."""
    rep = tmp_path / "report.nsys-rep"
    shutil.copy2(big_report / "report.nsys-rep", rep)
    old = tmp_path / "report.sqlite"
    shutil.copy2(big_report / "report.sqlite", old)
    before = old.read_bytes()
    run = Started([sys.executable, "-m", "align", "export", str(rep)], tmp_path)
    log = tmp_path / "report.export.log"
    _wait(lambda: log.exists() and " export " in log.read_text(), "the export started", run.proc)
    run.send(signal.SIGINT)
    rc, _, err = run.finish()
    assert rc == 130
    one_line(err, f"interrupted (SIGINT): {rep} was not exported: {old} is as it was")
    assert old.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.export.log", "report.nsys-rep", "report.sqlite",
                                                          "tmpdir"]


@pytest.mark.nsys
def test_the_end_of_duration_is_not_a_failed_program(nsys, tmp_path):
    """`--duration 2` on a program that runs longer: nsys ends it (exit 143) as asked. Before: status
    app-failed, exit 1, 'the profiled command exited with 143'. After: status ok, exit 0."""
    program, _ = _ranges(tmp_path)
    prog = Path(program[0])
    prog.write_text(RANGES.replace("signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n", ""))  # dies of it
    r = run_align("profile", "mock", "-q", "--name", "d", "--store", str(tmp_path / "store"), "--trace", "nvtx",
                  "--duration", "2", "--", sys.executable, *program)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    meta = _meta(tmp_path / "store" / "d")
    assert meta["status"] == "ok" and meta["exit_code"] == 143 and meta["ended_by"] == "duration"
    _kept_capture(tmp_path / "store" / "d")


# ---- align collect -------------------------------------------------------------------------------
STANDIN = ["--op", "standin", "--runs", "2", "--warmups", "1", "-f", "json"]
STANDIN_CASES = 16
KEY = ["num_heads", "batch_size", "isl", "step"]


def _rows(out: Path) -> list:
    folder = out / "cpu" / "gemm" / "standin" / "align"
    return [writers.read_rows(folder / f"standin_{p}_perf.txt") for p in ("context", "generation")]


def _done(out: Path) -> int:
    """Rows in the perf files: the record of the cases done."""
    return sum(len(t) for t in _rows(out)) if (out / "cpu").exists() else 0


def _resume_completes(out: Path, store: Path, *extra: str) -> None:
    """A plain --resume runs exactly the cases not done: every case once, none failed."""
    r = run_align("collect", *STANDIN, "--out", str(out), "--resume", *extra, env={"ALIGN_STORE": str(store)})
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["failed"] == 0 and data["done"] + data["already_done"] == STANDIN_CASES, data
    ctx, gen = _rows(out)
    assert len(ctx) == 12 == len(ctx.drop_duplicates(KEY)) and len(gen) == 4 == len(gen.drop_duplicates(KEY))


@pytest.mark.parametrize("sig, group, said", [(signal.SIGINT, True, "Ctrl-C"), (signal.SIGTERM, False, "SIGTERM")])
def test_a_stopped_collection_keeps_its_rows_and_resumes(tmp_path, sig, group, said):
    """Before: a Ctrl-C printed one KeyboardInterrupt traceback per worker and nothing of align's own.
    After: one line, exit 130, the workers stopped, every row written kept, --resume runs the rest."""
    out, store = tmp_path / "c", tmp_path / "store"
    run = Started([sys.executable, "-m", "align", "collect", *STANDIN, "--out", str(out)], tmp_path,
                  env={"ALIGN_STORE": str(store), "ALIGN_COLLECT_CASE_DELAY": "0.3"})
    _wait(lambda: _done(out) >= 2, "two cases done", run.proc)
    run.note()
    assert run.seen, "no worker process seen"
    run.send(sig, group)
    rc, stdout, err = run.finish()
    assert rc == 130 and stdout == ""
    line = one_line(err, f"interrupted ({said}) after ")
    assert str(out) in line and "--resume" in line
    ck = json.loads((out / ".align" / "checkpoint.json").read_text())
    assert ck["failed"] == {} and ck["runs"][-1]["interrupted"] == said
    done = _done(out)
    assert done >= 2 and f"after {done} of {STANDIN_CASES}" in line
    assert not (out / ".align" / "collector.lock").exists()
    _resume_completes(out, store)


def _dask_up(tmp: Path, tag: str) -> tuple[list[subprocess.Popen], str]:
    """A scheduler and two single-threaded workers offering GPU=1, as separate processes (by their ids)."""
    from distributed import Client

    sched_file = tmp / f"scheduler-{tag}.json"
    env = {**os.environ, "TMPDIR": str(tmp)}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                               "--port", "0", "--dashboard-address", ":0", "--scheduler-file", str(sched_file)],
                              **quiet)]
    def address() -> str | None:
        try:
            return json.loads(sched_file.read_text())["address"]
        except (OSError, ValueError, KeyError):
            return None

    _wait(lambda: address() is not None, "the scheduler is up", procs[0], 120)
    address = address()
    for _ in range(2):
        procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads",
                                       "1", "--resources", "GPU=1", "--no-nanny", "--no-dashboard"], **quiet))
    with Client(address, set_as_default=False, timeout=60) as c:
        c.wait_for_workers(2, timeout=120)
    return procs, address


def _down(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=60)


def test_a_scheduler_killed_mid_collection_is_one_line_and_resumable(tmp_path):
    """Before: distributed's tracebacks, 14 cases recorded as failed, and a plain --resume that exited
    0 with 2 of 16 cases in the files. After: one line, exit 1, no case recorded failed, and a
    --resume on a new scheduler runs every missing case."""
    pytest.importorskip("distributed")
    out, store = tmp_path / "c", tmp_path / "store"
    procs, address = _dask_up(tmp_path, "a")
    try:
        run = Started([sys.executable, "-m", "align", "collect", *STANDIN, "--out", str(out), "--scheduler",
                       address], tmp_path, env={"ALIGN_STORE": str(store), "ALIGN_COLLECT_CASE_DELAY": "0.5"})
        _wait(lambda: _done(out) >= 2, "two cases done", run.proc)
        procs[0].kill()  # the scheduler, by its id
        rc, stdout, err = run.finish()
    finally:
        _down(procs)
    assert rc == 1 and stdout == ""
    line = one_line(err, f"lost the Dask scheduler at {address}")
    assert "--resume" in line and str(out) in line
    ck = json.loads((out / ".align" / "checkpoint.json").read_text())
    assert ck["failed"] == {}
    done = _done(out)
    assert 2 <= done < STANDIN_CASES and f"after {done} of {STANDIN_CASES}" in line
    procs, address = _dask_up(tmp_path, "b")
    try:
        _resume_completes(out, store, "--scheduler", address)
    finally:
        _down(procs)


# ---- output that has nowhere to go ---------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_a_reader_that_left_early_ends_the_output_quietly(fmt):
    """`align events ... | head -1`, the reader gone before align writes: before, a BrokenPipeError
    traceback (or a silent exit 1 from typer). After: exit 0, nothing on stderr but the answer's own notes."""
    r_fd, w_fd = os.pipe()
    os.close(r_fd)  # the reader left: every write to the pipe fails with EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "align", "events", str(EX / "llama_e2e"), "-f", fmt],
                              stdout=w_fd, stderr=subprocess.PIPE, text=True, timeout=GUARD_S)
    finally:
        os.close(w_fd)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr and "Exception" not in proc.stderr
    assert "error" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_a_closed_stdout_is_one_line(fmt):
    """`align kernels ... >&-`: before, a traceback (csv, json) or an answer printed nowhere with exit
    0 (table). After: one line, exit 2."""
    cmd = f"exec {sys.executable} -m align kernels {EX / 'attn_mock'} -f {fmt} >&-"
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=GUARD_S)
    assert r.returncode == 2
    one_line(r.stderr, "standard output is closed")


# ---- a damaged top-k trace record ----------------------------------------------------------------
def _trace(tmp_path: Path) -> Path:
    with tarfile.open(EX / "trace" / "topk_trace.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    return next(p.parent for p in tmp_path.rglob("run_meta.json"))


DAMAGE = {  # field: (value, what the line says)
    "topk_string": ("topk", "abc", "topk is a string"),
    "topk_null": ("topk", None, "topk is null"),
    "topk_short": ("topk", "short", "topk holds 3 entries"),
    "topk_floats": ("topk", "floats", "topk is a list holding other values"),
    "blocks_string": ("blocks", "x", "blocks is a string"),
    "tokens_per_block_null": ("tokens_per_block", None, "tokens_per_block is null"),
    "offset_hist_long": ("offset_hist", [1, 2, 3, 4, 5], "offset_hist holds 5 entries"),
    "scores_short": ("scores", [0.5], "scores is not one number per position"),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_damaged_topk_record_costs_that_record(tmp_path, kind):
    """A record whose `topk` is a string (null, a wrong-length list, ...): before, a TypeError
    traceback, or a summary that silently counted it. After: as every damaged line of a trace, it is
    left out and one warning names the file, the line and why; the rest is summarised."""
    folder = _trace(tmp_path)
    whole = json.loads(run_align("trace", "topk", "summary", str(folder), "--table", "overall", "-f", "json").stdout)
    field, value, says = DAMAGE[kind]
    shard = sorted(folder.glob("topk_shard_*.jsonl"))[1]
    lines = shard.read_text().splitlines()
    rec = json.loads(lines[4])
    if value == "short":
        value = rec[field][:3]
    elif value == "floats":
        value = [float(x) for x in rec[field]]
    rec[field] = value
    lines[4] = json.dumps(rec)
    shard.write_text("\n".join(lines) + "\n")
    r = run_align("trace", "topk", "summary", str(folder), "--table", "overall", "-f", "json")
    assert r.returncode == 0
    line = one_line(r.stderr, f"the first at {shard}:5 ({says}")
    assert line.startswith("warning: 1 damaged record line(s) left out")
    [got], [was] = json.loads(r.stdout)["overall"], whole["overall"]
    assert got["records"] == was["records"] - 1 and got["bad_lines"] == 1


def test_a_trace_with_no_readable_record_is_refused(tmp_path):
    """Every record damaged: a summary of zero records would be a silent zero; one line, exit 2."""
    folder = _trace(tmp_path)
    for shard in folder.glob("topk_shard_*.jsonl"):
        shard.write_text("".join(line.replace('"topk":[', '"topk":"', 1).replace("],\"blocks\"", "\",\"blocks\"", 1)
                                 + "\n" for line in shard.read_text().splitlines()))
    r = run_align("trace", "topk", "summary", str(folder))
    assert r.returncode == 2
    one_line(r.stderr, "none of its records is readable")
