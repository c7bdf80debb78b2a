"""``align collect``: one worker process per GPU pulling cases from a shared queue, rows appended to
the perf files as they finish, and a resumable record of what is done.

The perf files are the record: a case is done when its row is in its file, so a run killed with
``kill -9`` (even between writing a row and anything else) resumes without losing or repeating a
case; a partial last line left by a killed writer is cut on resume. Failures (OOM, errors, a
worker that died) are recorded in ``.align/checkpoint.json`` and the run goes on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing as mp
import os
import queue
import random
import re
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from align import pidlock
from align.collect import writers
from align.collect.benchmark import benchmark
from align.collect.cases import Case, OpSpec, check_subset, grid, op_spec
from align.collect.check import CASES_LOG
from align.collect.contract import RowNotWritten, framework_label, run_case, use_device
from align.errors import AlignError, Interrupted, arg
from align.files import WriteFailed, write_text

STATE = ".align"


_FOLDER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class Settings:
    warmups: int = 5
    runs: int = 20
    use_graph: bool = True
    measure_power: bool = False
    dtype: str = "bfloat16"
    backend: str | None = None  # default: the implementation timed (never a backend that did not run)
    version: str = "align"
    system: str | None = None
    framework: str = "align"  # align: our mock layers; else a framework adapter's own module (way A)

    def __post_init__(self) -> None:
        """Refuse settings that time nothing or write outside the output folder."""
        if self.runs < 1 or self.warmups < 0:
            raise AlignError(f"{arg('runs', str(self.runs))} / {arg('warmups', str(self.warmups))}: nothing would be timed",
                             f"pass {arg('runs')} 1 or more and {arg('warmups')} 0 or more")
        for name, value in (("backend", self.backend), ("version", self.version), ("system", self.system)):
            if value is not None and (not _FOLDER.match(value) or value in (".", "..")):
                raise AlignError(f"{arg(name, repr(value))} is not a folder name",
                                 f"use letters, digits, '.', '_' and '-': it names one folder inside {arg('out')}")


@dataclass
class Summary:
    out: Path
    done: int = 0
    failed: int = 0
    skipped: list = field(default_factory=list)
    already_done: int = 0
    tables: dict = field(default_factory=dict)
    repaired: list = field(default_factory=list)
    gate: str | None = None  # the verdict obeyed (or overridden), in one line


def mock_matcher(patterns: list[str]):
    """A test of a verdict record: its mock ran a command one of ``patterns`` matches, and planted
    no fault on purpose (None without patterns: any record)."""
    import re

    if not patterns:
        return None
    rx = [re.compile(p) for p in patterns]

    def match(rec: dict) -> bool:
        pair = rec.get("pair") or {}
        cmd = pair.get("mock_command")
        if not cmd or pair.get("mock_planted"):
            return False
        line = " ".join(map(str, cmd)) if isinstance(cmd, list) else str(cmd)
        return any(r.search(line) for r in rx)

    return match


def gate(op: str, store=None, forced: bool = False, framework: str | None = None) -> str | None:
    """The verdict-before-collect gate of seed 001: an op is collected only once the newest recorded
    verdict of the mock the collector times (``[ops.<op>.mocks]`` of collect.toml) passed; a verdict
    of another mock (a fault tried on purpose) neither closes nor opens it. ``forced`` overrides it,
    and the metadata says so. Returns the line saying which verdict was obeyed, None for an op without
    a gate; raises when the gate is closed."""
    from align.store import Store

    spec = op_spec(op)
    if not spec.gated:
        return None
    spec = spec.for_framework(framework)
    store = store or Store()
    patterns = spec.mock_patterns
    rec = store.newest_verdict(op, mock_matcher(patterns))
    which = f"the mock it times ({' | '.join(patterns)})" if patterns else "any mock"
    if (rec is None or not rec.get("passed")) and not forced:
        if rec is None:
            other = store.newest_verdict(op)
            why = f"no verdict of {which} recorded" + (
                f" (the newest, {other.get('file')}, is of another mock)" if other is not None else "")
        else:
            why = f"the newest verdict of {which} ({rec.get('file')}) failed"
        raise AlignError(f"refusing to collect {op}: {why} in {store.root}",
                         f"run align verdict --op {op} on that mock until it passes, or pass {arg('forced', 'True')} "
                         "(recorded in the metadata)")
    if rec is None:
        return f"gate: overriding (forced): no verdict of {which} recorded for {op}"
    pair = rec.get("pair") or {"mock": rec.get("mock"), "e2e": rec.get("e2e")}
    return (f"gate: {'obeying' if rec.get('passed') else 'overriding (forced)'} the verdict {rec['file']} "
            f"({'PASS' if rec.get('passed') else 'FAIL'}, mock {pair.get('mock')} vs E2E {pair.get('e2e')})")


def system_name(gpu: str | None) -> str:
    """aiconfigurator's system folder for a GPU name (h200_sxm, h100_sxm, ...); 'cpu' without one."""
    if not gpu:
        return "cpu"
    g = gpu.lower()
    for key, name in (("h200", "h200_sxm"), ("h100", "h100_sxm"), ("b200", "b200_sxm"), ("gb200", "gb200_sxm"),
                      ("a100", "a100_sxm"), ("l40s", "l40s")):
        if key in g:
            return name
    return g.replace("nvidia ", "").replace(" ", "_")


