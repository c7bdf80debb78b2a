"""A column that another nsys release spells otherwise is one entry in schema.COLUMN_SPELLINGS:
a real export with three columns renamed reads exactly like the original on both engines."""

from __future__ import annotations

import shutil
import sqlite3

import pandas as pd
import pytest

import align
from align.profile import schema
from tests.conftest import ROOT

SRC = ROOT / "profiles" / "examples" / "hf_llama_e2e" / "report.sqlite"
RENAMED = {(schema.KERNEL_TABLE, "shortName"): "shortNameId", (schema.NVTX_TABLE, "globalTid"): "globalThreadId",
           (schema.RUNTIME_TABLE, "correlationId"): "correlation"}


def _answers(path) -> dict:
    with align.Profile(path) as p:
        view = align.OpView(p)
        items = view.op_items("attention")
        return {"kernels": align.kernel_summary(p, limit=0), "proj": align.Projection(p).gpu_proj_sum(),
                "nvtx": p.nvtx(), "kernel_rows": p.kernels(),
                "forwards": view.per_forward(items).families, "renames": p.schema.renames}


@pytest.mark.parametrize("engine", ["duckdb", "sqlite"])
def test_renamed_columns_read_through_one_entry(tmp_path, monkeypatch, engine):
    monkeypatch.setenv("ALIGN_ENGINE", engine)
    copy = tmp_path / "report.sqlite"
    shutil.copy(SRC, copy)
    with sqlite3.connect(copy) as c:
        for (table, ours), theirs in RENAMED.items():
            c.execute(f"ALTER TABLE {table} RENAME COLUMN {ours} TO {theirs}")
    for (table, ours), theirs in RENAMED.items():
        monkeypatch.setitem(schema.COLUMN_SPELLINGS, (table, ours), ("someOtherName", theirs))
    want, got = _answers(SRC), _answers(copy)
    assert want["renames"] == {}
    assert got["renames"] == {t: {o: n} for (t, o), n in RENAMED.items()}
    for key in ("kernels", "proj", "forwards"):
        pd.testing.assert_frame_equal(got[key], want[key])
    assert len(want["proj"]) and len(want["forwards"])
    # the raw tables gain the export's own spelling as a column; align's columns are unchanged
    for key in ("nvtx", "kernel_rows"):
        pd.testing.assert_frame_equal(got[key][list(want[key].columns)], want[key])


def test_an_export_spelled_as_align_reads_it_gets_no_view(tmp_path):
    with align.Profile(SRC) as p:
        assert p.schema.renames == {}
        assert not p.conn.execute("SELECT count(*) FROM temp.sqlite_master").fetchone()[0]
