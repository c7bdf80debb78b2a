"""Bad input is one line on stderr and exit 2: never a traceback, never a silent wrong answer, never a
file written outside where it belongs (issue 13). Each case is a CLI run as a user types it."""

from __future__ import annotations

import pytest

from .conftest import ROOT, run_align
from .corpus import DAMAGES, damaged

EX = ROOT / "profiles/examples"
PAIR = ["--op", "attention", "--mock", str(EX / "hf_llama_mock"), "--e2e", str(EX / "hf_llama_e2e")]


def one_line_exit_2(r, says: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr and says in r.stderr, r.stderr
    assert len([x for x in r.stderr.splitlines() if x.strip()]) <= 4  # click's usage lines at most


OPS_FILES = {
    "nvtx-string": ('[[ops]]\nname = "attention"\nnvtx = "self_attn"\n', "is not a list of strings"),
    "kernels-string": ('[[ops]]\nname = "x"\n[ops.kernels]\npytorch = "gemm"\n', "is not a list of strings"),
    "op-path": ('[[ops]]\nname = "../../escape"\nnvtx = ["x"]\n', "no usable name"),
    "op-nameless": ('[[ops]]\nnvtx = ["x"]\n', "no usable name"),
    "families": ('[[families]]\nmatch = "x"\n', "lacks family"),
    "phases": ('[phases]\ncontext = 3\n', "is not a regex string"),
    "bad-regex": ('[[ops]]\nname = "x"\nnvtx = ["("]\n', "bad regex"),
}


@pytest.mark.parametrize("case", sorted(OPS_FILES))
def test_ops_file_values_are_checked(tmp_path, case):
    text, says = OPS_FILES[case]
    f = tmp_path / "ops.toml"
    f.write_text(text)
    one_line_exit_2(run_align("verdict", *PAIR, "--ops-file", str(f), "--store", str(tmp_path / "s")), says)
    assert not (tmp_path / "s").exists() and not (ROOT.parent / "escape").exists()


CONFIGS = {
    "latency-negative": ("[verdict]\nlatency_ratio = -1\n", "out of range"),
    "share-above-one": ("[verdict]\nnames_share = 2\n", "out of range"),
    "tolerance-negative": ("[diff]\ncount_tolerance = -1\n", "out of range"),
    "not-a-number": ('[verdict]\nlatency_ratio = "2"\n', "is not a number"),
    "boolean": ("[verdict]\nextra_share = true\n", "is not a number"),
    "pairing-overlap": ("[pairing]\nmin_family_overlap = 1.5\n", "out of range"),
    "candidates-float": ("[pairing]\nmax_candidates = 2.5\n", "is not a whole number"),
    "range-regex": ('[mock]\nrange = "("\n', "is not a regex"),
    "e2e-not-string": ("[e2e]\ndsa = 3\n", "is not a regex string"),
}


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_thresholds_are_checked(tmp_path, case):
    text, says = CONFIGS[case]
    f = tmp_path / "v.toml"
    f.write_text(text)
    one_line_exit_2(run_align("verdict", *PAIR, "--config", str(f)), says)


@pytest.mark.parametrize("args,says", [
    (["--runs", "0"], "nothing would be timed"),
    (["--warmups", "-1"], "nothing would be timed"),
    (["--version-label", "../../escape"], "is not a folder name"),
    (["--system", "/abs"], "is not a folder name"),
    (["--backend", ".."], "is not a folder name"),
    (["--gpus", "0"], "no worker would run"),
    (["--verify", "-1"], "no case would be re-run"),
])
def test_collect_refuses_what_times_nothing_or_writes_elsewhere(tmp_path, args, says):
    out = tmp_path / "out"
    one_line_exit_2(run_align("collect", "--op", "standin", "--out", str(out), *args), says)
    assert not (tmp_path / "escape").exists() and not out.exists()


@pytest.mark.parametrize("args,says", [
    (["--delay", "-1"], "--delay -1 is negative"),
    (["--duration", "0"], "collects nothing"),
])
def test_profile_window_is_checked(tmp_path, args, says):
    one_line_exit_2(run_align("profile", "e2e", "--name", "x", "--store", str(tmp_path), *args, "--", "true"), says)
    assert not (tmp_path / "x").exists()


def test_bare_align_shows_its_help():
    r = run_align()
    assert r.returncode == 2 and "Usage:" in r.stderr and "verdict" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("args,says", [
    (["kernels"], "Missing argument"),
    (["kernelz", "x"], "No such command"),
    (["kernels", str(EX / "attn_mock"), "--limt", "3"], "No such option"),
    (["kernels", str(EX / "attn_mock"), "--format", "bogus"], "Invalid value"),
    (["kernels", str(EX / "hf_dsa_e2e_procs"), "--pid", "abc"], "Invalid value"),
    (["verdict", *PAIR, "--format", "csv"], "Invalid value"),  # only table, json and md are offered
])
def test_command_line_mistakes(args, says):
    r = run_align(*args)
    one_line_exit_2(r, says)


def test_a_verdict_of_ranges_is_recorded_inside_the_store(tmp_path):
    """Without --op the record folder is not made from the range regex (which may hold '/')."""
    store = tmp_path / "s"
    r = run_align("verdict", "--mock", str(EX / "hf_llama_mock"), "--e2e", str(EX / "hf_llama_e2e"),
                  "--e2e-range", r"layers/../../\d+\.self_attn$", "--store", str(store))
    assert r.returncode in (1, 2) and "Traceback" not in r.stderr
    written = [p for p in tmp_path.rglob("*.json")]
    assert all(store in p.parents for p in written)


@pytest.mark.parametrize("kind", sorted(DAMAGES))
@pytest.mark.parametrize("command", ["kernels", "nvtx", "ops", "diff", "verdict"])
def test_a_damaged_export_is_named_in_one_line(tmp_path, kind, command):
    bad = damaged(EX / "attn_mock" / "report.sqlite", kind, tmp_path)
    size = bad.stat().st_size
    args = {"kernels": ["kernels", str(bad), "-f", "csv"], "nvtx": ["nvtx", str(bad), "-f", "csv"],
            "ops": ["ops", str(bad), "-f", "csv"],
            "diff": ["diff", str(bad), str(EX / "llama_e2e"), "--op", "attention"],
            "verdict": ["verdict", "--op", "attention", "--mock", str(bad), "--e2e", str(EX / "llama_e2e"),
                        "--store", str(tmp_path / "s")]}[command]
    r = run_align(*args)
    assert bad.stat().st_size == size  # read, never written
    if r.returncode == 0:
        # the command never touched the damage (a report that reads no name by id, a page it skips):
        # then its answer is the one of the intact file
        intact = run_align(*[str(EX / "attn_mock" / "report.sqlite") if a == str(bad) else a for a in args])
        assert r.stdout.replace(str(bad), "X") == intact.stdout.replace(str(EX / "attn_mock" / "report.sqlite"), "X")
        assert kind in ("dangling-string-id", "overwritten-pages"), (kind, command)
        return
    one_line_exit_2(r, str(bad))


def test_a_locked_export_says_so(tmp_path):
    import sqlite3
    import shutil as sh

    db = tmp_path / "locked.sqlite"
    sh.copy(EX / "attn_mock" / "report.sqlite", db)
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("BEGIN EXCLUSIVE")
    try:
        one_line_exit_2(run_align("kernels", str(db)), "locked by another program")
    finally:
        con.close()


def test_a_fifo_is_refused_not_read(tmp_path):
    import os

    fifo = tmp_path / "report.sqlite"
    os.mkfifo(fifo)
    for cmd in (["kernels", str(fifo)], ["info", str(fifo)], ["diff", str(fifo), str(EX / "llama_e2e")]):
        one_line_exit_2(run_align(*cmd), "is not a regular file")


@pytest.mark.parametrize("flag,says", [
    ("--config", "cannot read config"),
    ("--ops-file", "cannot read ops file"),
    ("--phase-map", "cannot read phase map"),
    ("--bench", "cannot read benchmark result"),
])
def test_a_binary_file_where_text_belongs(tmp_path, flag, says):
    f = tmp_path / "binary"
    f.write_bytes(b"\xff\xfe\x00garbage")
    one_line_exit_2(run_align("verdict", *PAIR, flag, str(f), "--store", str(tmp_path / "s")), says)


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_a_threshold_that_would_turn_a_check_off_is_refused(tmp_path, value):
    """latency_ratio = inf or names_share = nan once gave a recorded PASS that unlocked collect (issue 29)."""
    for key in ("latency_ratio", "names_share"):
        cfg = tmp_path / f"{key}.toml"
        cfg.write_text(f"[verdict]\n{key} = {value}\n")
        r = run_align("verdict", str(EX / "hf_llama_mock_fp32"), str(EX / "hf_llama_e2e"), "--op", "attention",
                      "--config", str(cfg), "--store", str(tmp_path / "store"))
        assert r.returncode == 2 and f"{key} = " in r.stderr and "not a finite number" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and not (tmp_path / "store").exists()


def test_a_packed_trace_is_refused_with_the_command_that_unpacks_it(tmp_path):
    """profiles/examples/trace_hf keeps its shards in topk_trace.tar.gz: once read as 0 records, exit 0
    (issue 29 item 3); now one line with the unpack command, and the unpacked folder reads whole."""
    import json
    import tarfile

    base = EX / "trace_hf"
    r = run_align("trace", "topk", "summary", str(base))
    assert r.returncode == 2 and "packed in topk_trace.tar.gz" in r.stderr and "tar xzf" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    with tarfile.open(base / "topk_trace.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    r = run_align("trace", "topk", "summary", str(tmp_path / "topk"), "--table", "overall", "-f", "json")
    assert r.returncode == 0, r.stderr
    expected = json.loads((tmp_path / "topk" / "summary.json").read_text())["stats"]["records"]
    assert expected > 0 and json.loads(r.stdout)["overall"][0]["records"] == expected
    # one table as CSV is that table's own columns (it once led with a column named `table`)
    r = run_align("trace", "topk", "summary", str(tmp_path / "topk"), "--table", "requests", "-f", "csv")
    assert r.returncode == 0 and not r.stdout.startswith("table,")
    # shards gone but counted by summary.json: refused, never a silent zero
    for shard in (tmp_path / "topk").glob("topk_shard_*.jsonl"):
        shard.unlink()
    r = run_align("trace", "topk", "summary", str(tmp_path / "topk"))
    assert r.returncode == 2 and f"counts {expected:,} records" in r.stderr


@pytest.mark.parametrize("blocked, args, extra", [
    ("distributed", ["kernels", "{EX}/attn_mock", "{EX}/llama_e2e"], "dask"),
    ("torch", ["trace", "topk", "run", "--config", "small", "--out", "{TMP}/t"], "mock"),
])
def test_a_missing_extra_is_one_line_naming_it(tmp_path, blocked, args, extra):
    """A plain install (no extras): the command that needs one says which to install (issue 29 item 1).
    The module is hidden from the child process by a meta-path finder in a sitecustomize."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in ({blocked!r}, 'dask'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Hide())\n")
    import os

    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    full = [a.replace("{EX}", str(EX)).replace("{TMP}", str(tmp_path)) for a in args]
    r = run_align(*full, env=env)
    assert r.returncode == 2, r.stderr
    assert f"pip install 'align[{extra}]'" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
