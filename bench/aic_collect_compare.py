#!/usr/bin/env python3
"""Ratio of an ``align collect`` DSA table to the DSA module latencies aiconfigurator ships.

aiconfigurator's rows were collected from TensorRT-LLM's own DeepSeek-V3.2 attention module on an
H200 (``aiconfigurator_core/systems/data/h200_sxm/sparse_attention/trtllm/<version>/``, installed
with ``pip install '.[aic]'``); ours from the align_mock PyTorch DSA module. Rows are matched on
the perf files' own keys: local heads, batch, isl, step (context: isl = seq, step = prefix;
generation: isl = 1, step = kv length), bf16 GEMMs and KV cache. A ratio above 1 means the mock is
slower than TensorRT-LLM at that shape.

    python bench/aic_collect_compare.py COLLECT_DIR [--aic-data DIR] [--version 1.3.0rc23] [--format md|csv]
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pandas as pd

KEYS = ["num_heads", "batch_size", "isl", "step"]
PHASES = ("context", "generation")


def installed_aic_data() -> Path | None:
    spec = importlib.util.find_spec("aiconfigurator_core")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "systems" / "data"


def compare(collect_dir: Path, aic_data: Path, version: str) -> pd.DataFrame:
    frames = []
    for phase in PHASES:
        name = f"dsa_{phase}_module_perf.parquet"
        ours = list(collect_dir.rglob(name))
        theirs = list(aic_data.glob(f"*/sparse_attention/trtllm/{version}/{name}"))
        if not ours:
            continue
        if not theirs:
            raise SystemExit(f"no {name} for trtllm {version} under {aic_data}")
        mine = pd.read_parquet(ours[0])
        system = ours[0].relative_to(collect_dir).parts[0]
        pick = [p for p in theirs if p.relative_to(aic_data).parts[0] == system] or theirs
        ref = pd.read_parquet(pick[0])
        bf16 = (ref["gemm_type"] == "bfloat16") & (ref["kv_cache_dtype"] == "bfloat16")
        ref = ref[bf16][KEYS + ["latency", "device"]].rename(columns={"latency": "aic_ms", "device": "aic_device"})
        cols = KEYS + ["latency", "device"] + (["power"] if "power" in mine else [])
        df = mine[cols].rename(columns={"latency": "align_ms"}).merge(ref, on=KEYS, how="left")
        df.insert(0, "phase", phase)
        frames.append(df)
    if not frames:
        raise SystemExit(f"no dsa_*_module_perf.parquet under {collect_dir}")
    out = pd.concat(frames, ignore_index=True)
    out["align/aic"] = out["align_ms"] / out["aic_ms"]
    return out.sort_values(["phase", "num_heads", "batch_size", "isl", "step"]).reset_index(drop=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("collect_dir", type=Path)
    ap.add_argument("--aic-data", type=Path, default=None, help="aiconfigurator's systems/data folder")
    ap.add_argument("--version", default="1.3.0rc23", help="TensorRT-LLM version folder of aiconfigurator's data")
    ap.add_argument("--format", choices=("md", "csv"), default="md")
    args = ap.parse_args()
    aic = args.aic_data or installed_aic_data()
    if aic is None:
        raise SystemExit("aiconfigurator_core not installed: pip install '.[aic]' or pass --aic-data DIR")
    df = compare(args.collect_dir, aic, args.version)
    if args.format == "csv":
        print(df.to_csv(index=False), end="")
        return
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    ratios = df["align/aic"].dropna()
    if len(ratios):
        for phase, part in df.groupby("phase"):
            r = part["align/aic"].dropna()
            print(f"{phase}: {len(r)} shapes matched, align/aic median {r.median():.3g} (min {r.min():.3g}, max {r.max():.3g})")


if __name__ == "__main__":
    main()
