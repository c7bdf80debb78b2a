"""The bad-input corpus, command by command (issue 13): every command of the CLI is here, and each
of its bad inputs ends in one line on stderr (click's usage lines at most), the documented exit
code (2 for bad input, 1 when a tool align runs fails), no traceback, and nothing lost: the scratch
store, the working folder and the shipped examples hold the same files, bytes and SQLite rows
after the run as before it."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest
import typer

from align.cli.main import app

from .conftest import ROOT, run_align
from .corpus import damaged

EX = ROOT / "profiles/examples"

# {BAD}: a truncated export; {FIFO}: a named pipe; {EMPTY}: an empty folder; {TEXT}: a text file;
# {MISSING}: a path that does not exist; {STORE}: a scratch store with one profile and one verdict
# record; {TMP}: the working folder; {EX}: the shipped examples.
CASES: dict[str, list[tuple[list[str], str, int]]] = {
    "doctor": [(["-f", "bogus"], "Invalid value", 2)],
    "profiles": [(["--store", "{TEXT}"], "is not a folder", 2),
                 (["--columns", "bogus"], "no column 'bogus'", 2)],
    "export": [(["{MISSING}"], "no such file", 2),
               (["{EX}/attn_mock/report.nsys-rep", "-o", "{TMP}"], "is a folder", 2),
               (["{EX}/attn_mock/report.nsys-rep", "-o", "{MISSING}/x.sqlite"], "does not exist", 2)],
    "info": [(["{MISSING}"], "no such file or stored profile", 2), (["{BAD}"], "{BAD}", 2),
             (["{FIFO}"], "is not a regular file", 2), (["{EMPTY}"], "holds no report.sqlite", 2),
             (["{TEXT}"], "{TEXT}", 2)],
    "events": [(["{BAD}"], "{BAD}", 2), (["{EX}/attn_mock", "--kind", "bogus"], "unknown kind", 2),
               (["{EX}/attn_mock", "--limit", "-1"], "--limit", 2)],
    "kernels": [(["{BAD}"], "{BAD}", 2), (["{EX}/attn_mock", "--sort", "bogus"], "unknown sort key", 2),
                (["{EX}/attn_mock", "--name", "bogus"], "unknown name kind", 2), (["{EX}/attn_mock", "--limit", "-1"], "--limit", 2),
                (["{EX}/attn_mock", "--pid", "999999"], "no process 999999", 2),
                (["{EX}/attn_mock", "--device", "7"], "no GPU 7", 2), (["{FIFO}"], "is not a regular file", 2)],
    "processes": [(["{BAD}"], "{BAD}", 2), (["{TEXT}"], "{TEXT}", 2)],
    "nvtx": [(["{BAD}"], "{BAD}", 2), (["{EX}/attn_mock", "--name", "bogus"], "--name", 2),
             (["{EX}/attn_mock", "--limit", "-1"], "--limit", 2)],
    "ops": [(["{BAD}"], "{BAD}", 2), (["{EX}/attn_mock", "--op", "bogus"], "bogus", 2),
            (["{EX}/attn_mock", "--op", "attention", "--phase", "bogus"], "unknown phase", 2),
            (["{EX}/attn_mock", "--op", "attention", "--skip", "-1"], "--skip", 2),
            (["--list", "--ops-file", "{TEXT}"], "cannot read ops file", 2)],
    "diff": [(["{BAD}", "{EX}/llama_e2e", "--op", "attention"], "{BAD}", 2),
             (["{EX}/attn_mock", "{EX}/llama_e2e", "--op", "attention", "--phase", "bogus"], "bogus", 2),
             (["{EX}/attn_mock", "{EX}/llama_e2e", "--op", "attention", "--skip", "-1"], "--skip", 2),
             (["{EX}/attn_mock", "{EX}/llama_e2e", "--op", "bogus"], "bogus", 2),
             (["{EX}/attn_mock", "{MISSING}"], "no such file or stored profile", 2)],
    "verdict": [(["--op", "attention", "--mock", "{BAD}", "--e2e", "{EX}/llama_e2e"], "{BAD}", 2),
                (["--op", "nosuchop"], "nosuchop", 2),
                (["--op", "attention", "--mock", "{EX}/attn_mock", "--e2e", "{EX}/llama_e2e", "--config", "{TEXT}"],
                 "cannot read config", 2),
                (["--op", "attention", "--mock", "{EX}/attn_mock", "--e2e", "{EX}/llama_e2e", "--store", "{TEXT}"],
                 "{TEXT}", 2)],
    "report": [(["{EX}/attn_mock", "{EX}/llama_e2e", "--op", "attention", "-o", "{TMP}"], "is a folder", 2),
               (["{BAD}", "{EX}/llama_e2e", "--op", "attention", "-o", "{TMP}/r.html"], "{BAD}", 2),
               (["{EX}/attn_mock", "{EX}/llama_e2e", "--op", "attention", "-o", "{TMP}/r.html", "--bench", "{TEXT}"],
                "cannot read benchmark result", 2)],
    "bench": [(["--op", "bogus", "--phase", "context"], "bogus", 2),
              (["--op", "dsa", "--phase", "bogus"], "bogus", 2),
              (["--op", "dsa", "--phase", "context", "--tp", "0"], "tp must be >= 1", 2),
              (["--op", "dsa", "--phase", "context", "--iters", "0"], "iters must be >= 1", 2)],
    "collect": [(["--op", "bogus", "--out", "{TMP}/c"], "bogus", 2),
                (["--op", "standin", "--out", "{TMP}/c", "--runs", "0"], "nothing would be timed", 2),
                (["--op", "standin", "--out", "{TMP}/c", "--cases", "garbage"], "--cases", 2),
                (["--op", "standin", "--out", "{TEXT}"], "{TEXT}", 2)],
    "profile mock": [(["--name", "x", "--store", "{STORE}"], "no command to profile", 2),
                     (["--name", "../x", "--store", "{STORE}", "--", "true"], "bad profile name", 2),
                     (["--name", "x", "--store", "{TEXT}", "--", "true"], "store folder", 2)],
    "profile e2e": [(["--name", "x", "--store", "{STORE}", "--delay", "-1", "--", "true"], "is negative", 2),
                    (["--name", "examples", "--store", "{STORE}", "--overwrite", "--", "true"], "folder the store owns", 2)],
    "profile aux": [(["--name", "x", "--store", "{STORE}", "--duration", "0", "--", "true"], "collects nothing", 2)],
    "trace modules": [(["--out", "{TMP}", "--", "{ROOT}/tests/programs/trace_script.py"], "is a folder", 2),
                      (["--", "{MISSING}.py"], "no such script", 2)],
    "trace topk run": [(["--out", "{TEXT}"], "is not an empty folder", 2),
                       (["--out", "{TMP}/t", "--requests", "0"], "requests must be >= 1", 2)],
    "trace topk summary": [(["{EMPTY}"], "holds no run_meta.json", 2),
                           (["{EX}/trace", "--table", "bogus"], "unknown --table", 2)],
}


def _commands(group, prefix=()) -> list[str]:
    out = []
    for name, cmd in getattr(group, "commands", {}).items():
        sub = getattr(cmd, "commands", None)
        out += _commands(cmd, prefix + (name,)) if sub else [" ".join(prefix + (name,))]
    return out


def test_every_command_is_in_the_corpus():
    assert sorted(_commands(typer.main.get_command(app))) == sorted(CASES)


def _state(*folders: Path) -> dict:
    """Files, bytes and SQLite row counts under ``folders`` (the examples by size and mtime: large)."""
    state = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            if p.is_fifo() or not p.is_file():
                continue
            if folder == EX:
                st = p.stat()
                state[str(p)] = (st.st_size, st.st_mtime_ns)
                continue
            state[str(p)] = p.read_bytes()
            if p.suffix == ".sqlite" and p.name != "bad.sqlite":
                con = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
                tables = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
                state[f"{p}#rows"] = {t: con.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}
                con.close()
    return state


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    top = tmp_path_factory.mktemp("corpus")
    store = top / "store"
    (store / "mock1").mkdir(parents=True)
    for f in ("report.sqlite", "meta.json"):
        shutil.copy(EX / "attn_mock" / f, store / "mock1" / f)
    (store / "verdicts" / "attention").mkdir(parents=True)
    (store / "verdicts" / "attention" / "20260101T000000.000000Z.json").write_text('{"passed": true}\n')
    bad = damaged(EX / "attn_mock" / "report.sqlite", "truncated", top)
    bad = bad.rename(top / "bad.sqlite")
    text = top / "notes.txt"
    text.write_text("not a profile\n")
    empty = top / "empty"
    empty.mkdir()
    fifo = top / "pipe.sqlite"
    os.mkfifo(fifo)
    return {"BAD": str(bad), "FIFO": str(fifo), "EMPTY": str(empty), "TEXT": str(text), "MISSING": str(top / "missing"),
            "STORE": str(store), "EX": str(EX), "ROOT": str(ROOT), "top": top}


ALL = [(cmd, i) for cmd, cases in CASES.items() for i in range(len(cases))]


@pytest.mark.parametrize("cmd,i", ALL, ids=[f"{c.replace(' ', '-')}-{i}" for c, i in ALL])
def test_bad_input(world, tmp_path, cmd, i):
    args, says, code = CASES[cmd][i]
    subs = {**{k: v for k, v in world.items() if k != "top"}, "TMP": str(tmp_path)}

    def fill(text: str) -> str:
        for k, v in subs.items():
            text = text.replace("{" + k + "}", v)
        return text

    before = _state(world["top"], tmp_path, EX)
    r = run_align(*cmd.split(), *map(fill, args), env={"ALIGN_STORE": world["STORE"]}, cwd=tmp_path)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == code, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr and fill(says) in r.stderr, r.stderr
    assert len(lines) <= 4, r.stderr  # one line, or click's usage, hint and error
    assert _state(world["top"], tmp_path, EX) == before


def test_the_mock_vs_e2e_commands_share_their_options():
    """diff, verdict and report take the same pairing options, declared once (cli.main.PAIR_OPTIONS)."""
    from align.cli.main import PAIR_OPTIONS

    group = typer.main.get_command(app)
    shared = {name for name, _, _ in PAIR_OPTIONS}
    options = {cmd: {p.name: (p.opts, p.default) for p in group.commands[cmd].params}
               for cmd in ("diff", "verdict", "report")}
    for cmd, params in options.items():
        assert shared <= set(params), (cmd, shared - set(params))
    for name in shared:
        assert options["diff"][name] == options["verdict"][name] == options["report"][name], name
