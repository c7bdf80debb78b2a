"""A command imports only what it uses: the kernel summary, info, profiles, the first rows of
kernels or API calls and the NVTX projection of a small export answer from SQLite without pandas,
numpy, DuckDB or rich (CSV/JSON). Checked on what the process loaded, never on a timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

EX = ROOT / "profiles" / "examples"
SMALL = str(EX / "hf_dsa_mock")

# runs the CLI in-process, then reports which heavy modules it loaded (align.lazy: a lazy module
# nobody touched is not loaded)
PROBE = """
import json, sys
from align.cli.main import main
sys.argv = ["align"] + json.loads(sys.argv[1])
try:
    main()
except SystemExit as exc:
    code = exc.code
from align.lazy import loaded
heavy = {m: loaded(m) for m in ("pandas", "numpy")}
heavy.update({m: m in sys.modules for m in ("duckdb", "rich.console", "torch", "pyarrow")})
sys.stderr.write("PROBE " + json.dumps({"code": code, "loaded": heavy}) + "\\n")
"""


def probe(*args: str) -> dict:
    env = {**os.environ, "ALIGN_ENGINE": "auto"}
    r = subprocess.run([sys.executable, "-c", PROBE, json.dumps(list(args))], capture_output=True, text=True,
                       env=env, timeout=300, cwd=ROOT)
    line = [x for x in r.stderr.splitlines() if x.startswith("PROBE ")]
    assert line, r.stderr[-2000:]
    out = json.loads(line[-1][6:])
    out["stdout"] = r.stdout
    return out


@pytest.mark.parametrize("args", [
    ["kernels", SMALL, "-f", "csv"],
    ["kernels", SMALL, "-f", "json", "--name", "short", "--by-launch"],
    ["info", SMALL, "-f", "json"],
    ["profiles", "--store", str(EX.parent), "-f", "csv"],
    ["events", SMALL, "-k", "kernels", "-f", "csv"],
    ["events", SMALL, "-k", "api", "-f", "json", "--limit", "5"],
    ["nvtx", SMALL, "-f", "csv"],
    ["nvtx", SMALL, "-f", "json", "--cpu"],
], ids=lambda a: " ".join(x.replace(str(EX) + "/", "") for x in a[:3]))
def test_small_answers_need_no_heavy_library(args):
    out = probe(*args)
    assert out["code"] in (0, None) and out["stdout"].strip()
    assert not any(out["loaded"].values()), out["loaded"]


def test_help_needs_no_heavy_library():
    out = probe("--help")
    assert not any(out["loaded"].values()), out["loaded"]


def test_a_table_loads_rich_but_not_pandas():
    out = probe("kernels", SMALL)
    assert out["loaded"]["rich.console"] and not out["loaded"]["pandas"] and not out["loaded"]["duckdb"]


def test_kernels_per_range_still_load_pandas():
    """Kernels per range and the per-range trace are columnar (pandas and numpy): the lazy modules load when used."""
    out = probe("nvtx", SMALL, "--kernels", "-f", "csv")
    assert out["code"] in (0, None) and out["loaded"]["pandas"] and out["loaded"]["numpy"]


def test_plain_projection_is_chosen_by_size(tmp_path):
    from align.attribute.nvtx_rows import PLAIN_BELOW_BYTES, wants_plain

    small, large = tmp_path / "small.sqlite", tmp_path / "large.sqlite"
    small.write_bytes(b"x")
    with open(large, "wb") as f:
        f.truncate(PLAIN_BELOW_BYTES)
    assert (wants_plain(small), wants_plain(large), wants_plain(tmp_path / "gone.sqlite")) == (True, False, False)


def test_duckdb_is_chosen_by_size(tmp_path, monkeypatch):
    from align.profile.engine import DUCKDB_FROM_BYTES, wants_duckdb

    small, large = tmp_path / "small.sqlite", tmp_path / "large.sqlite"
    small.write_bytes(b"x")
    with open(large, "wb") as f:
        f.truncate(DUCKDB_FROM_BYTES)  # sparse: the size, not the bytes
    monkeypatch.setenv("ALIGN_ENGINE", "auto")
    assert (wants_duckdb(small), wants_duckdb(large)) == (False, True)
    monkeypatch.setenv("ALIGN_ENGINE", "duckdb")
    assert wants_duckdb(small)
    monkeypatch.setenv("ALIGN_ENGINE", "sqlite")
    assert not wants_duckdb(large)


@pytest.mark.parametrize("example", sorted(p.name for p in EX.iterdir() if (p / "report.sqlite").exists()))
def test_plain_rows_print_as_the_dataframe_does(example, capsys):
    """The CLI's pandas-free kernel summary and the library's DataFrame give the same CSV and JSON."""
    import align
    from align.output import Format, print_frame
    from align.stats.kernels import kernel_rows, kernel_summary, to_nsys_csv_frame

    with align.load(EX / example) as p:
        for kw in ({}, {"name": "short", "by_launch": True, "sort": "name"}):
            rows, frame = kernel_rows(p, **kw), kernel_summary(p, **kw)
            for fmt in (Format.csv, Format.json):
                print_frame(rows, fmt, csv_frame=to_nsys_csv_frame(rows))
                a = capsys.readouterr().out
                print_frame(frame, fmt, csv_frame=to_nsys_csv_frame(frame))
                b = capsys.readouterr().out
                assert a == b and a.count("\n") > 1