def table_dir(out: Path, spec: OpSpec, settings: Settings) -> Path:
    return Path(out) / settings.system / spec.family / (settings.backend or spec.implementation) / settings.version


def spec_of(op: str, settings: "Settings") -> OpSpec:
    """The op as collected with these settings: its own builder, or the framework's (``--framework``)."""
    return op_spec(op).for_framework(settings.framework)


def _case_key(module, case: Case) -> tuple:
    return tuple(str(v) for v in module.describe(case.phase, *case.args).values())


def _row_keys(df: pd.DataFrame, fields: list[str]) -> list[tuple]:
    if df.empty:
        return []
    return [tuple(r) for r in df[fields].itertuples(index=False)]


def _die_with_parent() -> int:
    """Ask Linux to kill this process when its parent dies (a ``kill -9`` of the collector must not
    leave workers writing rows); returns the parent's pid, checked again before each row elsewhere."""
    parent = os.getppid()
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
    return parent


def _worker(index: int, device: str, op: str, settings: dict, tasks, results, out: str) -> None:
    """Runs in its own process: build, benchmark and write each case it pulls."""
    parent = _die_with_parent()
    s = Settings(**settings)
    spec = spec_of(op, s)
    module = spec.module()
    delay = float(os.environ.get("ALIGN_COLLECT_CASE_DELAY", "0"))  # tests: make kill-and-resume reproducible
    dtype, gpu = use_device(device, s.dtype)
    while True:
        item = tasks.get()
        if item is None:
            return
        case = Case(*item)
        results.put(("start", index, case.id, None))
        try:
            if delay:
                time.sleep(delay)
            path = table_dir(Path(out), spec, s) / spec.phases[case.phase].perf_file

            def still_wanted() -> None:
                if os.getppid() != parent:  # orphaned: the collector is gone, a resume will run this case
                    os._exit(1)

            try:
                # the same path as the module --export-module writes for aiconfigurator's collect.py
                res = run_case(spec, module, case.phase, case.args, path, device=device, dtype=dtype, gpu=gpu,
                               warmups=s.warmups, runs=s.runs, use_graph=s.use_graph, measure_power=s.measure_power,
                               version=s.version, before_write=still_wanted,
                               record=lambda r, cid=case.id: log_case(Path(out), cid, r.to_dict()))
            except RowNotWritten as exc:  # the folder, not the case: never recorded as the case's failure
                results.put(("unwritten", index, case.id, {"error": str(exc)}))
                continue
            results.put(("done", index, case.id, res.to_dict()))
        except Exception as exc:  # recorded, the run goes on
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except ImportError:
                pass
            results.put(("failed", index, case.id, {"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:500],
                                                    "traceback": traceback.format_exc()[-4000:]}))


class CollectorLock:
    """One collector per output folder: ``.align/collector.lock`` names its process (align.pidlock);
    a lock whose process is gone is taken over, since its workers died with it."""

    def __init__(self, out: Path):
        self.path = Path(out) / STATE / "collector.lock"

    def __enter__(self):
        try:
            pidlock.acquire(self.path)
        except pidlock.LockBusy as busy:
            raise AlignError(f"{self.path.parent.parent} is being collected by {busy.who()}",
                             f"wait for it to finish (it writes every case once), or use another {arg('out')}") from None
        except OSError as exc:
            raise AlignError(f"cannot write in {self.path.parent}: {exc.strerror or exc}",
                             f"pass as {arg('out')} a folder you can write") from None
        return self

    def __exit__(self, *exc) -> None:
        pidlock.release(self.path)


