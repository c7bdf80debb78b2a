"""Tables a person can read in a 100-column terminal: numbers never split, names shortened in the
middle only when huge, columns left out (and said) rather than squeezed; CSV and JSON stay whole."""

from __future__ import annotations

import json
import re

import pytest

from .conftest import ROOT, run_align

EX = ROOT / "profiles/examples"


@pytest.mark.parametrize("args", [["nvtx", str(EX / "llama_e2e")], ["kernels", str(EX / "llama_e2e")],
                                  ["events", str(EX / "attn_mock"), "--kind", "nvtx", "--limit", "20"],
                                  ["profiles", "--store", str(ROOT / "profiles")],
                                  ["diff", str(EX / "hf_llama_mock"), str(EX / "hf_llama_e2e")],
                                  ["ops", str(EX / "hf_llama_e2e"), "--op", "attention"]])
@pytest.mark.parametrize("columns", [100, 160])
def test_tables_fit_and_never_split_a_number(args, columns):
    r = run_align(*args, env={"COLUMNS": str(columns)})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert all(len(x) <= columns for x in lines)
    # a row's continuation line (its first cell blank: a long name folds) never holds a piece of a number
    for line in lines:
        cells = line.split("│")[1:-1]
        if len(cells) > 1 and not cells[0].strip():
            # numbers are right-aligned, names left-aligned: a right-aligned digit run here is a split number
            assert not any(re.fullmatch(r"\s{2,}[\d,.]+ ", c) for c in cells), line
    if "left out" in r.stderr:
        full = run_align(*args, "-f", "json")
        assert full.returncode == 0 and json.loads(full.stdout)


def test_a_megabyte_name_is_shortened_in_the_table_only(tmp_path):
    import shutil
    import sqlite3

    db = tmp_path / "huge.sqlite"
    shutil.copy(EX / "attn_mock" / "report.sqlite", db)
    con = sqlite3.connect(db)
    nid = con.execute("SELECT demangledName FROM CUPTI_ACTIVITY_KIND_KERNEL WHERE rowid = 3").fetchone()[0]
    con.execute("UPDATE StringIds SET value = ? WHERE id = ?", ("void at::native::" + "a" * 2_000_000 + "<int>(int)",
                                                                 nid))
    con.commit()
    con.close()
    r = run_align("kernels", str(db), env={"COLUMNS": "160"})
    assert r.returncode == 0 and "aaa...aaa" in r.stdout and len(r.stdout) < 100_000
    r = run_align("kernels", str(db), "-f", "csv")
    assert r.returncode == 0 and "a" * 2_000_000 in r.stdout
    r = run_align("ops", str(db), "--range", "mock_context", env={"COLUMNS": "160"})
    assert r.returncode == 0, r.stderr


def _header(stdout: str) -> list[str]:
    """The column names of the last table printed (diff prints its pairing table first)."""
    line = [x for x in stdout.splitlines() if x.startswith("┃")][-1]
    return [c.strip() for c in line.strip("┃").split("┃")]


@pytest.mark.parametrize("args", [["nvtx", str(EX / "llama_e2e")], ["kernels", str(EX / "llama_e2e")],
                                  ["diff", str(EX / "hf_llama_mock"), str(EX / "hf_llama_e2e")]])
def test_wide_shows_every_column_and_whole_names(args):
    narrow = run_align(*args, env={"COLUMNS": "80"})
    wide = run_align(*args, "--wide", env={"COLUMNS": "80"})
    assert narrow.returncode == wide.returncode == 0, wide.stderr
    assert "left out" in narrow.stderr and "left out" not in wide.stderr
    # diff's JSON adds each family's launches (lists) beside the table's columns
    every = [c for c in json.loads(run_align(*args, "-f", "json").stdout)[0] if not c.endswith("_launches")]
    assert _header(wide.stdout) == every and len(_header(narrow.stdout)) < len(every)
    body = [x for x in wide.stdout.splitlines() if x.startswith("│")]
    # one line per row: no name folded onto a second line
    assert not any(not x.split("│")[1].strip() for x in body)


def test_columns_picks_and_orders_in_every_format():
    args = ["kernels", str(EX / "llama_e2e"), "--columns", "instances,name"]
    table = run_align(*args, env={"COLUMNS": "100"})
    assert table.returncode == 0 and _header(table.stdout) == ["instances", "name"]
    rows = json.loads(run_align(*args, "-f", "json").stdout)
    assert rows and all(list(r) == ["instances", "name"] for r in rows)
    assert run_align(*args, "-f", "csv").stdout.splitlines()[0] == "Instances,Name"  # nsys's headers, picked
    ops = json.loads(run_align("ops", str(EX / "hf_llama_e2e"), "--op", "attention", "-f", "json",
                               "--columns", "phase,family").stdout)
    assert all(list(f) == ["phase", "family"] for f in ops["families"])


@pytest.mark.parametrize("args,says", [
    (["kernels", str(EX / "llama_e2e"), "--columns", "instances,bogus"], "no column 'bogus'"),
    (["kernels", str(EX / "llama_e2e"), "--columns", ","], "names no column"),
    (["trace", "topk", "summary", str(EX / "trace"), "--columns", "records"], "picks from one table"),
])
def test_columns_mistakes_are_one_line(args, says):
    r = run_align(*args)
    assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_long_name_is_cut_in_the_middle_not_folded_over_many_lines(tmp_path):
    """The README says huge names are cut in the middle: at 80 columns a 600-character kernel name once
    folded over about 20 lines (issue 29 item 5). It takes at most a few lines now, its start and end
    kept; --wide and csv keep it whole."""
    import shutil
    import sqlite3

    db = tmp_path / "long.sqlite"
    shutil.copy(EX / "attn_mock" / "report.sqlite", db)
    con = sqlite3.connect(db)
    nid = con.execute("SELECT demangledName FROM CUPTI_ACTIVITY_KIND_KERNEL WHERE rowid = 3").fetchone()[0]
    name = "void at::native::START" + "x" * 600 + "END<int>(int)"
    con.execute("UPDATE StringIds SET value = ? WHERE id = ?", (name, nid))
    con.commit()
    con.close()
    r = run_align("kernels", str(db), "--name", "demangled", env={"COLUMNS": "80"})
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if "xxx" in line or "START" in line]
    assert 0 < len(rows) <= 4, r.stdout
    flat = "".join(line.rsplit("│", 2)[-2].strip() for line in r.stdout.splitlines() if line.count("│") > 2)
    assert "START" in flat and "END<int>(int)" in flat and "..." in flat
    wide = run_align("kernels", str(db), "--name", "demangled", "--wide", env={"COLUMNS": "80"})
    assert "x" * 600 in wide.stdout
    assert name in run_align("kernels", str(db), "--name", "demangled", "-f", "csv").stdout
