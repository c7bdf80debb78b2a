"""The collector's bad-input corpus (issue 29, item 6 "collector cases", and item 4's perf-file lock):
each case is one line on stderr, the documented exit code, no traceback, the perf files holding
exactly the cases asked (nothing duplicated or lost), and no leftover files. Refusals come before
any case is timed: the files are byte for byte as they were."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from align.collect import writers
from align.collect.cases import grid, load_ops, op_spec, parse_subset
from align.errors import AlignError

from .conftest import run_align

pytest.importorskip("torch")

KEY = ["num_heads", "batch_size", "isl", "step"]  # a stand-in row's case
BASE = dict(zip(writers.BASE_COLUMNS, ["f", "v", "d", "o", "k"]))


def _collect(out: Path, *args: str, **kw):
    return run_align("collect", "--op", "standin", "--runs", "2", "--warmups", "0", "--out", str(out), "-f", "json",
                     *args, **kw)


def one_line(r, code: int, says: str) -> None:
    assert r.returncode == code, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr and says in r.stderr, r.stderr
    assert len([x for x in r.stderr.splitlines() if x.strip()]) <= 2, r.stderr


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(out: Path) -> list[str]:
    """Temporaries and lock files; the collector's own lock is gone once it exits."""
    return [str(p) for p in out.rglob("*") if p.name.endswith((".tmp", ".lock", ".partial"))]


def perf_rows(out: Path) -> dict[str, list[tuple]]:
    """Each perf file's case keys, as written."""
    return {p.name: [tuple(r) for r in writers.read_rows(p)[KEY].itertuples(index=False)]
            for p in sorted(out.rglob("*_perf.txt"))}


def case_log(out: Path) -> list[dict]:
    path = out / ".align" / "cases.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    """Two generation cases of the stand-in (kv_len 16, batch 1 and 4): a resume has two more to time."""
    out = tmp_path_factory.mktemp("corpus-collect") / "c"
    r = _collect(out, "--phase", "generation", "--cases", "kv_len=16")
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture
def copy(collected, tmp_path):
    out = tmp_path / "c"
    shutil.copytree(collected, out)
    return out


# ---- --cases values ---------------------------------------------------------------------------------
@pytest.mark.parametrize("cases", [["tokens=1,1,1"], ["tokens=1", "tokens=8,1"], ["tokens=01,1"]])
def test_a_value_named_twice_is_refused(tmp_path, cases):
    r = _collect(tmp_path / "c", "--phase", "context", *[x for c in cases for x in ("--cases", c)])
    one_line(r, 2, "--cases names tokens=1 more than once")
    assert not (tmp_path / "c").exists()


def test_the_grid_never_holds_a_case_twice():
    """Library callers (no parse_subset): each value once, so no case is timed or written twice."""
    run, _ = grid(op_spec("standin").phases["context"], subset={"tokens": [1, 1, 1], "batch": [1], "tp": [1]})
    assert [c.args for c in run] == [(1, 1, 1)]


def test_a_field_given_twice_adds_its_values(tmp_path):
    assert parse_subset(["tokens=1", "batch=1", "tokens=8"]) == {"tokens": [1, 8], "batch": [1]}
    out = tmp_path / "c"
    r = _collect(out, "--phase", "context", "--cases", "tokens=1", "--cases", "tokens=8", "--cases", "batch=1",
                 "--cases", "tp=1")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["done"] == 2
    # num_heads, batch_size, isl, step: tokens 1 and 8, each once
    rows = perf_rows(out)
    assert list(rows) == ["standin_context_perf.txt"]
    assert sorted(rows["standin_context_perf.txt"]) == [("8", "1", "1", "0"), ("8", "1", "8", "0")]
    assert len(case_log(out)) == 2 and not leftovers(out)


@pytest.mark.parametrize("op,cases,says", [
    ("standin", "tokens=0", "--cases tokens=0: standin context takes integer tokens values of 1 or more"),
    ("standin", "kv_len=-1", "--cases kv_len=-1: standin generation takes integer kv_len values of 1 or more"),
    ("standin", "batch=0", "--cases batch=0: standin context takes integer batch values of 1 or more"),
    ("standin", "tp=3", "--cases tp=3: standin context takes integer tp values dividing 8 (1, 2, 4, 8;"),
    ("standin", "tp=x", "--cases tp=x: standin context takes integer tp values dividing 8"),
    ("dsa", "tp=3", "--cases tp=3: dsa context takes integer tp values dividing 128"),
    ("mla", "kv_len=0", "--cases kv_len=0: mla generation takes integer kv_len values of 1 or more"),
    ("moe", "ep=3", "--cases ep=3: moe all takes integer ep values dividing 256"),
])
def test_a_value_the_op_cannot_take_is_refused_before_anything(tmp_path, op, cases, says):
    """Checked before the verdict gate and before any case: no --force needed to hear it, nothing written."""
    r = run_align("collect", "--op", op, "--cases", cases, "--out", str(tmp_path / "c"))
    one_line(r, 2, says)
    assert "the grid's" in r.stderr and not (tmp_path / "c").exists()


def test_every_grid_value_is_one_its_op_allows():
    """The allowed ranges of collect.toml are the op's contract: its own grid keeps them."""
    from align.collect.cases import _allowed

    for op in load_ops().values():
        for ps in op.phases.values():
            assert set(ps.allowed) <= set(ps.fields)
            for f, rule in ps.allowed.items():
                assert all(_allowed(v, rule) for v in ps.values[f]), (op.name, ps.phase, f)
            assert "tp" not in ps.fields or "tp" in ps.allowed, (op.name, ps.phase)


