"""The export corpus of issue 29 item 6: damaged exports once read as numbers (a NULL kernel end
summed into ``mock_ns 9.22e18``, kernels named ``null``) and messages that blamed the wrong thing
(an unreadable file called "not an SQLite file", a missing program "nsys wrote no report", a long
name blamed on the store, a profile compared with itself said nothing). Every case is one line on
stderr, exit 2, no traceback, the input files byte for byte as they were and nothing left beside
them; the damage is named once, by the one validation every command reads an export through
(align.profile.check.validate, run as align.Profile opens a file)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from align.errors import ProfileError
from align.profile import check
from align.profile.reader import Profile
from align.profile.schema import KERNEL_TABLE, NVTX_TABLE, RUNTIME_TABLE

from .conftest import ROOT, run_align
from .corpus import damaged

EX = ROOT / "profiles/examples"
MOCK, E2E = EX / "attn_mock" / "report.sqlite", EX / "llama_e2e" / "report.sqlite"

# damage -> (table named, SQL counting the damaged rows in it, words of the line)
NAMED = {
    "null-end": (KERNEL_TABLE, '"end" IS NULL', "have no end (NULL)"),
    "null-start": (KERNEL_TABLE, "start IS NULL", "have no start (NULL)"),
    "null-device": (KERNEL_TABLE, "deviceId IS NULL", "have no deviceId (NULL)"),
    "null-stream": (KERNEL_TABLE, "streamId IS NULL", "have no streamId (NULL)"),
    "end-before-start": (KERNEL_TABLE, '"end" < start', "end before they start"),
    "negative-start": (KERNEL_TABLE, "start < 0", "have a negative start"),
    "absurd-end": (KERNEL_TABLE, f'"end" >= {check.TIME_LIMIT_NS}', "past 2^62 ns"),
    "third-of-strings-gone": (KERNEL_TABLE, "demangledName NOT IN (SELECT id FROM StringIds)",
                              "name a demangledName string id that StringIds lacks"),
    "null-api-end": (RUNTIME_TABLE, '"end" IS NULL', "have no end (NULL)"),
    "range-ends-before-start": (NVTX_TABLE, '"end" < start', "end before they start"),
}


def one_line(r, says: str, code: int = 2) -> None:
    assert r.returncode == code, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr and says in r.stderr, r.stderr
    assert len([x for x in r.stderr.splitlines() if x.strip()]) <= 2, r.stderr


def files(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` by its content's hash: what a run must leave as it was."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def copies(tmp_path_factory) -> dict[tuple[str, str], Path]:
    """Each damage of NAMED on a copy of both shipped examples: {(damage, mock|e2e): path}."""
    top = tmp_path_factory.mktemp("exports")
    out = {}
    for side, source in (("mock", MOCK), ("e2e", E2E)):
        (top / side).mkdir()
        for kind in NAMED:
            out[kind, side] = damaged(source, kind, top / side)
    return out


def _count(path: Path, table: str, where: str) -> tuple[int, int]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return (con.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()[0],
                con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        con.close()


@pytest.mark.parametrize("side", ["mock", "e2e"])
@pytest.mark.parametrize("kind", sorted(NAMED))
def test_opening_a_damaged_export_names_the_table_and_the_rows(copies, kind, side):
    """The library refuses the file as it opens it: the file, the table, how many rows of how many,
    what is wrong and what to do, in one line."""
    path = copies[kind, side]
    table, where, words = NAMED[kind]
    bad, total = _count(path, table, where)
    assert bad > 0
    with pytest.raises(ProfileError) as raised:
        Profile(path)
    line = str(raised.value)
    assert line.startswith(f"{path}: {bad} of {total} rows of {table} ") and words in line, line
    assert "align export" in line and "\n" not in line


COMMANDS = {
    "events": lambda m, e, tmp: ["events", str(m), "-f", "csv"],
    "events-api": lambda m, e, tmp: ["events", str(m), "--kind", "api", "-f", "csv"],
    "info": lambda m, e, tmp: ["info", str(m)],
    "processes": lambda m, e, tmp: ["processes", str(m)],
    "diff": lambda m, e, tmp: ["diff", str(m), str(E2E), "--op", "attention"],
    "diff-e2e": lambda m, e, tmp: ["diff", str(MOCK), str(e), "--op", "attention"],
    "verdict-e2e": lambda m, e, tmp: ["verdict", "--op", "attention", "--mock", str(MOCK), "--e2e", str(e),
                                      "--store", str(tmp / "store")],
    "report": lambda m, e, tmp: ["report", str(m), str(E2E), "--op", "attention", "-o", str(tmp / "r.html")],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("kind", ["null-end", "third-of-strings-gone", "absurd-end", "null-api-end"])
def test_every_command_refuses_a_damaged_export(copies, tmp_path, kind, command):
    """``align diff`` once exited 0 with mock_ns 9.22e18 on a NULL end that ``align kernels`` refused,
    and ``align events`` printed kernels named null: now each command refuses the file alike, and
    writes nothing (no verdict recorded, no report)."""
    m, e = copies[kind, "mock"], copies[kind, "e2e"]
    before = files(m.parent.parent)
    r = run_align(*COMMANDS[command](m, e, tmp_path), cwd=tmp_path)
    named = e if command.endswith("-e2e") else m
    one_line(r, f"{named}: ")
    assert NAMED[kind][2] in r.stderr and "null" not in r.stdout and r.stdout.strip() == ""
    assert files(m.parent.parent) == before and list(tmp_path.iterdir()) == []


def test_an_export_is_checked_once_per_process(tmp_path, monkeypatch):
    """The check is one pass of SQL counts per table, run once per file: a second opening (verdict,
    report and ops each open their profiles more than once) reuses it."""
    calls = []
    real = check.problem
    monkeypatch.setattr(check, "problem", lambda *a, **k: calls.append(a) or real(*a, **k))
    copy = tmp_path / "x.sqlite"
    shutil.copy(MOCK, copy)
    for _ in range(3):
        Profile(copy).close()
    assert len(calls) == 1
    os.utime(copy, ns=(1, 1))  # another version of the file is checked again
    Profile(copy).close()
    assert len(calls) == 2


def test_a_large_table_is_checked_in_ranges(tmp_path, monkeypatch):
    """A table of more rows than one range is counted range by range (on all the cores), and a
    damaged row in the last range is still found."""
    monkeypatch.setattr(check, "CHUNK_ROWS", 64)
    bad = damaged(E2E, "absurd-end", tmp_path)
    with pytest.raises(ProfileError, match=r": 1 of 2675 rows of CUPTI_ACTIVITY_KIND_KERNEL have an end past"):
        Profile(bad)
    con = sqlite3.connect(bad)
    con.execute(f'UPDATE {KERNEL_TABLE} SET "end" = start WHERE "end" > start + 1000000000000')
    con.execute(f'UPDATE {KERNEL_TABLE} SET "end" = start - 1 WHERE rowid = (SELECT max(rowid) FROM {KERNEL_TABLE})')
    con.commit()
    con.close()
    with pytest.raises(ProfileError, match="1 of 2675 rows of CUPTI_ACTIVITY_KIND_KERNEL end before they start"):
        Profile(bad)


def test_every_shipped_export_passes_the_check():
    """No false alarm on what nsys really writes (graph nodes created before the session began
    have negative times)."""
    for path in sorted(EX.glob("*/report.sqlite")):
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            assert check.problem(con, path) is None, path
        finally:
            con.close()


# what a file is, when it is no export to read -> (make it in folder, words of the line)
def _nsys_rep(folder: Path) -> Path:
    out = folder / "report.sqlite"
    shutil.copy(EX / "attn_mock" / "report.nsys-rep", out)
    return out


def _empty(folder: Path) -> Path:
    (folder / "empty.sqlite").touch()
    return folder / "empty.sqlite"


def _folder(folder: Path) -> Path:
    (folder / "x.sqlite").mkdir()
    return folder / "x.sqlite"


def _plain(folder: Path) -> Path:
    con = sqlite3.connect(folder / "notes.sqlite")
    con.execute("CREATE TABLE notes (x TEXT)")
    con.commit()
    con.close()
    return folder / "notes.sqlite"


def _hot_journal(folder: Path) -> Path:
    """A copy beside which a writer died mid-transaction (its rollback journal left behind)."""
    out = folder / "hot.sqlite"
    shutil.copy(MOCK, out)
    os.chmod(out, 0o644)
    con = sqlite3.connect(out, isolation_level=None)
    con.execute("PRAGMA cache_size = 1")
    con.execute("BEGIN")
    con.execute(f"DELETE FROM {KERNEL_TABLE}")
    con.execute("CREATE TABLE filler AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                "WHERE i < 20000) SELECT i, randomblob(200) AS b FROM n")
    journal = out.with_name(out.name + "-journal")
    assert journal.stat().st_size > 0
    kept = journal.read_bytes()
    main = out.read_bytes()
    con.close()  # rolls back and deletes the journal: put the crash's files back
    out.write_bytes(main)
    journal.write_bytes(kept)
    return out


def _unmerged_wal(folder: Path) -> Path:
    out = folder / "wal.sqlite"
    shutil.copy(MOCK, out)
    os.chmod(out, 0o644)
    con = sqlite3.connect(out, isolation_level=None)
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("PRAGMA wal_autocheckpoint = 0")
    con.execute("UPDATE StringIds SET value = value || '!' WHERE id < 5")
    wal, shm = (out.with_name(out.name + s) for s in ("-wal", "-shm"))
    kept = wal.read_bytes(), shm.read_bytes(), out.read_bytes()
    con.close()  # the last connection merges the WAL: put the unmerged files back
    for f, data in zip((wal, shm, out), kept):
        f.write_bytes(data)
    return out


FILES = {
    "nsys-rep-named-sqlite": (_nsys_rep, "is an nsys report (.nsys-rep), not its SQLite export"),
    "zero-bytes": (_empty, "is empty (0 bytes)"),
    "folder-named-sqlite": (_folder, "is a folder, not an export file"),
    "sqlite-not-nsys": (_plain, "is an SQLite file but not an nsys export"),
    "hot-journal": (_hot_journal, "a program is writing it, or stopped mid-write (hot.sqlite-journal"),
    "unmerged-wal": (_unmerged_wal, "in WAL mode, with writes not yet merged into it (wal.sqlite-wal"),
}


@pytest.mark.parametrize("command", ["kernels", "info", "diff"])
@pytest.mark.parametrize("case", sorted(FILES))
def test_a_file_that_is_no_export_says_what_it_is(tmp_path, case, command):
    make, says = FILES[case]
    data = tmp_path / "data"
    data.mkdir()
    path = make(data)
    before = files(data)
    args = {"kernels": ["kernels", str(path)], "info": ["info", str(path)],
            "diff": ["diff", str(path), str(E2E), "--op", "attention"]}[command]
    r = run_align(*args, cwd=tmp_path)
    one_line(r, says)
    assert "not an SQLite file" not in r.stderr
    assert files(data) == before and sorted(p.name for p in tmp_path.iterdir()) == ["data"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file of mode 000")
def test_an_unreadable_export_says_permission_denied(tmp_path):
    path = tmp_path / "report.sqlite"
    shutil.copy(MOCK, path)
    os.chmod(path, 0)
    try:
        r = run_align("kernels", str(path))
    finally:
        os.chmod(path, 0o644)
    one_line(r, f"cannot read {path}: permission denied")


def test_a_wal_mode_export_reads_as_it_is_and_leaves_nothing_beside_it(tmp_path):
    """A tool that opened the export for writing may switch it to WAL mode; reading it must not
    leave -wal and -shm files beside it, and it answers as the original does."""
    path = tmp_path / "wal.sqlite"
    shutil.copy(MOCK, path)
    os.chmod(path, 0o644)
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"
    con.close()
    before = files(tmp_path)
    for engine in ("sqlite", "duckdb"):
        r = run_align("kernels", str(path), "-f", "csv", env={"ALIGN_ENGINE": engine})
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
        assert r.stdout == run_align("kernels", str(MOCK), "-f", "csv").stdout
        assert files(tmp_path) == before


def test_an_emptied_kernel_table_is_no_kernel_data(tmp_path):
    """An export whose kernel table is there but empty once diffed with exit 0: it holds no kernel."""
    path = tmp_path / "nokernels.sqlite"
    shutil.copy(MOCK, path)
    os.chmod(path, 0o644)
    con = sqlite3.connect(path)
    con.execute(f"DELETE FROM {KERNEL_TABLE}")
    con.commit()
    con.close()
    one_line(run_align("diff", str(path), str(E2E), "--op", "attention"), "has no CUDA kernel data")
    one_line(run_align("kernels", str(path)), "has no CUDA kernel data")


SAME = {
    "diff-same-folder": lambda tmp: ["diff", str(EX / "attn_mock"), str(EX / "attn_mock"), "--op", "attention"],
    "verdict-two-spellings": lambda tmp: ["verdict", "--op", "attention", "--mock", str(EX / "attn_mock"),
                                          "--e2e", str(EX / "attn_mock" / ".." / "attn_mock" / "report.sqlite"),
                                          "--store", str(tmp / "store")],
    "report-itself": lambda tmp: ["report", str(MOCK), str(MOCK), "--op", "attention", "-o", str(tmp / "r.html")],
    "diff-a-copy": lambda tmp: ["diff", str(MOCK), str(tmp / "copy.sqlite"), "--op", "attention"],
    "diff-a-link": lambda tmp: ["diff", str(tmp / "link.sqlite"), str(MOCK), "--op", "attention"],
}


@pytest.mark.parametrize("case", sorted(SAME))
def test_a_profile_compared_with_itself_is_refused(tmp_path, case):
    """A self-comparison matches by construction (it once printed PASS): refused in one line, and
    no verdict is recorded nor report written."""
    shutil.copy(MOCK, tmp_path / "copy.sqlite")
    (tmp_path / "link.sqlite").symlink_to(MOCK)
    before = files(tmp_path)
    r = run_align(*SAME[case](tmp_path))
    one_line(r, "a profile compared with itself always matches")
    assert "same export" in r.stderr if case == "diff-a-copy" else "same file" in r.stderr
    assert files(tmp_path) == before and not (tmp_path / "store").exists()


def test_a_missing_program_is_said_before_nsys_runs(tmp_path):
    """Once "nsys wrote no report (exit 1)" with an entry left behind: now the program is named
    and nothing is created."""
    store = tmp_path / "s"
    for prog, says in (("no_such_program_xyz", "no_such_program_xyz: program not found (not on PATH)"),
                       (str(tmp_path / "missing.sh"), "missing.sh: no such program"),
                       (str(tmp_path), "is a folder, not a program")):
        r = run_align("profile", "mock", "--name", "x", "--store", str(store), "--", prog, "arg")
        one_line(r, says)
        assert "nsys wrote no report" not in r.stderr and not store.exists()
    script = tmp_path / "run.sh"
    script.write_text("echo hi\n")
    one_line(run_align("profile", "e2e", "--name", "x", "--store", str(store), "--", str(script)), "is not executable")
    assert not store.exists()


def test_a_too_long_profile_name_is_said_so(tmp_path):
    """A 250-character name was blamed on the store folder ("File name too long"): now the name and
    its limit are said, and nothing is created."""
    store = tmp_path / "s"
    r = run_align("profile", "mock", "--name", "n" * 250, "--store", str(store), "--", "true")
    one_line(r, "is 250 characters long, over the limit of 249")
    assert "store folder" not in r.stderr and not store.exists()
    r = run_align("profile", "mock", "--name", "a/" + "n" * 251, "--store", str(store), "--", "true")
    one_line(r, "is 251 characters long")
    assert not store.exists()


def test_the_line_names_the_report_to_export_again(tmp_path):
    """Beside its .nsys-rep, a damaged export's line names that report in the command to run."""
    bad = damaged(MOCK, "null-end", tmp_path)
    bad = bad.rename(tmp_path / "report.sqlite")
    shutil.copy(EX / "attn_mock" / "report.nsys-rep", tmp_path / "report.nsys-rep")
    os.utime(bad)  # the export newer than its report: it is read, not exported again
    r = run_align("kernels", str(bad))
    one_line(r, f"align export {tmp_path / 'report.nsys-rep'}")
    assert re.search(r": \d+ of 448 rows of CUPTI_ACTIVITY_KIND_KERNEL have no end \(NULL\)", r.stderr)
