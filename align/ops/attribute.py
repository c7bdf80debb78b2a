"""Per-op kernel sets: which GPU work belongs to an operator, per forward, per phase.

An op's kernels are those inside NVTX ranges matching the op's range patterns (or a user's
``range_pattern``): at launch time, and for CUDA-graph kernels also at capture time, where the
per-layer ranges of a graph-replayed step exist. Where the profile has no such range, kernel-name
patterns decide, and an op whose kernels are shared by many ops (GEMM) is marked ambiguous rather
than guessed. Every row says which method attributed it.

A *forward* is one instance of the op's outermost matching range (or of ``iter_pattern``'s
range); a captured range replayed by several graph launches makes one forward per launch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from align.attribute.projection import Projection
from align.errors import AlignError
from align.ops.registry import Registry, load_registry
from align.profile.reader import Profile

METHODS = ("nvtx", "nvtx-capture", "name", "name-shared")


@dataclass
class Forwards:
    """Per-forward figures of one op: a row per (phase, family) and what was dropped as warm-up."""

    families: pd.DataFrame
    forwards: pd.DataFrame
    skipped: dict[str, int] = field(default_factory=dict)
    cold: dict[str, int] = field(default_factory=dict)


class OpView:
    """GPU work of one profile with everything needed to cut it by op, forward and phase."""

    def __init__(self, profile: Profile, registry: Registry | None = None, name: str = "demangled"):
        self.profile = profile
        self.registry = registry or load_registry()
        self.proj = Projection(profile)
        self.name_kind = name
        self.items = self._items()

    def _items(self) -> pd.DataFrame:
        ops = self.proj.gpu.ops
        strings = self.profile.sql("SELECT id, value FROM StringIds").set_index("id")["value"]
        col = "short_id" if self.name_kind == "short" else "name_id"
        names = strings.reindex(ops[col].fillna(ops["name_id"]).to_numpy()).to_numpy(dtype=object)
        full = strings.reindex(ops["name_id"].to_numpy()).to_numpy(dtype=object)
        kind = ops["kind"].to_numpy()
        names = np.where(kind == "kernel", names, "[CUDA " + kind.astype(object) + "]")
        full = np.where(kind == "kernel", full, names)
        df = pd.DataFrame({"kind": kind, "name": names, "start": ops["start"].to_numpy(),
                           "duration": (ops["end"] - ops["start"]).to_numpy(), "launch": ops["launch"].to_numpy(),
                           "graph_node_id": ops["graph_node_id"].to_numpy()})
        uniq = pd.unique(full)
        fam = {n: self.registry.family(n) for n in uniq}
        df["family"] = pd.Series(full).map(fam).to_numpy()
        df["demangled"] = full
        return df

    @cached_property
    def pairs(self) -> pd.DataFrame:
        """(item, range, when, launch): every range enclosing an item's launch call, and for graph
        kernels every range enclosing the capture of their node."""
        m = self.proj.call_members
        launch_pairs = pd.DataFrame({"launch": m.item_idx, "range": m.range_idx})
        items = pd.DataFrame({"item": np.arange(len(self.items)), "launch": self.items["launch"].to_numpy()})
        lp = items[items["launch"] >= 0].merge(launch_pairs, on="launch")
        lp["when"] = "launch"
        origins, cm = self.proj.capture_members
        frames = [lp]
        if len(cm.item_idx):
            node_ids = origins["graph_node_id"].to_numpy()
            cap = pd.DataFrame({"graph_node_id": node_ids[cm.item_idx], "range": cm.range_idx})
            gi = self.items[self.items["graph_node_id"].notna()]
            g = pd.DataFrame({"item": gi.index.to_numpy(), "launch": gi["launch"].to_numpy(),
                              "graph_node_id": gi["graph_node_id"].astype("int64").to_numpy()})
            cp = g.merge(cap, on="graph_node_id").drop(columns="graph_node_id")
            cp["when"] = "capture"
            frames.append(cp)
        return pd.concat(frames, ignore_index=True)[["item", "range", "when", "launch"]]

    def _range_texts(self) -> np.ndarray:
        return self.proj.ranges.df["text"].to_numpy(dtype=object)

    def _matching_ranges(self, pattern_match) -> np.ndarray:
        texts = self._range_texts()
        uniq = pd.unique(texts)
        ok = {t: bool(pattern_match(t)) for t in uniq}
        return np.flatnonzero(pd.Series(texts).map(ok).to_numpy(dtype=bool)) if len(texts) else np.empty(0, np.int64)

    def phases(self) -> pd.Series:
        """Phase of each item from the texts of all ranges enclosing it (launch or capture)."""
        texts = self._range_texts()
        p = self.pairs
        if p.empty:
            return pd.Series([None] * len(self.items), dtype=object)
        per_item = pd.Series(texts[p["range"].to_numpy()]).groupby(p["item"].to_numpy()).agg(list)
        phase = per_item.map(self.registry.phase)
        return phase.reindex(range(len(self.items)))

    # ---- one op --------------------------------------------------------------------------
    def op_items(self, op: str | None = None, range_pattern: str | None = None,
                 iter_pattern: str | None = None) -> pd.DataFrame:
        """The op's GPU work: one row per item with its method, forward key and phase.

        ``range_pattern`` replaces the op's NVTX patterns (a mock marking its iterations
        ``mock_generation``, say); ``iter_pattern`` makes forwards the instances of that range
        instead of the op's range instances.
        """
        if op is None and range_pattern is None:
            raise AlignError("no op given", "pass --op NAME or --range REGEX")
        spec = self.registry.op(op) if op else None
        if range_pattern:
            rx = _regex(range_pattern, "--range")
            matcher = rx.search
        else:
            matcher = spec.matches_range
        op_ranges = self._matching_ranges(matcher)
        p = self.pairs
        hit = p[p["range"].isin(op_ranges)]
        if len(op_ranges) and not hit.empty:
            # outermost matching range per item and time of attribution = its forward
            levels = self.proj.ranges.level
            hit = hit.assign(level=levels[hit["range"].to_numpy()])
            # prefer launch-time attribution when an item has both
            first = hit.sort_values(["item", "when", "level"], key=_launch_first, kind="stable").drop_duplicates("item")
            df = self.items.loc[first["item"].to_numpy()].copy()
            df["method"] = np.where(first["when"].to_numpy() == "launch", "nvtx", "nvtx-capture")
            df["op_range"] = first["range"].to_numpy()
            df["forward"] = [f"r{r}" if w == "launch" else f"r{r}/g{lc}" for r, w, lc in
                             zip(first["range"], first["when"], first["launch"])]
        elif spec is not None and not range_pattern:
            names = self.items["demangled"]
            uniq = pd.unique(names)
            owner = {n: self.registry.kernel_op(n) for n in uniq}
            mask = names.map(owner).to_numpy(dtype=object) == spec.name
            df = self.items[mask].copy()
            df["method"] = "name-shared" if spec.shared else "name"
            df["op_range"] = -1
            df["forward"] = None
        else:
            df = self.items.iloc[0:0].copy()
            df["method"], df["op_range"], df["forward"] = [], [], []
        df["phase"] = self.phases().reindex(df.index).to_numpy()
        if iter_pattern:
            df["forward"] = self._iteration_of(df, self.registry.iteration_pattern(iter_pattern))
        elif df["forward"].isna().all() and len(df):
            df["forward"] = self._iteration_of(df, self.registry.iteration_pattern("align"))
        return df.sort_values("start", kind="stable")

    def _iteration_of(self, df: pd.DataFrame, pattern: str) -> list:
        rx = _regex(pattern, "--iter-range")
        iters = self._matching_ranges(rx.search)
        p = self.pairs
        hit = p[p["range"].isin(iters) & p["item"].isin(df.index)]
        levels = self.proj.ranges.level
        hit = hit.assign(level=levels[hit["range"].to_numpy()]).sort_values(["item", "level"]).drop_duplicates("item")
        key = dict(zip(hit["item"], ("i" + hit["range"].astype(str)).tolist()))
        return [key.get(i) for i in df.index]

    def per_forward(self, items: pd.DataFrame, skip: int = 0, auto_skip: bool = True,
                    phase: str | None = None) -> Forwards:
        """Counts and latency per forward, by phase and kernel family, as medians over kept forwards."""
        df = items[items["forward"].notna()]
        if phase:
            df = df[df["phase"] == phase]
        fw = (df.groupby("forward", sort=False)
                .agg(phase=("phase", "first"), start=("start", "min"), kernels=("name", "size"),
                     latency_ns=("duration", "sum"))
                .reset_index().sort_values("start", kind="stable"))
        fw["phase"] = fw["phase"].fillna("all")
        kept, skipped, cold = [], {}, {}
        for ph, group in fw.groupby("phase", sort=False):
            g = group.iloc[skip:]
            skipped[ph] = min(skip, len(group))
            n_cold = _cold_prefix(g) if auto_skip else 0
            cold[ph] = n_cold
            kept.append(g.iloc[n_cold:])
        fw_kept = pd.concat(kept) if kept else fw.iloc[0:0]
        fw["kept"] = fw["forward"].isin(fw_kept["forward"])
        rows = df[df["forward"].isin(fw_kept["forward"])].copy()
        rows["phase"] = rows["phase"].fillna("all")
        fam = (rows.groupby(["phase", "forward", "family"], sort=False)
                   .agg(count=("name", "size"), latency_ns=("duration", "sum")).reset_index())
        out = []
        for (ph, family), g in fam.groupby(["phase", "family"], sort=False):
            n_fw = int((fw_kept["phase"] == ph).sum())
            counts = np.zeros(n_fw)
            lats = np.zeros(n_fw)
            counts[: len(g)] = g["count"].to_numpy()
            lats[: len(g)] = g["latency_ns"].to_numpy()
            sub = rows[(rows["phase"] == ph) & (rows["family"] == family)]
            out.append({"phase": ph, "family": family, "forwards": n_fw,
                        "count_per_forward": float(np.median(counts)),
                        "latency_per_forward_ns": float(np.median(lats)),
                        "kernel_median_ns": float(sub["duration"].median()),
                        "method": "/".join(sorted(sub["method"].unique())),
                        "names": int(sub["name"].nunique()), "example": sub["name"].iloc[0]})
        families = pd.DataFrame(out, columns=["phase", "family", "forwards", "count_per_forward",
                                              "latency_per_forward_ns", "kernel_median_ns", "method", "names", "example"])
        if not families.empty:
            total = families.groupby("phase")["latency_per_forward_ns"].transform("sum")
            families.insert(5, "share_pct", (100 * families["latency_per_forward_ns"] / total).round(1))
            families = families.sort_values(["phase", "latency_per_forward_ns"], ascending=[True, False], kind="stable")
        return Forwards(families=families.reset_index(drop=True), forwards=fw.reset_index(drop=True),
                        skipped=skipped, cold=cold)

    # ---- all ops -------------------------------------------------------------------------
    def overview(self, skip: int = 0, auto_skip: bool = True) -> pd.DataFrame:
        """Each item to one op: the innermost enclosing range that matches an op's NVTX patterns,
        else the first op whose kernel patterns match its name. A row per (op, phase)."""
        texts = self._range_texts()
        uniq = pd.unique(texts)
        range_op = {t: (self.registry.range_ops(t) or [None])[0] for t in uniq}
        r_op = pd.Series(texts).map(range_op).to_numpy(dtype=object) if len(texts) else np.empty(0, object)
        p = self.pairs
        levels = self.proj.ranges.level
        hit = p.assign(op=r_op[p["range"].to_numpy()] if len(p) else [], level=levels[p["range"].to_numpy()] if len(p) else [])
        hit = hit[hit["op"].notna()].sort_values(["item", "level"], ascending=[True, False], kind="stable")
        inner = hit.drop_duplicates("item")
        items = self.items.copy()
        items["op"] = None
        items["method"] = None
        items.loc[inner["item"].to_numpy(), "op"] = inner["op"].to_numpy()
        items.loc[inner["item"].to_numpy(), "method"] = np.where(inner["when"].to_numpy() == "launch", "nvtx",
                                                                  "nvtx-capture")
        rest = items["op"].isna()
        owner = {n: self.registry.kernel_op(n) for n in pd.unique(items.loc[rest, "demangled"])}
        items.loc[rest, "op"] = items.loc[rest, "demangled"].map(owner)
        shared = {o.name for o in self.registry.ops if o.shared}
        items.loc[rest, "method"] = np.where(items.loc[rest, "op"].isin(shared), "name-shared", "name")
        items.loc[items["op"].isna(), "op"] = "unattributed"
        items["phase"] = self.phases().to_numpy()
        total = items["duration"].sum()
        rows = []
        for (op, ph), g in items.groupby(["op", items["phase"].fillna("all")], sort=False):
            rows.append({"op": op, "phase": ph, "kernels": len(g), "names": g["name"].nunique(),
                         "families": g["family"].nunique(), "total_ns": int(g["duration"].sum()),
                         "share_pct": round(100 * g["duration"].sum() / total, 1) if total else 0.0,
                         "method": "/".join(sorted(g["method"].dropna().unique()))})
        df = pd.DataFrame(rows, columns=["op", "phase", "kernels", "names", "families", "total_ns", "share_pct", "method"])
        return df.sort_values("total_ns", ascending=False, kind="stable").reset_index(drop=True)


def _launch_first(col: pd.Series) -> pd.Series:
    return col.map({"launch": 0, "capture": 1}) if col.name == "when" else col


def _cold_prefix(fw: pd.DataFrame) -> int:
    """Leading forwards that look like warm-up: a kernel count unlike the usual one, or more than
    twice the median latency of the rest. At most half of the forwards are dropped."""
    n = len(fw)
    if n < 3:
        return 0
    usual = fw["kernels"].mode().iloc[0]
    k = 0
    while k < n // 2:
        rest = fw.iloc[k + 1:]
        row = fw.iloc[k]
        if row["kernels"] != usual or row["latency_ns"] > 2 * rest["latency_ns"].median():
            k += 1
        else:
            break
    return k


def _regex(pattern: str, what: str) -> re.Pattern:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise AlignError(f"bad regex for {what}: {pattern!r} ({exc})", "use a Python regular expression") from None
