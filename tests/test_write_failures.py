"""Write failures and damaged user files (issue 13, item 8): one line, exit 2, nothing half-written,
nothing that was there lost. A full disk is RLIMIT_FSIZE (writes past it fail with EFBIG, as
ENOSPC would); a read-only folder is a folder the running user may not write (immutable for root,
who ignores permission bits)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from .conftest import ROOT, run_align
from .test_bad_input import one_line_exit_2

EX = ROOT / "profiles/examples"
PAIR = [str(EX / "hf_llama_mock"), str(EX / "hf_llama_e2e"), "--op", "attention"]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes: what must be the same after a failed command."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def readonly(tmp_path):
    """A folder nobody may write: immutable (``chattr +i``) for root, which ignores permission bits,
    mode 555 for anyone else."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0:
        r = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.fail(f"chattr +i (needed as root to make a read-only folder) failed: {r.stderr.strip()}")
        yield folder
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        os.chmod(folder, 0o555)
        yield folder
        os.chmod(folder, 0o755)


@pytest.mark.parametrize("target,says", [
    ("missing/r.html", "does not exist"),
    (".", "is a folder"),
])
def test_report_output_that_cannot_be_a_file(tmp_path, target, says):
    r = run_align("report", *PAIR, "-o", str(tmp_path / target))
    one_line_exit_2(r, says)
    assert snapshot(tmp_path) == {}


def test_report_into_a_read_only_folder(readonly):
    folder = readonly
    r = run_align("report", *PAIR, "-o", str(folder / "r.html"))
    one_line_exit_2(r, "cannot write in")
    assert list(folder.iterdir()) == []


def test_report_on_a_full_disk_leaves_the_old_file_whole(tmp_path):
    old = tmp_path / "r.html"
    old.write_text("the previous report\n")
    r = run_align("report", *PAIR, "-o", str(old), file_limit=4096)
    one_line_exit_2(r, "cannot write the report")
    assert "nothing was half-written" in r.stderr
    assert snapshot(tmp_path) == {"r.html": b"the previous report\n"}  # no temporary left beside it


def test_export_and_module_trace_outputs_are_checked_first(tmp_path):
    shipped = snapshot(EX / "attn_mock")
    one_line_exit_2(run_align("export", str(EX / "attn_mock" / "report.nsys-rep"), "-o", str(tmp_path)), "is a folder")
    one_line_exit_2(run_align("export", str(EX / "attn_mock" / "report.nsys-rep"), "-o",
                              str(tmp_path / "no" / "x.sqlite")), "does not exist")
    one_line_exit_2(run_align("trace", "modules", "--out", str(tmp_path), "--",
                              str(ROOT / "tests/programs/trace_script.py")), "is a folder")
    assert snapshot(tmp_path) == {} and snapshot(EX / "attn_mock") == shipped


def test_a_verdict_in_a_read_only_store(readonly):
    folder = readonly
    r = run_align("verdict", "--op", "attention", "--mock", str(EX / "hf_llama_mock"), "--e2e",
                  str(EX / "hf_llama_e2e"), "--store", str(folder))
    one_line_exit_2(r, "cannot record the verdict")
    assert list(folder.iterdir()) == []


def test_a_store_that_is_a_file(tmp_path):
    f = tmp_path / "store"
    f.write_text("not a folder")
    one_line_exit_2(run_align("profile", "mock", "--name", "x", "--store", str(f), "--", "true"), "store folder")
    one_line_exit_2(run_align("verdict", "--op", "attention", "--mock", str(EX / "hf_llama_mock"), "--e2e",
                              str(EX / "hf_llama_e2e"), "--store", str(f)), f"store {f} is not a folder")
    assert f.read_text() == "not a folder"


# ---- a collection: full disk, then resume; damaged files on resume ------------------------------------
def _collect(out: Path, *args: str, **kw):
    return run_align("collect", "--op", "standin", "--runs", "3", "--warmups", "1", "--out", str(out), *args, **kw)


def _rows(out: Path) -> dict[str, list[str]]:
    return {p.name: p.read_text().splitlines()[1:] for p in sorted(out.rglob("*_perf.txt"))}


def _leftovers(out: Path) -> list[str]:
    return [str(p) for p in out.rglob("*") if p.name.endswith((".tmp", ".lock", ".partial.sqlite"))
            and p.name != "collector.lock"]


def test_collect_on_a_full_disk_then_resume_writes_every_case_once(tmp_path):
    out = tmp_path / "c"
    r = _collect(out, file_limit=1024)
    one_line_exit_2(r, "cannot write")
    assert "--resume" in r.stderr and not _leftovers(out)
    before = _rows(out)
    assert all(line.count(",") == 13 for rows in before.values() for line in rows)  # whole rows only
    failed = json.loads((out / ".align" / "checkpoint.json").read_text())["failed"]
    assert failed == {}  # the folder failed, not a case: resume runs it again
    r = _collect(out, "--resume", "-f", "json")
    assert r.returncode == 0, r.stderr[-2000:]
    after = _rows(out)
    for name, rows in before.items():
        assert after[name][:len(rows)] == rows  # kept as written
    keys = [tuple(line.split(",")[:-1]) for rows in after.values() for line in rows]
    assert len(keys) == len(set(keys)) == 16  # the stand-in's grid: 12 context + 4 generation cases
    assert not _leftovers(out)


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    out = tmp_path_factory.mktemp("collected") / "c"
    r = _collect(out)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def _ctx_txt(out: Path) -> Path:
    return next(out.rglob("standin_context_perf.txt"))