class Checkpoint:
    """Failures and run metadata (the rows themselves are the record of what is done)."""

    def __init__(self, out: Path):
        self.path = Path(out) / STATE / "checkpoint.json"
        self.data = {"failed": {}, "runs": []}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text())
            except (ValueError, UnicodeDecodeError) as exc:
                raise AlignError(f"{self.path} is not a checkpoint align wrote ({exc})", self.FIX) from None
            if not (isinstance(data, dict) and isinstance(data.get("failed", {}), dict)
                    and isinstance(data.get("runs", []), list)):
                raise AlignError(f"{self.path} is not a checkpoint align wrote (wrong shape)", self.FIX)
            self.data = {"failed": {}, "runs": [], **data}

    FIX = "move it away to resume without its failure history (the perf files keep the rows)"

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text(self.path, json.dumps(self.data, indent=1, default=str), "the checkpoint")


def _devices(gpus: int | None) -> list[str]:
    if gpus is not None and gpus < 1:
        raise AlignError(f"{arg('gpus', str(gpus))}: no worker would run", f"pass {arg('gpus')} 1 or more, or leave it out")
    try:
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        n = 0
    if n == 0:
        return ["cpu"]
    if gpus is not None and gpus > n:
        raise AlignError(f"{arg('gpus', str(gpus))} but only {n} GPU(s) visible", f"lower {arg('gpus')} or set CUDA_VISIBLE_DEVICES")
    return [f"cuda:{i}" for i in range(gpus or n)]


def _gpu_memory() -> tuple[str | None, int | None]:
    try:
        import torch

        if torch.cuda.is_available():
            free, _ = torch.cuda.mem_get_info(0)
            return torch.cuda.get_device_name(0), int(free * 0.9)
    except ImportError:
        pass
    return None, None


def plan(op: str, phases: list[str], subset: dict | None, out: Path, settings: Settings,
         repaired: list[str] | None = None) -> tuple[OpSpec, list[Case], list, dict]:
    """Cases to run, skipped cases, and the done keys already in the files (made unique, each repair
    said in ``repaired``)."""
    repaired = [] if repaired is None else repaired
    spec = spec_of(op, settings)
    check_subset(spec, phases, subset)
    module = spec.module()
    gpu, free = _gpu_memory()
    settings.system = settings.system or system_name(gpu)
    estimate = getattr(module, "estimate", None)
    cases, skipped, done = [], [], {}
    for phase in phases:
        if phase not in spec.phases:
            raise AlignError(f"op {op} has no {phase} phase", f"phases: {', '.join(spec.phases)}")
        ps = spec.phases[phase]
        try:
            for case in grid(ps, None, None, subset)[0]:
                module.describe(phase, *case.args)
            run, skip = grid(ps, free, estimate, subset)
        except ValueError as exc:
            raise AlignError(f"{op} {phase}: {exc}", f"choose {arg('subset')} values the op accepts (see align/data/collect.toml)") \
                from None
        path = table_dir(out, spec, settings) / ps.perf_file
        writers.repair(path)
        rows = writers.read_rows(path)
        parquet = path.with_suffix(".parquet")
        if parquet.exists():
            writers.read_parquet(parquet)  # damaged: said now, before any case runs
        fields = list(module.describe(phase, *run[0].args)) if run else []
        lacking = [f for f in fields if f not in rows.columns] if not rows.empty else []
        if lacking:
            raise AlignError(f"line 1 of {path} lacks column(s) {', '.join(lacking)} of {op} {phase}",
                             writers.FIX_LINE)
        if fields and len(rows.columns):  # a hand-edited header: said now, not after the first case is timed
            items = dict.fromkeys([*fields, "latency"])
            expected = [writers.header_for(items, power) for power in ((True, False) if settings.measure_power
                                                                       else (False,))]
            writers.check_header(path, list(rows.columns), expected)
        present = _row_keys(rows, fields) if fields and not rows.empty else []
        if len(present) != len(set(present)):  # a case written twice (a collector run twice at once, say)
            removed = writers.dedupe(path, fields)
            repaired.append(f"{path}: {removed} duplicate row(s) removed, the last of each kept")
        done[phase] = set(present)
        cases += run
        skipped += skip
    return spec, cases, skipped, done