def test_a_grid_all_over_the_cap_is_refused(tmp_path):
    r = _collect(tmp_path / "c", "--phase", "context", "--cases", "tokens=32", "--cases", "batch=4")
    one_line(r, 2, "--cases tokens=32 batch=4 leaves standin context no case: all 2 case(s) are over its cap of "
                   "64 tokens (batch x tokens; the smallest asks 128)")
    assert "raise max_tokens of [ops.standin.context] in align/data/collect.toml" in r.stderr
    assert not (tmp_path / "c").exists()
    # both phases asked (no --phase): the empty one is refused too, not skipped while the other runs
    one_line(_collect(tmp_path / "d", "--cases", "tokens=32", "--cases", "batch=4"), 2, "over its cap")
    assert not (tmp_path / "d").exists()


def test_power_where_no_board_power_is_read_is_refused_before_timing(tmp_path):
    """Before: --power on a machine without NVML power readings timed every case and wrote rows
    without power columns, exit 0. After: one line before any case runs, nothing written."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: its power may be readable")
    one_line(_collect(tmp_path / "c", "--power"), 2, "--power samples board power, but the cases run on the CPU")
    assert not (tmp_path / "c").exists()


# ---- resuming -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("args,says", [
    (["--runs", "5"], "was collected with --runs 2 --warmups 0, this run asks --runs 5 --warmups 0"),
    (["--warmups", "3"], "was collected with --runs 2 --warmups 0, this run asks --runs 2 --warmups 3"),
    (["--eager"], "--runs 2 --warmups 0 CUDA graphs, this run asks --runs 2 --warmups 0 --eager"),
])
def test_a_resume_with_other_timing_is_refused(copy, args, says):
    before = snapshot(copy)
    r = run_align("collect", "--op", "standin", "--runs", "2", "--warmups", "0", *args, "--out", str(copy),
                  "--resume")
    one_line(r, 2, says)
    assert "collect into a new --out" in r.stderr and snapshot(copy) == before


def test_a_resume_with_the_same_timing_adds_only_the_missing_cases(copy):
    r = _collect(copy, "--phase", "generation", "--resume")
    assert r.returncode == 0, r.stderr
    assert (json.loads(r.stdout)["done"], json.loads(r.stdout)["already_done"]) == (2, 2)
    rows = perf_rows(copy)["standin_generation_perf.txt"]
    assert len(rows) == len(set(rows)) == 4 and len(case_log(copy)) == 4 and not leftovers(copy)


def _gen_txt(out: Path) -> Path:
    return next(out.rglob("standin_generation_perf.txt"))


def _edit(out: Path, kind: str) -> None:
    path = _gen_txt(out)
    data = path.read_bytes()
    if kind == "crlf":
        data = data.replace(b"\n", b"\r\n")
    elif kind == "bom":
        data = b"\xef\xbb\xbf" + data
    elif kind == "swapped":
        data = data.replace(b"batch_size,isl", b"isl,batch_size", 1)
    elif kind == "misnamed":
        data = data.replace(b"framework,", b"frame,", 1)
    path.write_bytes(data)


@pytest.mark.parametrize("kind,says", [
    ("crlf", "line 1 of {txt} ends in CR LF (Windows line endings; align writes LF)"),
    ("bom", "{txt} starts with a UTF-8 byte-order mark"),
    ("swapped", "line 1 of {txt}: column 10 is 'isl', this collection writes 'batch_size' there"),
    ("misnamed", "line 1 of {txt}: column 1 is 'frame', this collection writes 'framework' there"),
])
def test_a_hand_edited_perf_file_is_refused_before_a_case_is_timed(copy, kind, says):
    _edit(copy, kind)
    before = snapshot(copy)
    r = _collect(copy, "--phase", "generation", "--resume")
    one_line(r, 2, says.format(txt=_gen_txt(copy)))
    assert snapshot(copy) == before  # no case timed: no record, no row, no checkpoint run
    if kind in ("crlf", "bom"):  # every reader of the file says the same
        one_line(run_align("collect", "--op", "standin", "--out", str(copy), "--check"), 2, says.format(txt=_gen_txt(copy)))


# ---- a full disk: the case log and the rows agree -----------------------------------------------------
def test_a_full_disk_keeps_the_rows_and_their_records_in_step(tmp_path):
    out = tmp_path / "c"
    r = _collect(out, "--phase", "generation", file_limit=1024)  # the case log reaches it first (longest lines)
    one_line(r, 2, "cannot write")
    assert "--resume" in r.stderr and not leftovers(out)
    rows = perf_rows(out)
    logged = case_log(out)  # whole lines only: the cut one was truncated away
    assert sum(map(len, rows.values())) == len(logged) >= 1
    r = _collect(out, "--phase", "generation", "--resume")
    assert r.returncode == 0, r.stderr
    rows = [k for v in perf_rows(out).values() for k in v]
    assert len(rows) == len(set(rows)) == 4 and len({x["case"] for x in case_log(out)}) == 4
    r = run_align("collect", "--op", "standin", "--out", str(out), "--check")
    assert r.returncode == 0, r.stderr
    (out / ".align" / "cases.jsonl").write_text("")  # the log emptied while the rows stay
    r = run_align("collect", "--op", "standin", "--out", str(out), "--check", "-f", "json")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    problems = json.loads(r.stdout)["problems"]
    assert any(p.startswith("4 row(s) have no record in") and "--resume" in p for p in problems), problems


# ---- item 4: the perf file's lock is a blocking wait with a timeout -----------------------------------
HOLDER = textwrap.dedent("""
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("locked", flush=True)
    sys.stdin.readline()  # held until told
