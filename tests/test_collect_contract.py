"""The collector module `align collect --export-module` writes, driven as seed 001 describes
aiconfigurator's collect.py (import by path, get_func, run_func(*case) in one worker process per
device pulling from a shared queue): its rows are align collect's rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from align.collect import writers
from align.collect.contract import phase_cases, split_case, spec_for
from align.errors import AlignError

from .conftest import PROGRAMS, run_align
from .test_collect import _tables

pytest.importorskip("torch")

def test_cases_are_positional_in_run_order_with_the_perf_file_last():
    spec = spec_for("dsa")
    ctx = phase_cases("dsa", "context")
    assert all(len(c) == 6 and c[4] == "context" and c[5] == "dsa_context_module_perf.txt" for c in ctx)
    assert all(c[0] * c[1] <= 65536 for c in ctx)  # the seed's b*s cap
    assert split_case(spec, ctx[0]) == ("context", tuple(ctx[0][:4]), "dsa_context_module_perf.txt", None)
    assert split_case(spec, [*ctx[0], "cuda:1"])[3] == "cuda:1"
    with pytest.raises(AlignError, match="takes 3 arguments"):
        split_case(spec, [1, 2, "generation", "x.txt"])


def test_the_exported_module_run_as_collect_py_gives_align_collects_rows(tmp_path):
    r = run_align("collect", "--op", "standin", "--export-module", str(tmp_path / "collector"), "-f", "json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    module = tmp_path / "collector" / "collect_standin.py"
    assert out["module"] == str(module) and '"run_func": "run_standin"' in out["registration"]
    text = module.read_text()
    assert "def get_context_standin_test_cases" in text and "def run_standin(*case" in text
    work = tmp_path / "work"
    work.mkdir()
    env = {"ALIGN_COLLECT_RUNS": "2", "ALIGN_COLLECT_WARMUPS": "1"}
    d = subprocess.run([sys.executable, str(PROGRAMS / "collect_py_driver.py"), str(module), "standin", "cpu"], cwd=work,
                       capture_output=True, text=True, timeout=600, env={**os.environ, **env})
    assert d.returncode == 0, d.stderr[-3000:]
    ours = tmp_path / "ours"
    r = run_align("collect", "--op", "standin", "--runs", "2", "--warmups", "1", "--out", str(ours), "-f", "json")
    assert r.returncode == 0, r.stderr
    for name in ("standin_context_perf.txt", "standin_generation_perf.txt"):
        theirs = writers.read_rows(work / name)
        mine = writers.read_rows(_tables(ours, "gemm") / name)
        assert list(theirs.columns) == list(mine.columns)
        keys = [c for c in mine.columns if c != "latency"]
        sort = lambda df: df[keys].astype(str).sort_values(keys).reset_index(drop=True)  # noqa: E731
        pd.testing.assert_frame_equal(sort(theirs), sort(mine))
        assert len(theirs) == len(phase_cases("standin", name.split("_")[1]))
        assert (theirs["latency"].astype(float) > 0).all()


def test_the_exported_module_runs_without_a_device_on_a_cpu_machine(tmp_path):
    """run_standin(*case) with no device, as aiconfigurator's collect.py may call it: on a machine
    without CUDA the case runs on the CPU; a CUDA device asked for there is one clear error, not
    torch's AttributeError (issue 29 item 2)."""
    r = run_align("collect", "--op", "standin", "--export-module", str(tmp_path / "collector"), "-f", "json")
    assert r.returncode == 0, r.stderr
    module = tmp_path / "collector" / "collect_standin.py"
    work = tmp_path / "work"
    work.mkdir()
    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('m', {str(module)!r})\n"
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
            "case = m.get_context_standin_test_cases()[0]\n"
            "m.run_standin(*case)\n"
            "try:\n"
            "    m.run_standin(*case, 'cuda:0')\n"
            "except Exception as exc:\n"
            "    print(type(exc).__name__, exc)\n")
    env = {**os.environ, "ALIGN_COLLECT_RUNS": "2", "ALIGN_COLLECT_WARMUPS": "1", "CUDA_VISIBLE_DEVICES": ""}
    d = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, text=True, timeout=600, env=env)
    assert d.returncode == 0, d.stderr[-3000:]
    rows = writers.read_rows(work / "standin_context_perf.txt")
    assert len(rows) == 1 and float(rows["latency"].iloc[0]) > 0
    assert d.stdout.startswith("AlignError cuda:0 asked for, but this machine has no CUDA device"), d.stdout