def collect(op: str, phases: list[str] | None = None, gpus: int | None = None, out: Path = Path("collect"),
            resume: bool = False, subset: dict | None = None, settings: Settings | None = None,
            retry_failed: bool = False, forced: bool = False, progress: bool = True, store=None,
            gated: bool = True, say=None, scheduler: str | None = None) -> Summary:
    """Collect ``op`` over its grid into ``out``; see the module docstring for the guarantees.
    ``gated`` applies :func:`gate` (the op's newest verdict in ``store`` must pass, unless
    ``forced``); ``gated=False`` skips it (a test of the machinery, say) and records nothing forced.
    ``say(line)`` hears the gate's line before the first case runs. ``scheduler`` (or
    ``$ALIGN_SCHEDULER``): a Dask scheduler whose GPU workers run the cases (align.scale.collect)
    instead of one local process per GPU."""
    from align.scale.cluster import scheduler_address

    settings = settings or Settings()
    out = Path(out)
    spec0 = spec_of(op, settings)
    phases = phases or list(spec0.phases)
    check_subset(spec0, phases, subset)  # bad input before the gate
    address = scheduler_address(scheduler)
    if address is not None and gpus is not None:
        raise AlignError(f"{arg('gpus', str(gpus))} is for local workers; a Dask cluster runs a case per GPU worker",
                         f"leave out {arg('gpus')}, or {arg('scheduler')} for one host")
    obeyed = gate(op, store, forced, settings.framework) if gated else None
    if obeyed and say is not None:
        say(obeyed)
    devices = _devices(gpus) if address is None else []  # before anything is written; Dask's workers are its own
    if settings.measure_power and devices:
        from align.collect.benchmark import power_problem

        problem = power_problem(devices[0])
        if problem:
            raise AlignError(f"{arg('power', 'True')} samples board power, but {problem}",
                             f"leave out {arg('power', 'True')}, or collect on a GPU machine with nvidia-ml-py")
    with CollectorLock(out):
        summary = _collect(op, phases, devices, out, resume, subset, settings, retry_failed,
                           forced and gated and spec0.gated, progress, address)
    summary.gate = obeyed
    return summary


def _collect(op, phases, devices, out, resume, subset, settings, retry_failed, forced, progress,
             address: str | None = None) -> Summary:
    repaired: list[str] = []
    spec, cases, skipped, done_keys = plan(op, phases, subset, out, settings, repaired)
    module = spec.module()
    existing = sum(len(v) for v in done_keys.values())
    if existing and not resume:
        raise AlignError(f"{out} already holds {existing} collected rows of {op}",
                         f"pass {arg('resume', 'True')} to continue it, or another {arg('out')}")
    ck = Checkpoint(out)
    if existing:
        same_timing(out, op, ck, settings)
    todo = []
    already = 0
    for c in cases:
        if _case_key(module, c) in done_keys[c.phase]:
            already += 1
        elif c.id in ck.data["failed"] and not retry_failed:
            continue
        else:
            todo.append(c)
    ck.data["runs"].append({"started": writers.now_utc(), "op": op, "phases": phases, "cases": len(cases),
                            "todo": len(todo), "forced": forced, "subset": subset or None,
                            "settings": settings.__dict__, "case_log": CASES_LOG})
    ck.data["skipped"] = {c.id: why for c, why in skipped}
    ck.save()
    summary = Summary(out=out, skipped=skipped, already_done=already, repaired=repaired)
    from align.capture.launch import terminate_as_interrupt

    with terminate_as_interrupt() as stop:
        try:
            if todo and address is not None:
                from align.scale.collect import run_on_dask

                run_on_dask(op, todo, address, out, settings, ck, summary, progress, spec, done_keys)
            elif todo:
                _run(op, todo, devices, out, settings, ck, summary, progress)
        except KeyboardInterrupt:
            written = _written(out, spec, settings, module, todo)
            raise interrupted(out, ck, written, len(todo), stop["signal"] or "Ctrl-C") from None
    summary.tables = finalize(out, spec, settings, cases, forced)
    return summary


TIMING = ("runs", "warmups", "use_graph", "measure_power", "dtype")
_TABLE = ("framework", "backend", "version", "system")


