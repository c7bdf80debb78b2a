#!/usr/bin/env python3
"""Ratio of an ``align collect`` table (DSA, MLA or MoE) to the latencies aiconfigurator ships.

aiconfigurator's rows were collected from TensorRT-LLM's own modules on an H200
(``aiconfigurator_core/systems/data/h200_sxm/<family>/trtllm/<version>/``, installed with
``pip install '.[aic]'``); ours from the align_mock PyTorch ops. Rows are matched on the perf
files' own keys: for attention modules local heads, batch, isl, step (context: isl = seq, step =
prefix; generation: isl = 1, step = kv length) with bf16 GEMMs and KV cache; for MoE tokens,
dims, top-k, experts, TP, EP, distribution and dtype. A ratio above 1 means the mock is slower
than TensorRT-LLM at that shape. The newest aiconfigurator version holding the table is used
unless ``--version`` names one.

    python bench/aic_collect_compare.py COLLECT_DIR [--aic-data DIR] [--version V] [--format md|csv]
"""

from __future__ import annotations

import argparse
import importlib.util
import re
from pathlib import Path

import pandas as pd

ATTN_KEYS = ["num_heads", "batch_size", "isl", "step"]
MOE_KEYS = ["moe_dtype", "num_tokens", "hidden_size", "inter_size", "topk", "num_experts", "moe_tp_size",
            "moe_ep_size", "distribution"]
TABLES = {  # table stem -> (family, phase, keys)
    "dsa_context_module_perf": ("sparse_attention", "context", ATTN_KEYS),
    "dsa_generation_module_perf": ("sparse_attention", "generation", ATTN_KEYS),
    "mla_context_module_perf": ("mla", "context", ATTN_KEYS),
    "mla_generation_module_perf": ("mla", "generation", ATTN_KEYS),
    "moe_perf": ("moe", "all", MOE_KEYS),
}


def installed_aic_data() -> Path | None:
    spec = importlib.util.find_spec("aiconfigurator_core")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "systems" / "data"


def _version_key(v: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"[.rc]+", v) if p)


def _references(aic_data: Path, system: str, family: str, stem: str, version: str | None) -> list[Path]:
    """aiconfigurator's tables of that name, newest version first (only ``version`` if given)."""
    folders = sorted((p for p in (aic_data / system / family / "trtllm").glob("*") if (p / f"{stem}.parquet").is_file()),
                     key=lambda p: _version_key(p.name), reverse=True)
    if version:
        folders = [p for p in folders if p.name == version]
    if not folders:
        raise SystemExit(f"no {stem}.parquet for {system}/{family}/trtllm/{version or '*'} under {aic_data}")
    return [p / f"{stem}.parquet" for p in folders]


def _match(mine: pd.DataFrame, path: Path, keys: list[str]) -> pd.DataFrame:
    ref = pd.read_parquet(path)
    if "gemm_type" in ref:
        ref = ref[(ref["gemm_type"] == "bfloat16") & (ref["kv_cache_dtype"] == "bfloat16")]
    ref = ref.groupby(keys, as_index=False)["latency"].min()  # several kernel sources: the fastest
    cols = keys + ["latency"] + (["power"] if "power" in mine else [])
    df = mine[cols].rename(columns={"latency": "align_ms"})
    return df.merge(ref.rename(columns={"latency": "aic_ms"}), on=keys, how="left")


def compare(collect_dir: Path, aic_data: Path, version: str | None = None) -> pd.DataFrame:
    """Per table, the newest aiconfigurator version that holds any of our shapes (our MoE dims, V3's,
    are only in older MoE tables)."""
    frames = []
    for stem, (family, phase, keys) in TABLES.items():
        for ours in sorted(collect_dir.rglob(f"{stem}.parquet")):
            system = ours.relative_to(collect_dir).parts[0]
            mine = pd.read_parquet(ours)
            paths = _references(aic_data, system, family, stem, version)
            for path in paths:
                df = _match(mine, path, keys)
                if df["aic_ms"].notna().any():
                    break
            df.insert(0, "table", stem)
            df.insert(1, "aic_version", path.parent.name)
            frames.append(df)
    if not frames:
        raise SystemExit(f"no collected tables ({', '.join(TABLES)}) under {collect_dir}")
    out = pd.concat(frames, ignore_index=True)
    out["align/aic"] = out["align_ms"] / out["aic_ms"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("collect_dir", type=Path)
    ap.add_argument("--aic-data", type=Path, default=None, help="aiconfigurator's systems/data folder")
    ap.add_argument("--version", default=None, help="TensorRT-LLM version folder of aiconfigurator's data (default: newest)")
    ap.add_argument("--format", choices=("md", "csv"), default="md")
    args = ap.parse_args()
    aic = args.aic_data or installed_aic_data()
    if aic is None:
        raise SystemExit("aiconfigurator_core not installed: pip install '.[aic]' or pass --aic-data DIR")
    df = compare(args.collect_dir, aic, args.version)
    if args.format == "csv":
        print(df.to_csv(index=False), end="")
        return
    for table, part in df.groupby("table", sort=False):
        print(part.dropna(axis=1, how="all").to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        r = part["align/aic"].dropna()
        if len(r):
            print(f"{table}: {len(r)} of {len(part)} shapes matched, align/aic median {r.median():.3g} "
                  f"(min {r.min():.3g}, max {r.max():.3g})\n")
        else:
            print(f"{table}: no shape matched aiconfigurator's rows\n")


if __name__ == "__main__":
    main()
