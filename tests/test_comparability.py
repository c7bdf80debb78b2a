"""Comparability before comparison: what each side ran on, read from the exports. The cross-GPU pair
is real (the attention mock captured on an H100, transformers' Llama on an H200); versions that
differ are planted in a copy of a real export (UPDATE of its metadata rows)."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest

from align.compare.comparability import MIN_FORWARDS, environment
from align.compare.diff import compare
from align.loader import load

from .conftest import ROOT, run_align

EX = ROOT / "profiles" / "examples"


def test_environment_is_read_from_the_export():
    with load(EX / "hf_dsa_e2e") as p:
        env = environment(p)
    assert (env.gpu, env.sm_count, env.max_clock_mhz) == ("NVIDIA H200", 132, 1980.0)
    assert (env.driver, env.cuda_driver, env.nsys) == ("580.159.04", "13000", "2025.3.2.0")
    assert env.processes == 1 and env.gpus_used == 1
    with load(EX / "hf_dsa_e2e_ranks") as p:
        both, one = environment(p), environment(p, "deviceId = 1")
    assert both.gpus_used == 2 and one.gpus_used == 1 and both.processes == 3  # the launcher and two ranks


def test_same_machine_pair_scores_full_and_has_no_headline():
    c = compare(EX / "hf_dsa_mock", EX / "hf_dsa_e2e", op="dsa").comparability
    assert c.warnings == [] and c.score == c.checks and c.headline() == ""
    assert "NVIDIA H200, 132 SMs, driver 580.159.04, CUDA 13.0, nsys 2025.3.2.0" in c.line()
    assert all(min(m, e) >= MIN_FORWARDS for m, e in c.forwards.values())


def test_a_verdict_across_gpu_models_says_so_first(tmp_path):
    args = ["verdict", "--op", "attention", "--mock", str(EX / "attn_mock"), "--e2e", str(EX / "hf_llama_e2e"),
            "--store", str(tmp_path)]
    table = run_align(*args)
    assert table.returncode in (0, 1)
    assert table.stdout.splitlines()[0].startswith("DIFFERENT GPUs: mock on NVIDIA H100 80GB HBM3")
    assert "comparability: WARNING GPU differs: mock NVIDIA H100 80GB HBM3, E2E NVIDIA H200" in table.stderr
    js = json.loads(run_align(*args, "-f", "json").stdout)
    assert next(iter(js)) == "headline" and "NVIDIA H200" in js["headline"]
    assert js["comparability"]["score"] < js["comparability"]["checks"]
    md = run_align(*args, "-f", "md").stdout
    assert md.splitlines()[2].startswith("**DIFFERENT GPUs")
    html = tmp_path / "r.html"
    r = run_align("report", str(EX / "attn_mock"), str(EX / "hf_llama_e2e"), "--op", "attention", "-o", str(html))
    assert r.returncode == 0, r.stderr
    assert "DIFFERENT GPUs" in html.read_text()


@pytest.fixture
def other_versions(tmp_path):
    """hf_dsa_e2e's export as if exported by another nsys on another driver."""
    db = tmp_path / "report.sqlite"
    shutil.copy(EX / "hf_dsa_e2e" / "report.sqlite", db)
    con = sqlite3.connect(db)
    con.execute("UPDATE META_DATA_EXPORT SET value = '2024.6.1.90' WHERE name = 'EXPORT_PRODUCT_VERSION'")
    con.execute("UPDATE TARGET_INFO_SYSTEM_ENV SET value = '570.86.15' WHERE name = 'NvDriverVersion'")
    con.execute("UPDATE TARGET_INFO_SYSTEM_ENV SET value = '12080' WHERE name = 'CudaDriverVersion'")
    con.commit()
    con.close()
    return db


def test_versions_that_differ_are_each_named(other_versions):
    c = compare(EX / "hf_dsa_mock", other_versions, op="dsa").comparability
    assert c.headline() == ""  # the same GPU model
    assert set(c.warnings) == {"driver differs: mock 580.159.04, E2E 570.86.15",
                               "CUDA driver differs: mock 13.0, E2E 12.8",
                               "nsys differs: mock 2025.3.2.0, E2E 2024.6.1.90"}
    assert c.score == c.checks - 3


def test_few_forwards_are_flagged():
    c = compare(EX / "hf_dsa_mock", EX / "hf_dsa_e2e_ranks", op="dsa").comparability
    few = [w for w in c.warnings if "fewer than" in w]
    assert few and all(w.startswith("context (rank") for w in few)  # two prefills per rank