def same_timing(out: Path, op: str, ck: "Checkpoint", settings: Settings) -> None:
    """Refuse to resume a table with other timing settings than the newest run that collected it:
    its rows would be measured two ways in one table, none of them said in the rows."""
    for run in reversed(ck.data.get("runs", [])):
        rec = run.get("settings") or {}
        if run.get("op") != op or not all(k in rec for k in TIMING) or \
                any(rec.get(k) != getattr(settings, k) for k in _TABLE):
            continue
        now = dataclasses.asdict(settings)
        differ = [k for k in TIMING if rec[k] != now[k]]
        if differ:
            raise AlignError(f"{out} was collected with {_timing_words(rec, differ)}, this run asks "
                             f"{_timing_words(now, differ)}",
                             f"resume with the same settings, or collect into a new {arg('out')}")
        return


def _timing_words(s: dict, differ: list[str]) -> str:
    """The timing settings of a run, as the options that set them (runs and warm-ups always)."""
    words = [arg("runs", str(s["runs"])), arg("warmups", str(s["warmups"]))]
    if "use_graph" in differ:
        words.append("CUDA graphs" if s["use_graph"] else arg("eager", "True"))
    if "measure_power" in differ:
        words.append(arg("power", "True") if s["measure_power"] else "no power sampling")
    if "dtype" in differ:
        words.append(f"dtype {s['dtype']}")
    return " ".join(words)


def interrupted(out: Path, ck: Checkpoint, written: int, todo: int, how: str) -> Interrupted:
    """The one line of a collection stopped by Ctrl-C or SIGTERM: the rows written stay, the cases
    not finished are recorded as nothing (neither done nor failed), so a resume runs them."""
    ck.data["runs"][-1]["interrupted"] = how
    ck.save()
    return Interrupted(f"interrupted ({how}) after {written} of {todo} case(s): their rows are kept in {out}",
                       f"run it again with {arg('resume', 'True')} for the rest")


def _written(out: Path, spec: OpSpec, settings: Settings, module, todo: list[Case]) -> int:
    """How many of ``todo`` have their row in the perf files now (the files are the record: a worker
    stopped after writing its row had no time to say so)."""
    keys: dict[str, set] = {}
    for phase in {c.phase for c in todo}:
        rows = writers.read_rows(table_dir(out, spec, settings) / spec.phases[phase].perf_file)
        first = next(c for c in todo if c.phase == phase)
        keys[phase] = set(_row_keys(rows, list(module.describe(phase, *first.args)))) if not rows.empty else set()
    return sum(1 for c in todo if _case_key(module, c) in keys[c.phase])


def _run(op, todo, devices, out, settings, ck, summary, progress) -> None:
    ctx = mp.get_context("spawn")
    tasks, results = ctx.Queue(), ctx.Queue()
    for c in todo:
        tasks.put((c.op, c.phase, c.args))
    for _ in devices:
        tasks.put(None)
    args = dict(settings.__dict__)
    procs = {i: ctx.Process(target=_worker, args=(i, d, op, args, tasks, results, str(out)), daemon=True)
             for i, d in enumerate(devices)}
    for p in procs.values():
        _start_deaf(p)
    try:
        _gather(op, todo, devices, out, ck, summary, progress, ctx, procs, args, tasks, results)
    finally:  # stopped (Ctrl-C, a write that failed): no worker goes on writing rows
        for p in procs.values():
            if p.is_alive():
                p.terminate()
    for p in procs.values():
        p.join(timeout=30)


def _start_deaf(proc) -> None:
    """Start a worker with SIGINT ignored from its first instruction: a terminal's Ctrl-C reaches the
    whole process group, and only the collector answers it (it stops the workers), not one
    KeyboardInterrupt traceback per worker."""
    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        proc.start()
    finally:
        if main:
            signal.signal(signal.SIGINT, old if old is not None else signal.SIG_DFL)


