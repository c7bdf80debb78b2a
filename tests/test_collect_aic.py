"""Our DSA perf files, read back by aiconfigurator 0.12.0's own loader and op evaluation: every
written row must come back unchanged (queried exactly at grid points, so nothing is interpolated)."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest

import os  # noqa: E402

if os.environ.get("ALIGN_REQUIRE_AIC") == "1":
    import aiconfigurator  # noqa: F401  (CI installs it: a missing one must fail, not skip)
pytest.importorskip("aiconfigurator", reason="aiconfigurator is not installed (pip install aiconfigurator==0.12.0)")
pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

from align.collect.aic import (AIC_VERSION, aiconfigurator_available, build_systems_root,  # noqa: E402
                               query_dsa_latency, query_mla_latency, query_moe_latency)

if not aiconfigurator_available():
    pytest.skip(f"the loader API used is aiconfigurator {AIC_VERSION}'s; another version is installed",
                allow_module_level=True)

VERSION_DIR = ("h200_sxm", "sparse_attention", "align_mock", "align")
META = """schema_version: 1
runtime:
  framework: TRTLLM-compatible (align_mock PyTorch)
  version: align
tables:
  dsa_context_module_perf:
    collector_ref: test
    collector_hash: test
    case_plan_hash: test
    collected_at: '2026-01-01'
    rows: {context}
    status: complete
  dsa_generation_module_perf:
    collector_ref: test
    collector_hash: test
    case_plan_hash: test
    collected_at: '2026-01-01'
    rows: {generation}
    status: complete
