"""The DuckDB and SQLite engines give the same answers (the fast path is not a different algorithm)."""

from __future__ import annotations

import pandas as pd
import pytest

import align
from align.attribute.projection import Projection
from align.attribute.ops import OpView
from align.stats.kernels import kernel_summary

from .conftest import ROOT
from .test_examples import EXAMPLES

duckdb_engine = pytest.importorskip("duckdb_extension_sqlite_scanner", reason="DuckDB's SQLite reader not installed")


def _results(path, monkeypatch, engine):
    monkeypatch.setenv("ALIGN_ENGINE", engine)
    with align.load(path) as p:
        assert p.engine.name == ("sqlite" if engine == "sqlite" else "duckdb")
        proj = Projection(p)
        view = OpView(p)
        fw = view.per_forward(view.op_items("attention"))
        return (kernel_summary(p), kernel_summary(p, by_launch=True, name="short"), proj.gpu_proj_sum(),
                proj.kern_sum(), fw.families, view.overview())


@pytest.mark.parametrize("example", EXAMPLES + [ROOT / "tests/data/rounding.sqlite"], ids=lambda p: p.name)
def test_same_results(example, monkeypatch):
    a = _results(example, monkeypatch, "duckdb")
    b = _results(example, monkeypatch, "sqlite")
    for x, y in zip(a, b):
        pd.testing.assert_frame_equal(x.reset_index(drop=True), y.reset_index(drop=True), check_dtype=False)