def _gather(op, todo, devices, out, ck, summary, progress, ctx, procs, args, tasks, results) -> None:
    """The collector's side of :func:`_run`: each case's outcome recorded as it comes, a dead worker replaced."""
    inflight: dict[int, str] = {}
    finished = 0
    with progress_bar(progress) as bar:
        task = bar.add_task(f"collect {op} on {len(devices)} device(s)", total=len(todo))
        while finished < len(todo):
            try:
                kind, idx, cid, payload = results.get(timeout=1.0)
            except queue.Empty:
                for i, p in list(procs.items()):
                    if not p.is_alive() and i in inflight:  # died mid-case: record it, replace the worker
                        cid = inflight.pop(i)
                        ck.data["failed"][cid] = {"error": f"worker died (exit code {p.exitcode})"}
                        ck.save()
                        summary.failed += 1
                        finished += 1
                        bar.advance(task)
                        procs[i] = ctx.Process(target=_worker, args=(i, devices[i], op, args, tasks, results, str(out)),
                                               daemon=True)
                        _start_deaf(procs[i])
                continue
            if kind == "start":
                inflight[idx] = cid
                continue
            inflight.pop(idx, None)
            if kind == "unwritten":
                raise WriteFailed(payload["error"], "free space or fix the folder's rights, then --resume: "
                                                    "that case runs again, every row written is kept")
            finished += 1
            bar.advance(task)
            record_outcome(out, ck, summary, cid, kind, payload)