"""


def _rows(phase: str) -> pd.DataFrame:
    """A small grid, two points per axis, with a distinct latency per row (fp8_block GEMM rows too,
    to check the dtype slice is honoured)."""
    if phase == "context":
        keys = itertools.product(["bfloat16", "fp8_block"], [64, 128], [1, 4], [128, 1024], [0, 128])
    else:
        keys = ((g, h, b, 1, s) for g, h, b, s in itertools.product(["bfloat16"], [64, 128], [1, 8], [1024, 4096]))
    rows = [{"framework": "TRTLLM", "version": "align", "device": "NVIDIA H200", "op_name": f"dsa_{phase}_module",
             "kernel_source": "align_mock", "model": "deepseek-ai/DeepSeek-V3.2",
             "architecture": "DeepseekV32ForCausalLM", "mla_dtype": "bfloat16", "kv_cache_dtype": "bfloat16",
             "gemm_type": gemm, "num_heads": heads, "batch_size": batch, "isl": isl, "tp_size": 1, "step": step,
             "latency": round(0.25 + 0.0137 * i + 1e-6 * (i % 7), 7)}
            for i, (gemm, heads, batch, isl, step) in enumerate(keys)]
    df = pd.DataFrame(rows)
    return df.astype({c: "int64" for c in ("num_heads", "batch_size", "isl", "tp_size", "step")} | {"latency": "float64"})


@pytest.fixture
def collected(tmp_path: Path) -> tuple[Path, dict[str, pd.DataFrame]]:
    folder = tmp_path.joinpath("out", *VERSION_DIR)
    folder.mkdir(parents=True)
    frames = {phase: _rows(phase) for phase in ("context", "generation")}
    for phase, df in frames.items():
        df.to_parquet(folder / f"dsa_{phase}_module_perf.parquet", engine="pyarrow", compression="zstd", index=False)
    (folder / "collection_meta.yaml").write_text(META.format(**{p: len(df) for p, df in frames.items()}))
    return tmp_path / "out", frames


def test_aiconfigurator_returns_every_written_latency(collected, tmp_path):
    out, frames = collected
    root = build_systems_root(out, tmp_path / "systems")
    assert (root / "h200_sxm.yaml").is_file()
    for phase, df in frames.items():
        for r in df.itertuples():
            got = query_dsa_latency(root, phase, num_heads=r.num_heads, batch=r.batch_size, isl=r.isl, step=r.step,
                                    gemm_type=r.gemm_type)
            assert got == pytest.approx(r.latency, rel=1e-12, abs=0), (phase, r)


def test_off_grid_query_is_aiconfigurator_interpolating(collected, tmp_path):
    """Between two collected seq lengths the engine blends them: the number is computed, not a lookup
    that happens to match."""
    out, frames = collected
    root = build_systems_root(out, tmp_path / "systems")
    ctx = frames["context"]
    sel = ctx[(ctx.gemm_type == "bfloat16") & (ctx.num_heads == 128) & (ctx.batch_size == 4) & (ctx.step == 0)]
    lo, hi = sorted(sel.latency)
    mid = query_dsa_latency(root, "context", num_heads=128, batch=4, isl=576, step=0)
    assert lo < mid < hi


def test_tables_without_provenance_are_refused(collected, tmp_path):
    out, _ = collected
    meta = out.joinpath(*VERSION_DIR, "collection_meta.yaml")
    text = meta.read_text()
    meta.write_text(text[: text.index("  dsa_generation_module_perf:")])  # generation table not covered
    root = build_systems_root(out, tmp_path / "systems")
    with pytest.raises(ValueError, match="not covered by collection_meta.yaml"):
        query_dsa_latency(root, "context", num_heads=128, batch=1, isl=128, step=0)
    meta.unlink()
    with pytest.raises(FileNotFoundError, match="collection_meta.yaml"):
        build_systems_root(out, tmp_path / "systems2")


def test_a_folder_written_by_align_collect_loads_in_aiconfigurator(tmp_path):
    """End to end: align collect writes one real DSA case (CPU, V3.2 dims, TP 128) into the
    h200_sxm layout; aiconfigurator's engine returns the latency that was written."""
    import json
    import subprocess
    import sys

    from align.collect import writers
    from align.collect.aic import build_systems_root, query_dsa_latency

    out = tmp_path / "collected"
    env = {**os.environ, "ALIGN_STORE": str(tmp_path / "store")}
    r = subprocess.run([sys.executable, "-m", "align", "collect", "--op", "dsa", "--force", "--system", "h200_sxm",
                        "--phase", "generation", "--cases", "kv_len=64", "--cases", "batch=1", "--cases", "tp=128",
                        "--runs", "2", "--warmups", "1", "--out", str(out), "-f", "json"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    folder = out / "h200_sxm" / "sparse_attention" / "align_mock" / "align"
    assert "forced_without_passing_verdict: true" in (folder / "collection_meta.yaml").read_text()
    row = writers.read_rows(folder / "dsa_generation_module_perf.txt").iloc[0]
    root = build_systems_root(out, tmp_path / "systems")
    got = query_dsa_latency(root, "generation", num_heads=int(row["num_heads"]), batch=int(row["batch_size"]),
                            isl=int(row["isl"]), step=int(row["step"]))
    assert got == pytest.approx(float(row["latency"]), rel=1e-12)
    assert json.loads(r.stdout)["done"] == 1


COLLECTIONS = Path(__file__).resolve().parents[1] / "profiles" / "examples" / "collect"
GPU_COLLECTION = COLLECTIONS / "dsa"


def test_the_committed_h200_collection_loads_in_aiconfigurator(tmp_path):
    """The real H200 collection (profiles/examples/collect): every row of both phases comes back
    from aiconfigurator's engine as written."""
    from align.collect import writers

    root = build_systems_root(GPU_COLLECTION, tmp_path / "systems")
    folder = GPU_COLLECTION.joinpath(*VERSION_DIR)
    for phase in ("context", "generation"):
        txt = writers.read_rows(folder / f"dsa_{phase}_module_perf.txt")
        pq = pd.read_parquet(folder / f"dsa_{phase}_module_perf.parquet")
        assert len(txt) == len(pq) > 0
        for r in pq.itertuples():
            got = query_dsa_latency(root, phase, num_heads=r.num_heads, batch=r.batch_size, isl=r.isl, step=r.step)
            assert got == pytest.approx(r.latency, rel=1e-12, abs=0), (phase, r)


@pytest.mark.parametrize("op,phase,table,args", [
    ("dsa", "context", "sparse_attention/trtllm/1.3.0rc23/dsa_context_module_perf", (1024, 1, 8, 0)),
    ("dsa", "generation", "sparse_attention/trtllm/1.3.0rc23/dsa_generation_module_perf", (2048, 1, 8)),
    ("mla", "context", "mla/trtllm/1.3.0rc20/mla_context_module_perf", (1024, 1, 8)),
    ("mla", "generation", "mla/trtllm/1.3.0rc20/mla_generation_module_perf", (2048, 1, 8)),
    ("moe", "all", "moe/trtllm/1.3.0rc23/moe_perf", (16, 1, 8, "balanced")),
])
def test_rows_have_the_columns_of_aiconfigurators_own_tables(op, phase, table, args):
    """Our rows (perf-file base columns + the builder's fields + latency) have exactly the columns,
    in order, of the table aiconfigurator ships for the same op on an H200."""
    from align.collect import writers
    from align.collect.aic import _packaged_systems
    from align.collect.cases import op_spec

    shipped = pd.read_parquet(_packaged_systems() / "data" / "h200_sxm" / f"{table}.parquet")
    spec = op_spec(op)
    ours = writers.BASE_COLUMNS + list(spec.module().describe(phase, *args)) + ["latency"]
    assert ours == list(shipped.columns)
    assert spec.phases[phase].op_name == shipped["op_name"].iloc[0]
    assert spec.phases[phase].perf_file == table.rsplit("/", 1)[1] + ".txt"


def test_the_committed_h200_mla_and_moe_collections_load_in_aiconfigurator(tmp_path):
    """The real H200 MLA and MoE collections: aiconfigurator's MLAModule and MoE ops return every
    collected row as written (one systems root holding both families)."""
    both = tmp_path / "both"
    for op in ("mla", "moe"):
        shutil.copytree(COLLECTIONS / op / "h200_sxm", both / "h200_sxm", dirs_exist_ok=True)
    root = build_systems_root(both, tmp_path / "systems")
    folder = both / "h200_sxm" / "mla" / "align_mock" / "align"
    n = 0
    for phase in ("context", "generation"):
        for r in pd.read_parquet(folder / f"mla_{phase}_module_perf.parquet").itertuples():
            got = query_mla_latency(root, phase, num_heads=r.num_heads, batch=r.batch_size, isl=r.isl, step=r.step)
            assert got == pytest.approx(r.latency, rel=1e-12, abs=0), (phase, r)
            n += 1
    for r in pd.read_parquet(both / "h200_sxm" / "moe" / "align_mock" / "align" / "moe_perf.parquet").itertuples():
        got = query_moe_latency(root, num_tokens=r.num_tokens, hidden_size=r.hidden_size, inter_size=r.inter_size,
                                topk=r.topk, num_experts=r.num_experts, moe_tp_size=r.moe_tp_size,
                                moe_ep_size=r.moe_ep_size, distribution=r.distribution, moe_dtype=r.moe_dtype)
        assert got == pytest.approx(r.latency, rel=1e-12, abs=0), r
        n += 1
    assert n == 21 + 20

