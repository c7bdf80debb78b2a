"""Mock vs E2E, per kernel family per forward: the side-by-side table behind ``align diff``.

Each side is cut to the op (registry NVTX patterns, or ``mock_range``/``e2e_range``; a mock that
marks its iterations with the convention in verdict.toml needs neither) so the mock's input
preparation outside its op region never counts as the op. Then per phase and kernel family: count
and median latency per forward on each side, their ratio and a status.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from align.errors import AlignError
from align.ops.attribute import Forwards, OpView
from align.ops.registry import Registry, load_registry
from align.profile.load import load

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

CONFIG_FILE = "align-verdict.toml"
STATUSES = ("match", "missing", "extra", "count", "slower", "faster")


def load_config(path: str | os.PathLike | None = None) -> dict:
    """Built-in thresholds (align/data/verdict.toml) overridden by ``path`` or ./align-verdict.toml."""
    cfg = tomllib.loads(resources.files("align").joinpath("data/verdict.toml").read_text())
    chosen = path or (CONFIG_FILE if Path(CONFIG_FILE).exists() else None)
    if chosen:
        try:
            user = tomllib.loads(Path(chosen).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise AlignError(f"cannot read config {chosen}: {exc}", "pass a TOML file shaped like align/data/verdict.toml")
        for section, values in user.items():
            if section not in cfg or not isinstance(values, dict):
                raise AlignError(f"unknown section [{section}] in {chosen}", f"use {', '.join(cfg)}")
            unknown = set(values) - set(cfg[section])
            if unknown and section != "e2e":  # [e2e] is keyed by op name: any op may be added
                raise AlignError(f"unknown key(s) {', '.join(sorted(unknown))} in [{section}] of {chosen}",
                                 f"known: {', '.join(cfg[section])}")
            cfg[section].update(values)
    return cfg


@dataclass
class Side:
    """One profile cut to the op: its per-forward figures and the kernel sequence of each forward."""

    label: str
    path: str
    view: OpView
    items: pd.DataFrame
    forwards: Forwards
    range_used: str


def op_side(ref, label: str, op: str | None, range_pattern: str | None, phase: str | None, skip: int,
            registry: Registry, config: dict, store=None, name: str = "short", select: dict | None = None) -> Side:
    """``select``: {pid, device, rank} keeping one process of a multi-process profile."""
    from align.profile.processes import gpu_filter

    profile = load(ref, store)
    view = OpView(profile, registry, name=name, where=gpu_filter(profile, **(select or {})))
    used = range_pattern or (f"op {op}" if op else None)
    items = view.op_items(op, range_pattern=range_pattern) if (op or range_pattern) else None
    by_nvtx = items is not None and items["method"].astype(str).str.startswith("nvtx").any()
    if not range_pattern and not by_nvtx:
        # the ranges that hold the op by convention: a mock's own iteration ranges
        # (verdict.toml [mock] range), or an E2E model's module for this op ([e2e] <op>)
        conv = config["mock"]["range"] if label == "mock" else config["e2e"].get(op or "")
        conv_items = view.op_items(range_pattern=conv) if conv else None
        if conv_items is not None and len(conv_items):
            items, used = conv_items, conv
    if items is None or items.empty:
        raise AlignError(f"no GPU work for {op or range_pattern} in the {label} profile {profile.path}",
                         f"pass --{label}-range REGEX naming its NVTX ranges (see align nvtx {profile.path})")
    fw = view.per_forward(items, skip=skip, phase=phase)
    return Side(label=label, path=str(profile.path), view=view, items=items, forwards=fw, range_used=used)


def _status(mock_count: float, e2e_count: float, ratio: float, cfg: dict) -> str:
    if mock_count == 0 and e2e_count > 0:
        return "missing"
    if e2e_count == 0 and mock_count > 0:
        return "extra"
    if abs(mock_count - e2e_count) > cfg["count_tolerance"]:
        return "count"
    if ratio > cfg["latency_ratio"]:
        return "slower"
    if ratio < 1 / cfg["latency_ratio"]:
        return "faster"
    return "match"


def family_table(mock: Side, e2e: Side, config: dict) -> pd.DataFrame:
    """Per (phase, family): both sides' count and latency per forward, mock/E2E ratio, status;
    then a ``TOTAL`` row per phase. Phases present on one side only are compared as they are."""
    key = ["phase", "family"]
    cols = ["count_per_forward", "latency_per_forward_ns", "example"]
    a = mock.forwards.families.set_index(key)[cols]
    b = e2e.forwards.families.set_index(key)[cols]
    df = a.add_suffix("_mock").join(b.add_suffix("_e2e"), how="outer")
    for c in ("count_per_forward_mock", "count_per_forward_e2e", "latency_per_forward_ns_mock",
              "latency_per_forward_ns_e2e"):
        df[c] = df[c].fillna(0.0)
    df["example"] = df["example_e2e"].fillna(df["example_mock"])
    df = df.drop(columns=["example_mock", "example_e2e"]).reset_index()
    with np.errstate(divide="ignore", invalid="ignore"):
        df["latency_ratio"] = np.where(df["latency_per_forward_ns_e2e"] > 0,
                                       df["latency_per_forward_ns_mock"] / df["latency_per_forward_ns_e2e"], np.nan)
    cfg = config["diff"]
    df["status"] = [_status(m, e, r, cfg) for m, e, r in zip(df["count_per_forward_mock"], df["count_per_forward_e2e"],
                                                            df["latency_ratio"].fillna(np.inf))]
    df = df.rename(columns={"count_per_forward_mock": "mock_count", "count_per_forward_e2e": "e2e_count",
                            "latency_per_forward_ns_mock": "mock_ns", "latency_per_forward_ns_e2e": "e2e_ns"})
    df = df.sort_values(["phase", "e2e_ns", "mock_ns"], ascending=[True, False, False], kind="stable")
    totals = []
    for ph, g in df.groupby("phase", sort=False):
        fm = mock.forwards.forwards
        fe = e2e.forwards.forwards
        km = fm[fm["kept"] & (fm["phase"] == ph)]
        ke = fe[fe["kept"] & (fe["phase"] == ph)]
        m_lat = float(km["latency_ns"].median()) if len(km) else 0.0
        e_lat = float(ke["latency_ns"].median()) if len(ke) else 0.0
        m_n = float(km["kernels"].median()) if len(km) else 0.0
        e_n = float(ke["kernels"].median()) if len(ke) else 0.0
        ratio = m_lat / e_lat if e_lat else np.nan
        totals.append({"phase": ph, "family": "TOTAL", "mock_count": m_n, "mock_ns": m_lat, "e2e_count": e_n,
                       "e2e_ns": e_lat, "example": f"{len(km)} mock / {len(ke)} E2E forwards", "latency_ratio": ratio,
                       "status": "match" if (g["status"] == "match").all() else "differs"})
    out = pd.concat([df, pd.DataFrame(totals)], ignore_index=True)
    out = out.sort_values(["phase"], kind="stable")
    cols = ["phase", "family", "status", "mock_count", "e2e_count", "mock_ns", "e2e_ns", "latency_ratio", "example"]
    return out[cols].reset_index(drop=True)


def diff(mock, e2e, op: str | None = None, phase: str | None = None, mock_range: str | None = None,
         e2e_range: str | None = None, skip: int = 0, config: dict | str | None = None,
         ops_file: str | None = None, store=None, e2e_select: dict | None = None) -> pd.DataFrame:
    """Side-by-side per kernel family of a mock and an E2E profile (paths or store names);
    ``e2e_select`` ({pid, device, rank}) compares one rank of a multi-process E2E profile."""
    return compare(mock, e2e, op=op, phase=phase, mock_range=mock_range, e2e_range=e2e_range, skip=skip,
                   config=config, ops_file=ops_file, store=store, e2e_select=e2e_select).table


@dataclass
class Comparison:
    mock: Side
    e2e: Side
    table: pd.DataFrame
    config: dict
    op: str | None


def compare(mock, e2e, op: str | None = None, phase: str | None = None, mock_range: str | None = None,
            e2e_range: str | None = None, skip: int = 0, config: dict | str | None = None,
            ops_file: str | None = None, store=None, e2e_select: dict | None = None) -> Comparison:
    if op is None and not e2e_range:
        raise AlignError("which op?", "pass --op NAME (see align ops --list) or --e2e-range/--mock-range REGEX")
    cfg = config if isinstance(config, dict) else load_config(config)
    registry = load_registry(ops_file)
    m = op_side(mock, "mock", op, mock_range, phase, skip, registry, cfg, store)
    e = op_side(e2e, "e2e", op, e2e_range, phase, skip, registry, cfg, store, select=e2e_select)
    return Comparison(mock=m, e2e=e, table=family_table(m, e, cfg), config=cfg, op=op or e2e_range)
