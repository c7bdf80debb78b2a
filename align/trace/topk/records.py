"""One record per (request, layer, decode step), and the statistics of many: online (RunningStats) and recomputed from the files."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from align.trace.topk.config import OFFSET_BINS


# ---- records -------------------------------------------------------------------------------------
def build_record(request_id: int, layer: int, step: int, position: int, topk: Any, block_size: int, *,
                 scores: Any = None, n_masked: int = 0, t_ns: int | None = None,
                 step_ns: int | None = None) -> dict[str, Any]:
    """One trace record from the selected positions of one (request, layer, step): sorted positions,
    their KV blocks and where inside the blocks they fall. Pure, so tests can rebuild records."""
    pos = np.asarray(topk, dtype=np.int64).reshape(-1)
    order = np.argsort(pos, kind="stable")
    pos = pos[order]
    blocks, per_block = np.unique(pos // block_size, return_counts=True)
    offsets = pos % block_size
    hist = np.bincount(offsets * OFFSET_BINS // block_size, minlength=OFFSET_BINS)
    rec: dict[str, Any] = {
        "request_id": int(request_id), "layer": int(layer), "step": int(step), "position": int(position),
        "n_selected": int(pos.size), "topk": pos.tolist(),
    }
    if scores is not None:
        vals = np.asarray(scores, dtype=np.float64).reshape(-1)[order]
        rec["scores"] = [float(v) if np.isfinite(v) else None for v in vals]
    rec.update({
        "blocks": blocks.tolist(), "tokens_per_block": per_block.tolist(), "n_blocks": int(blocks.size),
        "offset_hist": hist.tolist(), "offset_mean": float(offsets.mean()) if pos.size else 0.0,
        "n_masked": int(n_masked), "t_ns": int(time.time_ns() if t_ns is None else t_ns),
    })
    if step_ns is not None:  # the decode step's wall time (the seed's C latency placeholder)
        rec["step_ns"] = int(step_ns)
    return rec


class RunningStats:
    """Online aggregates of written records; ``recompute_summary`` derives the same dict from a trace.

    Only integer sums are kept, and means are taken from them at the end, so the online and the
    recomputed values are bit-identical."""

    def __init__(self) -> None:
        self.layers: dict[int, dict[str, Any]] = {}
        self.requests: dict[int, dict[str, Any]] = {}
        self.blocks_hist: Counter[int] = Counter()

    def add(self, rec: Mapping[str, Any]) -> None:
        layer = self.layers.setdefault(rec["layer"], {"records": 0, "selected": 0, "unique_blocks": 0,
                                                      "max_unique_blocks": 0, "offset_hist": [0] * OFFSET_BINS})
        layer["records"] += 1
        layer["selected"] += rec["n_selected"]
        layer["unique_blocks"] += rec["n_blocks"]
        layer["max_unique_blocks"] = max(layer["max_unique_blocks"], rec["n_blocks"])
        layer["offset_hist"] = [a + b for a, b in zip(layer["offset_hist"], rec["offset_hist"], strict=True)]
        req = self.requests.get(rec["request_id"])
        if req is None:
            req = self.requests[rec["request_id"]] = {"records": 0, "layers": set(), "first_step": rec["step"],
                                                      "last_step": rec["step"], "max_position": rec["position"],
                                                      "selected": 0, "unique_blocks": 0}
        req["records"] += 1
        req["layers"].add(rec["layer"])
        req["first_step"] = min(req["first_step"], rec["step"])
        req["last_step"] = max(req["last_step"], rec["step"])
        req["max_position"] = max(req["max_position"], rec["position"])
        req["selected"] += rec["n_selected"]
        req["unique_blocks"] += rec["n_blocks"]
        self.blocks_hist[rec["n_blocks"]] += 1

    def to_dict(self) -> dict[str, Any]:
        per_layer = {}
        for k in sorted(self.layers):
            v = self.layers[k]
            per_layer[str(k)] = {**v, "mean_unique_blocks": _ratio(v["unique_blocks"], v["records"]),
                                 "mean_tokens_per_block": _ratio(v["selected"], v["unique_blocks"])}
        per_request = {}
        for k in sorted(self.requests):
            v = self.requests[k]
            per_request[str(k)] = {**v, "layers": sorted(v["layers"]),
                                   "mean_unique_blocks": _ratio(v["unique_blocks"], v["records"])}
        records = sum(v["records"] for v in self.layers.values())
        selected = sum(v["selected"] for v in self.layers.values())
        unique = sum(v["unique_blocks"] for v in self.layers.values())
        offsets = [sum(v["offset_hist"][i] for v in self.layers.values()) for i in range(OFFSET_BINS)]
        return {
            "records": records, "requests": len(self.requests), "selected": selected, "unique_blocks": unique,
            "mean_unique_blocks": _ratio(unique, records), "mean_tokens_per_block": _ratio(selected, unique),
            "offset_hist": offsets,
            "unique_blocks_hist": {str(n): self.blocks_hist[n] for n in sorted(self.blocks_hist)},
            "per_layer": per_layer, "per_request": per_request,
        }


def _ratio(num: int, den: int) -> float:
    return int(num) / int(den) if den else 0.0


def recompute_summary(df: pd.DataFrame) -> dict[str, Any]:
    """The ``stats`` part of ``summary.json``, computed again from the records (pandas, not the
    online accumulator), so a test can check the online summary against the files."""
    if df.empty:
        return RunningStats().to_dict()
    per_layer: dict[str, Any] = {}
    for layer, g in df.groupby("layer", sort=True):
        records, selected, unique = len(g), int(g["n_selected"].sum()), int(g["n_blocks"].sum())
        per_layer[str(int(layer))] = {
            "records": records, "selected": selected, "unique_blocks": unique,
            "max_unique_blocks": int(g["n_blocks"].max()), "offset_hist": _sum_lists(g["offset_hist"]),
            "mean_unique_blocks": _ratio(unique, records), "mean_tokens_per_block": _ratio(selected, unique),
        }
    per_request: dict[str, Any] = {}
    for rid, g in df.groupby("request_id", sort=True):
        records, unique = len(g), int(g["n_blocks"].sum())
        per_request[str(int(rid))] = {
            "records": records, "layers": sorted(int(x) for x in g["layer"].unique()),
            "first_step": int(g["step"].min()), "last_step": int(g["step"].max()),
            "max_position": int(g["position"].max()), "selected": int(g["n_selected"].sum()),
            "unique_blocks": unique, "mean_unique_blocks": _ratio(unique, records),
        }
    records, selected, unique = len(df), int(df["n_selected"].sum()), int(df["n_blocks"].sum())
    hist = df["n_blocks"].astype(int).value_counts()
    return {
        "records": records, "requests": int(df["request_id"].nunique()), "selected": selected,
        "unique_blocks": unique, "mean_unique_blocks": _ratio(unique, records),
        "mean_tokens_per_block": _ratio(selected, unique), "offset_hist": _sum_lists(df["offset_hist"]),
        "unique_blocks_hist": {str(int(n)): int(hist[n]) for n in sorted(hist.index)},
        "per_layer": per_layer, "per_request": per_request,
    }


def _sum_lists(col: pd.Series) -> list[int]:
    return [int(x) for x in np.sum(np.array(col.tolist(), dtype=np.int64), axis=0)]
