"""Launch shapes per kernel family, mock against E2E: the aligned real pairs launch the mock's shapes
in the E2E run too, the planted 4x-prompt mocks are named with the grid that grew, and each launch's
configuration is nsys's own (2022.4's gputrace of the same committed export)."""

from __future__ import annotations

import io
import subprocess

import pandas as pd
import pytest

from align.compare.diff import compare
from align.compare.shapes import _cause
from align.compare.verdict import verdict

from .conftest import ROOT

EX = ROOT / "profiles" / "examples"


@pytest.mark.parametrize("mock,e2e,op", [("hf_dsa_mock", "hf_dsa_e2e", "dsa"), ("hf_llama_mock", "hf_llama_e2e", "attention"),
                                         ("attn_mock", "llama_e2e", "attention")])
def test_aligned_pairs_launch_the_same_shapes(mock, e2e, op):
    t = compare(EX / mock, EX / e2e, op=op).shapes
    assert len(t) > 10 and t["same"].all(), t[~t["same"]]


def test_a_mock_with_4x_the_prompt_is_named_by_its_grids():
    v = verdict(EX / "hf_llama_mock_shape", EX / "hf_llama_e2e", op="attention")
    assert set(v.checks.loc[~v.checks["passed"], "name"]) == {"latency", "shapes"}
    t = v.comparison.shapes.set_index(["phase", "family"])
    mul = t.loc[("context", "elementwise_kernel:MulFunctor")]
    assert not mul["same"] and mul["cause"] == ("another problem size (batch, sequence or heads): "
                                                "grid x 4096/16384 vs 1024/4096")
    sdpa = t.loc[("generation", "cudnn_sdpa_sm80_flash_fprop")]  # decode over 4x the cache
    assert sdpa["cause"].endswith("grid x 16 vs 4 (4x)")
    why = v.checks.set_index("name").loc["latency", "reason"]
    assert "launch shapes differ in 7 families: context:nvjet_tst_gemm (another kernel instantiation" in why


def test_token_kernels_give_the_tokens():
    """A kernel launching one block per query token (collect.toml token_kernels) names the tokens."""
    cfg = (512, 1, 1, 40, 0, 0)
    assert _cause([((8192, 1, 1), cfg)], [((2048, 1, 1), cfg)], token_kernel=True) == (
        "another problem size: query tokens per launch 8192 (mock) vs 2048 (E2E), one block per token")
    other = (256, 1, 1, 40, 0, 0)
    assert _cause([((4, 1, 1), other)], [((4, 1, 1), cfg)], token_kernel=True).startswith(
        "another kernel configuration (tile choice): block x 256 vs 512")


@pytest.mark.nsys
def test_launch_configurations_are_nsys_own(nsys, tmp_path):
    if not nsys.version.startswith("2022"):
        pytest.skip("the oracle is 2022.x's gputrace report")
    db = tmp_path / "report.sqlite"
    db.write_bytes((EX / "hf_llama_mock_shape" / "report.sqlite").read_bytes())
    out = subprocess.run([nsys.path, "stats", "--report", "gputrace", "--format", "csv", str(db)],
                         capture_output=True, text=True, timeout=300)
    theirs = pd.read_csv(io.StringIO(out.stdout[out.stdout.index("Start (ns),"):]))
    theirs = theirs[theirs["GrdX"].notna()].set_index("Start (ns)")
    cmp = compare(db, EX / "hf_llama_e2e", op="attention")
    items = cmp.mock.items[cmp.mock.items["forward"] >= 0]
    ours = cmp.mock.view.launch_details(items)
    starts = items.loc[ours.index, "start"].to_numpy()
    t = theirs.loc[starts]
    assert len(ours) == len(t) > 100
    for a, b in (("gridX", "GrdX"), ("gridY", "GrdY"), ("gridZ", "GrdZ"), ("blockX", "BlkX"), ("blockY", "BlkY"),
                 ("blockZ", "BlkZ"), ("registersPerThread", "Reg/Trd")):
        assert (ours[a].to_numpy() == t[b].to_numpy()).all(), a
    for a, b in (("staticSharedMemory", "StcSMem (MB)"), ("dynamicSharedMemory", "DymSMem (MB)")):
        mb = ours[a].to_numpy(float) / 1e6
        mib = ours[a].to_numpy(float) / 2**20
        assert ((abs(mb - t[b].to_numpy()) < 6e-4) | (abs(mib - t[b].to_numpy()) < 6e-4)).all(), a
