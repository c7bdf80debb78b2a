"""align bench on the CPU: the numeric comparison of decoder submodule and mock layer (timing needs a GPU)."""

from __future__ import annotations

import json

import pytest

from .conftest import run_align

pytest.importorskip("torch")


@pytest.mark.parametrize("op,phase,extra", [
    ("dsa", "context", ["--seq", "24", "--kv-len", "8"]),
    ("dsa", "generation", ["--batch", "2", "--kv-len", "40", "--tp", "2"]),
    ("mla", "generation", ["--batch", "2", "--kv-len", "16"]),
    ("moe", "context", ["--seq", "16"]),
])
def test_check_only_on_cpu(op, phase, extra):
    r = run_align("bench", "--op", op, "--phase", phase, "--config", "small", "--dtype", "float32", "--check-only",
                  *extra, "--format", "json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["outputs_match"] and data["max_abs_diff"] <= 1e-5 and data["diff_pct"] is None
    assert data["shape"]["batch"] >= 1


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the answer on a machine without CUDA")
def test_timing_needs_a_gpu():
    r = run_align("bench", "--op", "dsa", "--phase", "context", "--config", "small")
    assert r.returncode == 2 and "needs a CUDA GPU" in r.stderr and "--check-only" in r.stderr


def test_bad_input_is_exit_2():
    r = run_align("bench", "--op", "nope", "--phase", "context", "--config", "small", "--check-only")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = run_align("bench", "--op", "dsa", "--phase", "context", "--tp", "3", "--config", "small", "--check-only")
    assert r.returncode == 2 and "Traceback" not in r.stderr