""")

WAITER = textwrap.dedent("""
    import sys, time
    def polled(*a):
        raise SystemExit("the lock wait polled with time.sleep")
    time.sleep = polled
    from pathlib import Path
    from align.collect import writers
    print("waiting", flush=True)
    writers.append_row(Path(sys.argv[1]), dict(zip(writers.BASE_COLUMNS, "fvdok")), {"case": 1, "latency": 1.0})
    print("written", flush=True)
""")


def _holder(path: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_two_processes_contend_for_a_perf_file(tmp_path):
    """The waiter blocks in flock (it never sleeps to poll) and writes its row once the holder lets go."""
    path = tmp_path / "x_perf.txt"
    holder = _holder(path)
    waiter = subprocess.Popen([sys.executable, "-c", WAITER, str(path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert waiter.stdout.readline().strip() == "waiting"
        assert waiter.poll() is None and path.read_bytes() == b""  # held: nothing written yet
        holder.stdin.write("go\n")
        holder.stdin.flush()
        out, errs = waiter.communicate(timeout=60)
    finally:
        holder.kill()
        waiter.kill()
        holder.wait()
        waiter.wait()
    assert waiter.returncode == 0 and out.strip() == "written", errs
    assert writers.read_rows(path)["case"].tolist() == ["1"] and not leftovers(tmp_path)


def test_a_lock_held_too_long_is_one_line_and_leaves_the_file_unlocked(tmp_path, monkeypatch):
    path = tmp_path / "x_perf.txt"
    writers.append_row(path, BASE, {"case": 0, "latency": 1.0})
    before = path.read_bytes()
    monkeypatch.setattr(writers, "LOCK_WAIT_S", 0.3)
    holder = _holder(path)
    try:
        with pytest.raises(writers.LockTimeout, match=r"could not lock .* for 0.3 s") as info:
            writers.append_row(path, BASE, {"case": 1, "latency": 1.0})
        assert info.value.exit_code == 1 and path.read_bytes() == before
    finally:
        holder.kill()
        holder.wait()
    # the wait that gave up holds nothing: this process and another one each lock the file in turn
    monkeypatch.setattr(writers, "LOCK_WAIT_S", 30.0)
    writers.append_row(path, BASE, {"case": 1, "latency": 1.0})
    other = subprocess.run([sys.executable, "-c", "import fcntl, os, signal, sys; signal.alarm(20); "
                            "fcntl.flock(os.open(sys.argv[1], os.O_RDWR), fcntl.LOCK_EX); print('ok')", str(path)],
                           capture_output=True, text=True, timeout=60)
    assert other.stdout.strip() == "ok", other.stderr
    assert writers.read_rows(path)["case"].tolist() == ["0", "1"]


def test_library_callers_hear_the_same_refusals():
    with pytest.raises(AlignError, match="more than once"):
        parse_subset(["tp=1,1"])
    from align.collect.cases import check_subset

    with pytest.raises(AlignError, match="dividing 8"):
        check_subset(op_spec("standin"), ["context"], {"tp": [3]})
    with pytest.raises(AlignError, match="over its cap"):
        check_subset(op_spec("standin"), ["context"], {"tokens": [64], "batch": [2]})
    check_subset(op_spec("standin"), ["context"], {"tokens": [64], "batch": [1, 2]})  # one case fits: collected