def progress_bar(enabled: bool):
    """The collector's progress bar (cases done of all, elapsed, ETA): rich's Progress, off when not ``enabled``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), disable=not enabled, transient=False)


def log_case(out: Path, cid: str, payload: dict) -> None:
    """How a case was measured (graph or eager, clocks, throttling, power) in ``.align/cases.jsonl``,
    written before its row: every row then has its record, which align collect --check holds it to.
    A record whose row never came (a kill, a full disk) is a case not done: it runs again."""
    log = Path(out) / STATE / CASES_LOG
    try:
        writers.append_jsonl(log, {"case": cid, "time": writers.now_utc(), **payload})
    except OSError as exc:
        raise RowNotWritten(f"cannot write {log}: {exc.strerror or exc}") from None


def record_outcome(out: Path, ck: Checkpoint, summary: Summary, cid: str, kind: str, payload: dict) -> None:
    """A finished case in the checkpoint: ``done`` (its record and row written, :func:`log_case`)
    clears an earlier failure, ``failed`` is kept with its error."""
    if kind == "done":
        summary.done += 1
        ck.data["failed"].pop(cid, None)
    else:
        summary.failed += 1
        ck.data["failed"][cid] = payload
    ck.save()


def finalize(out: Path, spec: OpSpec, settings: Settings, cases: list[Case], forced: bool) -> dict:
    """Parquet tables and collection_meta.yaml next to the perf txt files."""
    folder = table_dir(out, spec, settings)
    folder.mkdir(parents=True, exist_ok=True)
    plan_hash = hashlib.sha256("\n".join(sorted(c.id for c in cases)).encode()).hexdigest()[:16]
    module = spec.module()
    module_file = Path(module.__file__)
    collector_hash = hashlib.sha256(module_file.read_bytes()).hexdigest()[:16]
    tables = {}
    failed = Checkpoint(out).data["failed"]
    for phase, ps in spec.phases.items():
        txt = folder / ps.perf_file
        if not txt.exists():
            continue
        pq = folder / ps.perf_file.replace(".txt", ".parquet")
        rows = writers.finalize(txt, pq)
        phase_failed = sum(1 for cid in failed if cid.startswith(f"{spec.name}:{phase}:"))
        tables[pq.stem] = {"collector_ref": f"align {__import__('align').__version__} {spec.builder}",
                           "collector_hash": collector_hash, "case_plan_hash": plan_hash,
                           "collected_at": writers.now_utc(), "rows": rows,
                           "status": "complete" if phase_failed == 0 else "partial", "failed": phase_failed}
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    meta = {"schema_version": 1,
            "runtime": {"framework": framework_label(spec, module),
                        "version": settings.version, "image": f"torch {torch_version}"},
            "backend_folder": {"name": settings.backend or spec.implementation,
                               "chosen_by": "--backend" if settings.backend else "default: the implementation timed",
                               "timed": spec.implementation},
            "collector": {"tool": "align collect", "op": spec.name, "forced_without_passing_verdict": forced,
                          "timing": "median of CUDA-event-timed runs of one CUDA graph, queued back to back (eager fallback recorded)"},
            "tables": tables}
    writers.write_meta(folder, meta)
    return tables


def verify(out: Path, op: str, k: int, settings: Settings | None = None, seed: int = 0) -> pd.DataFrame:
    """Re-run ``k`` random finished cases; deviation of each from its stored latency (seed: < 2 %),
    and a ``verdict`` per case (:func:`rerun_verdict`): a case off by the limit is measured once more.

    The cases are timed as the newest collection run in ``out`` timed them (warm-ups, runs, graph,
    the power run's minimum duration, dtype): a different timing would measure the timing, not the
    op. ``settings`` fill in what no collection recorded (and name the table folder)."""
    if k < 1:
        raise AlignError(f"{arg('verify', str(k))}: no case would be re-run", f"pass {arg('verify')} 1 or more")
    with CollectorLock(out):
        return _verify(out, op, k, settings, seed)


def verify_limit_pct() -> float:
    """The seed's 2 %, from align/data/collect.toml [check]."""
    from align import datafiles

    return float(datafiles.builtin("collect").get("check", {}).get("verify_limit_pct", 2.0))


def rerun_verdict(first_pct: float, second_pct: float | None, limit: float) -> str:
    """ok: within the limit; noise: off once, within it when measured again; drift: off twice."""
    if abs(first_pct) < limit:
        return "ok"
    return "noise" if second_pct is not None and abs(second_pct) < limit else "drift"


def as_collected(settings: Settings | None, recorded: dict, timing: bool = False) -> Settings:
    """``settings`` with what a collection recorded filled in: the table folder's names (backend,
    version, system, framework) where ``settings`` leaves them at their defaults, and with
    ``timing`` the timing itself (a re-run must time as the collection did)."""
    settings = dataclasses.replace(settings or Settings())
    if timing:
        for name in ("warmups", "runs", "use_graph", "measure_power", "dtype"):
            if name in recorded:
                setattr(settings, name, recorded[name])
    for name in ("backend", "version", "system", "framework"):
        if recorded.get(name) and getattr(settings, name) in (None, getattr(Settings, name, None)):
            setattr(settings, name, recorded[name])
    return settings


def _verify(out: Path, op: str, k: int, settings: Settings | None, seed: int) -> pd.DataFrame:
    runs_done = Checkpoint(out).data.get("runs", [])
    settings = as_collected(settings, runs_done[-1].get("settings", {}) if runs_done else {}, timing=True)
    spec = spec_of(op, settings)
    module = spec.module()
    gpu, _ = _gpu_memory()
    settings.system = settings.system or system_name(gpu)
    device = _devices(1)[0]
    rows = []
    try:
        import torch

        dtype = getattr(torch, settings.dtype)
    except ImportError:
        dtype = None
    for phase, ps in spec.phases.items():
        path = table_dir(out, spec, settings) / ps.perf_file
        df = writers.read_rows(path)
        if df.empty:
            continue
        run, _ = grid(ps)
        by_key = {_case_key(module, c): c for c in run}
        fields = list(module.describe(phase, *run[0].args))
        for key, lat in zip(_row_keys(df, fields), df["latency"]):
            if key in by_key:
                rows.append((by_key[key], float(lat)))
    if not rows:
        raise AlignError(f"no collected rows of {op} under {out}", "run align collect first")
    picked = random.Random(seed).sample(rows, min(k, len(rows)))
    limit = verify_limit_pct()
    report = []
    for case, stored in picked:
        call = module.build(case.phase, *case.args, device=device, dtype=dtype)

        def rerun():
            return benchmark(call, device=device, warmups=settings.warmups, runs=settings.runs,
                             use_graph=settings.use_graph, min_duration_s=1.0 if settings.measure_power else 0.0)

        res = rerun()
        first = 100.0 * (res.latency - stored) / stored
        again = rerun() if abs(first) >= limit else None  # noise or drift: measured once more
        second = 100.0 * (again.latency - stored) / stored if again is not None else None
        report.append({"case": case.id, "stored_ms": stored, "rerun_ms": res.latency, "deviation_pct": first,
                       "rerun2_ms": again.latency if again is not None else None, "deviation2_pct": second,
                       "verdict": rerun_verdict(first, second, limit), "runs": res.runs, "graph": res.graph_note,
                       "throttled": res.throttled})
    df = pd.DataFrame(report)
    state = Path(out) / STATE
    state.mkdir(parents=True, exist_ok=True)
    write_text(state / "verify.json", json.dumps(report, indent=1))
    return df
