#!/usr/bin/env python3
"""Compare align bench results of the DSA mock with the DSA module latencies aiconfigurator ships.

aiconfigurator's tables come from TensorRT-LLM's own DeepSeek-V3.2 attention module on an H200
(``aiconfigurator_core/systems/data/h200_sxm/sparse_attention/trtllm/<version>/dsa_*_module_perf.parquet``
in the ``aiconfigurator-core`` wheel, 0.12.0). Rows are matched on local heads, batch, isl and step
(context: isl = seq, step = prefix length; generation: isl = 1, step = kv_len). Reading parquet
needs pyarrow.

    python bench/aic_compare.py BENCH_JSON_DIR AIC_DATA_DIR [--version 1.3.0rc23]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bench_dir", type=Path)
    ap.add_argument("aic_dir", type=Path, help="folder holding the trtllm/<version>/dsa_*_module_perf.parquet files")
    ap.add_argument("--version", default="1.3.0rc23")
    args = ap.parse_args()
    tables = {}
    for phase in ("context", "generation"):
        found = list(args.aic_dir.rglob(f"trtllm/{args.version}/dsa_{phase}_module_perf.parquet"))
        if not found:
            raise SystemExit(f"no dsa_{phase}_module_perf.parquet for {args.version} under {args.aic_dir}")
        tables[phase] = pd.read_parquet(found[0])
    rows = []
    for f in sorted(args.bench_dir.glob("*.json")):
        r = json.loads(f.read_text())
        if r.get("diff_pct") is None:
            continue
        s = r["shape"]
        phase = r["phase"]
        isl = s["seq"] if phase == "context" else 1
        step = s.get("kv_len", 0)
        t = tables[phase]
        hit = t[(t["num_heads"] == s["local_heads"]) & (t["batch_size"] == s["batch"]) & (t["isl"] == isl)
                & (t["step"] == step) & (t["gemm_type"] == "bfloat16") & (t["kv_cache_dtype"] == "bfloat16")]
        aic = float(hit["latency"].iloc[0]) if len(hit) else None
        rows.append({"shape": f.stem, "device": r["device"], "local_heads": s["local_heads"], "batch": s["batch"],
                     "isl": isl, "step": step, "mock_ms": r["mock"]["median_ms"],
                     "submodule_ms": r["submodule"]["median_ms"], "diff_pct": r["diff_pct"],
                     "graph": r["mock"]["cuda_graph"], f"aic_trtllm_{args.version}_ms": aic,
                     "mock/aic": (r["mock"]["median_ms"] / aic) if aic else None})
    df = pd.DataFrame(rows)
    print(df.to_markdown(index=False, floatfmt=".4g") if hasattr(df, "to_markdown") else df.to_string(index=False))


if __name__ == "__main__":
    main()
