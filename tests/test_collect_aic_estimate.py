"""aiconfigurator 0.12's own whole-model estimate (``cli estimate``) on the committed H200 DSA and MLA
collections (DeepSeek-V3.2 and V3): it runs offline, prints latencies, and they move with our rows
(x100 on our tables multiplies the context share of TTFT by 100), so the estimate reads them, not
aiconfigurator's."""

from __future__ import annotations

import os

import pytest

if os.environ.get("ALIGN_REQUIRE_AIC") == "1":
    import aiconfigurator  # noqa: F401  (CI installs it: a missing one must fail, not skip)
pytest.importorskip("aiconfigurator", reason="aiconfigurator is not installed (pip install aiconfigurator==0.12.0)")
pd = pytest.importorskip("pandas")

from align.collect.aic import AIC_VERSION, aiconfigurator_available  # noqa: E402
from align.collect.aic_estimate import estimate  # noqa: E402

from .conftest import ROOT, run_align  # noqa: E402

if not aiconfigurator_available():
    pytest.skip(f"the CLI used is aiconfigurator {AIC_VERSION}'s; another version is installed", allow_module_level=True)

COLLECT = ROOT / "profiles" / "examples" / "collect"
# op -> (its committed collection, the tables' folder in it, the context table, the model estimated)
OPS = {"dsa": (COLLECT / "dsa", "sparse_attention", "dsa_context_module_perf.parquet", "deepseek-ai/DeepSeek-V3.2"),
       "mla": (COLLECT / "mla", "mla", "mla_context_module_perf.parquet", "deepseek-ai/DeepSeek-V3")}


@pytest.mark.parametrize("op", sorted(OPS))
def test_the_estimate_reads_our_rows(tmp_path, op):
    folder, family, context, _ = OPS[op]
    tables = folder / "h200_sxm" / family / "align_mock" / "align"
    ours = estimate(tables, op, tmp_path / "a")
    slowed = estimate(tables, op, tmp_path / "b", scale=100)
    assert ours["ttft_ms"] > 0 and ours["tpot_ms"] > 0 and ours["request_latency_ms"] > ours["ttft_ms"]
    # context at ISL 4096, batch 1, TP 8 (16 local heads): 61 layers of our row, which x100 adds 99 times over
    row = pd.read_parquet(tables / context)
    one = row[(row["num_heads"] == 16) & (row["batch_size"] == 1) & (row["isl"] == 4096) & (row["step"] == 0)]
    assert len(one) == 1
    assert slowed["ttft_ms"] - ours["ttft_ms"] == pytest.approx(61 * 99 * float(one["latency"].iloc[0]), rel=1e-3)
    assert slowed["tpot_ms"] > ours["tpot_ms"]  # the generation rows are read too
    # every file but ours is aiconfigurator's own, linked
    shipped = tmp_path / "a" / "systems" / "data" / "h200_sxm" / family / "trtllm" / ours["version"]
    assert not (shipped / context).is_symlink()
    assert (tmp_path / "a" / "systems" / "h200_sxm.yaml").is_symlink()


@pytest.mark.parametrize("op", sorted(OPS))
def test_check_runs_the_estimate(tmp_path, op):
    import json

    r = run_align("collect", "--op", op, "--out", str(OPS[op][0]), "--check", "--aic", str(tmp_path), "-f", "json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["passed"] and rep["aic"]["ttft_ms"] > 0 and rep["aic"]["model"] == OPS[op][3]