DAMAGED_COLLECTIONS = {
    "garbled-line": (lambda out: _edit_line(_ctx_txt(out), 2, 'garbage,,"unterminated'), "line 2 of"),
    "garbled-header": (lambda out: _edit_line(_ctx_txt(out), 1, "framework,versio"), "fields, the header 2"),
    "renamed-column": (lambda out: _edit_line(_ctx_txt(out), 1, _ctx_txt(out).read_text().splitlines()[0]
                                              .replace("model", "modex")), "lacks column(s) model"),
    "latency-text": (lambda out: _edit_line(_ctx_txt(out), 3, ",".join(_ctx_txt(out).read_text().splitlines()[2]
                                                                        .split(",")[:-1] + ["abc"])),
                     "latency 'abc' is not a number"),
    "not-utf8": (lambda out: _ctx_txt(out).write_bytes(_ctx_txt(out).read_bytes() + b"\xff\xfe,\n"), "is not text"),
    "checkpoint-json": (lambda out: (out / ".align" / "checkpoint.json").write_text('{"failed": [1,'),
                        "is not a checkpoint align wrote"),
    "checkpoint-shape": (lambda out: (out / ".align" / "checkpoint.json").write_text("[1, 2]"),
                         "is not a checkpoint align wrote"),
    "parquet": (lambda out: next(out.rglob("standin_context_perf.parquet")).write_bytes(b"x"),
                "is not a readable parquet table"),
}


def _edit_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("kind", sorted(DAMAGED_COLLECTIONS))
def test_resume_of_a_damaged_collection(tmp_path, collected, kind):
    out = tmp_path / "c"
    shutil.copytree(collected, out)
    damage, says = DAMAGED_COLLECTIONS[kind]
    damage(out)
    before = snapshot(out)
    r = _collect(out, "--resume")
    one_line_exit_2(r, says)
    after = snapshot(out)
    # nothing lost or rewritten; at most the collector's own lock file of this run is gone again
    assert {k: v for k, v in after.items() if "collector.lock" not in k} == \
        {k: v for k, v in before.items() if "collector.lock" not in k}


# ---- the store's meta.json and a top-k trace ----------------------------------------------------------
@pytest.mark.parametrize("text,says", [
    ('{"status": ', "unreadable"),
    ("[1]", "a JSON list, not an object"),
    ('{"status": 5, "gpus": "x", "pid": true, "kind": "mock"}', "wrong type of status, pid, gpus"),
])
def test_a_damaged_meta_json_is_listed_not_fatal(tmp_path, text, says):
    store = tmp_path / "s"
    (store / "m").mkdir(parents=True)
    shutil.copy(EX / "attn_mock" / "report.sqlite", store / "m" / "report.sqlite")
    (store / "m" / "meta.json").write_text(text)
    r = run_align("profiles", "--store", str(store), "-f", "json")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    [row] = json.loads(r.stdout)
    assert row["name"] == "m" and row["status"].startswith("damaged meta.json") and says in row["status"]
    r = run_align("kernels", "m", "--store", str(store), "-f", "csv")
    assert r.returncode == 0 and r.stdout == run_align("kernels", str(EX / "attn_mock"), "-f", "csv").stdout


def _trace(tmp_path: Path) -> Path:
    with tarfile.open(EX / "trace" / "topk_trace.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    return next(p.parent for p in tmp_path.rglob("run_meta.json"))


def test_one_bad_line_costs_one_record_of_a_topk_trace(tmp_path):
    folder = _trace(tmp_path)
    whole = json.loads(run_align("trace", "topk", "summary", str(folder), "--table", "overall", "-f", "json").stdout)
    shard = sorted(folder.glob("topk_shard_*.jsonl"))[0]
    lines = shard.read_bytes().split(b"\n")
    lines[4] = b'{"garbage'
    lines[6] = lines[6].replace(b'"layer":', b'"layer":"x","was":', 1)
    shard.write_bytes(b"\n".join(lines))
    r = run_align("trace", "topk", "summary", str(folder), "--table", "overall", "-f", "json")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert f"2 damaged record line(s) left out, the first at {shard}:5" in r.stderr
    [got], [was] = json.loads(r.stdout)["overall"], whole["overall"]
    assert got["records"] == was["records"] - 2 and got["bad_lines"] == 2
    (folder / "run_meta.json").write_text("{")
    one_line_exit_2(run_align("trace", "topk", "summary", str(folder)), "cannot read")


def test_the_readonly_fixture_really_denies_writes(readonly):
    """The read-only cases above only mean something if the folder refuses a write."""
    with pytest.raises(PermissionError):
        (readonly / "x").write_text("x")
