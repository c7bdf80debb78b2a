"""Per-op kernel sets: which GPU work belongs to an operator, per forward, per phase.

An op's kernels are those inside NVTX ranges matching the op's range patterns (or a user's
``range_pattern``): at launch time, and for CUDA-graph kernels also at capture time, where the
per-layer ranges of a graph-replayed step exist. Where the profile has no such range, kernel-name
patterns decide, and an op whose kernels are shared by many ops (GEMM) is marked ambiguous rather
than guessed. Every row says which method attributed it.

A *forward* is one instance of the op's outermost matching range (or of an iteration range);
a captured range replayed by several graph launches makes one forward per launch.

Everything is decided on the range tree (a few thousand to a few hundred thousand ranges) and
then looked up per GPU op through its launch call's innermost range, so millions of kernels cost
a few array gathers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from align.attribute.launches import KIND_NAMES
from align.attribute.projection import Located, Projection
from align.attribute.ranges import NO_RANGE
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
        self._texts = self.proj.ranges.df["text"].to_numpy(dtype=object)
        origins, self._cap = self.proj.captures
        self._node_index = pd.Index(origins["graph_node_id"].to_numpy()) if len(origins) else pd.Index([])

    def _items(self) -> pd.DataFrame:
        ops = self.proj.gpu.ops
        strings = self.profile.sql("SELECT id, value FROM StringIds").set_index("id")["value"]
        name_ids = ops["short_id"].where(ops["short_id"] >= 0, ops["name_id"]) if self.name_kind == "short" \
            else ops["name_id"]
        kind = ops["kind"].to_numpy()
        # one code per distinct (kind, name id); strings and families are looked up once per code
        key = pd.MultiIndex.from_arrays([kind, name_ids.to_numpy(), ops["name_id"].to_numpy()])
        codes, uniq = pd.factorize(key)
        u_kind = uniq.get_level_values(0).to_numpy()
        u_name = strings.reindex(uniq.get_level_values(1).to_numpy()).to_numpy(dtype=object)
        u_full = strings.reindex(uniq.get_level_values(2).to_numpy()).to_numpy(dtype=object)
        label = np.array([f"[CUDA {KIND_NAMES[k]}]" for k in u_kind], dtype=object)
        u_name = np.where(u_kind == 0, u_name, label)
        u_full = np.where(u_kind == 0, u_full, label)
        self.names = pd.DataFrame({"name": u_name, "demangled": u_full,
                                   "family": [self.registry.family(n) for n in u_full]})
        return pd.DataFrame({"code": codes.astype(np.int32), "kind": kind, "start": ops["start"].to_numpy(),
                             "duration": (ops["end"] - ops["start"]).to_numpy(), "launch": ops["launch"].to_numpy(),
                             "graph_node_id": ops["graph_node_id"].to_numpy()})

    def _with_names(self, df: pd.DataFrame) -> pd.DataFrame:
        return df.join(self.names, on="code")

    # ---- tree lookups -----------------------------------------------------------------------
    def _range_mark(self, match) -> np.ndarray:
        uniq = pd.unique(self._texts)
        hit = {t: bool(match(t)) for t in uniq}
        return pd.Series(self._texts, dtype=object).map(hit).to_numpy(dtype=bool) if len(self._texts) \
            else np.zeros(0, bool)

    def _item_lookup(self, per_range: np.ndarray, fill) -> tuple[np.ndarray, np.ndarray]:
        """``per_range`` looked up through each item's innermost range: (at launch, at capture)."""
        launch = self.items["launch"].to_numpy()
        inner = np.full(len(launch), NO_RANGE, np.int64)
        ok = launch >= 0
        inner[ok] = self.proj.calls.inner[launch[ok]]
        at_launch = np.where(inner >= 0, per_range[np.maximum(inner, 0)] if len(per_range) else fill, fill)
        at_capture = np.full(len(launch), fill, dtype=at_launch.dtype)
        node = self.items["graph_node_id"].to_numpy()
        has_node = node >= 0
        if has_node.any() and len(self._node_index):
            pos = self._node_index.get_indexer(node[has_node])
            cap_inner = np.where(pos >= 0, self._cap.inner[np.maximum(pos, 0)], NO_RANGE)
            vals = np.where(cap_inner >= 0, per_range[np.maximum(cap_inner, 0)] if len(per_range) else fill, fill)
            at_capture[has_node] = vals
        return at_launch, at_capture

    def _se_lookup(self, mark: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First marked start/end range enclosing each item's launch and capture (-1 if none)."""
        out = []
        for located, by in ((self.proj.calls, "launch"), (self._cap, "node")):
            res = np.full(len(self.items), NO_RANGE, np.int64)
            if len(located.se_ranges):
                sel = mark[located.se_ranges]
                first = pd.Series(located.se_ranges[sel]).groupby(located.se_items[sel]).first()
                if by == "launch":
                    launch = self.items["launch"].to_numpy()
                    ok = launch >= 0
                    res[ok] = first.reindex(launch[ok]).fillna(NO_RANGE).to_numpy(np.int64)
                else:
                    node = self.items["graph_node_id"].to_numpy()
                    pos = self._node_index.get_indexer(node) if len(self._node_index) else np.full(len(node), -1)
                    ok = pos >= 0
                    res[ok] = first.reindex(pos[ok]).fillna(NO_RANGE).to_numpy(np.int64)
            out.append(res)
        return out[0], out[1]

    def phases(self) -> np.ndarray:
        """'context', 'generation' or None per item, from every range enclosing it (launch or capture)."""
        r = self.proj.ranges
        found = {}
        for phase, rx in self.registry._phase_re.items():
            mark = self._range_mark(rx.search)
            chain = r.any_on_chain(mark) if len(mark) else mark
            a, b = self._item_lookup(chain, False)
            sa, sb = self._se_lookup(mark)
            found[phase] = a | b | (sa >= 0) | (sb >= 0)
        out = np.full(len(self.items), None, dtype=object)
        phases = list(found)
        for p in phases:
            only = found[p] & ~np.logical_or.reduce([found[q] for q in phases if q != p] or [np.zeros(len(out), bool)])
            out[only] = p
        return out

    def _op_ranges(self, mark: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Outermost marked range enclosing each item at launch, and at capture (-1 if none)."""
        r = self.proj.ranges
        outer = r.nearest_on_chain(mark, outermost=True) if len(mark) else np.zeros(0, np.int64)
        a, b = self._item_lookup(outer, NO_RANGE)
        sa, sb = self._se_lookup(mark)
        return np.where(a >= 0, a, sa), np.where(b >= 0, b, sb)

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
        matcher = _regex(range_pattern, "--range").search if range_pattern else spec.matches_range
        mark = self._range_mark(matcher)
        at_launch, at_capture = self._op_ranges(mark)
        in_range = (at_launch >= 0) | (at_capture >= 0)
        if in_range.any():
            sel = np.flatnonzero(in_range)
            df = self.items.iloc[sel].copy()
            launch_hit = at_launch[sel] >= 0
            df["method"] = np.where(launch_hit, "nvtx", "nvtx-capture")
            df["op_range"] = np.where(launch_hit, at_launch[sel], at_capture[sel])
            df["forward"] = np.where(launch_hit, "r" + df["op_range"].astype(str),
                                     "r" + df["op_range"].astype(str) + "/g" + df["launch"].astype(str))
        elif spec is not None and not range_pattern:
            owner = np.array([self.registry.kernel_op(n) for n in self.names["demangled"]], dtype=object)
            mask = owner[self.items["code"].to_numpy()] == spec.name
            df = self.items[mask].copy()
            df["method"] = "name-shared" if spec.shared else "name"
            df["op_range"] = NO_RANGE
            df["forward"] = None
        else:
            df = self.items.iloc[0:0].copy()
            df["method"], df["op_range"], df["forward"] = [], [], []
        df["phase"] = self.phases()[df.index.to_numpy()]
        if iter_pattern or df["forward"].isna().all():
            pattern = self.registry.iteration_pattern(iter_pattern or "align")
            it_launch, it_capture = self._op_ranges(self._range_mark(_regex(pattern, "--iter-range").search))
            it = np.where(it_launch >= 0, it_launch, NO_RANGE)[df.index.to_numpy()]
            df["forward"] = np.where(it >= 0, "i" + pd.Series(it, index=df.index).astype(str), None)
        return self._with_names(df).sort_values("start", kind="stable")

    def per_forward(self, items: pd.DataFrame, skip: int = 0, auto_skip: bool = True,
                    phase: str | None = None) -> Forwards:
        """Counts and latency per forward, by phase and kernel family, as medians over kept forwards."""
        df = items[items["forward"].notna()]
        if phase:
            df = df[df["phase"] == phase]
        df = df.assign(phase=df["phase"].fillna("all"))
        fw = (df.groupby("forward", sort=False)
                .agg(phase=("phase", "first"), start=("start", "min"), kernels=("code", "size"),
                     latency_ns=("duration", "sum"))
                .reset_index().sort_values("start", kind="stable"))
        kept, skipped, cold = [], {}, {}
        for ph, group in fw.groupby("phase", sort=False):
            g = group.iloc[skip:]
            skipped[ph] = min(skip, len(group))
            n_cold = _cold_prefix(g) if auto_skip else 0
            cold[ph] = n_cold
            kept.append(g.iloc[n_cold:])
        fw_kept = pd.concat(kept) if kept else fw.iloc[0:0]
        fw["kept"] = fw["forward"].isin(fw_kept["forward"])
        rows = df[df["forward"].isin(fw_kept["forward"])]
        fam = (rows.groupby(["phase", "forward", "family"], sort=False)
                   .agg(count=("code", "size"), latency_ns=("duration", "sum")).reset_index())
        n_fw = fw_kept.groupby("phase").size()
        out = []
        for (ph, family), g in fam.groupby(["phase", "family"], sort=False):
            n = int(n_fw[ph])
            counts, lats = np.zeros(n), np.zeros(n)
            counts[: len(g)] = g["count"].to_numpy()
            lats[: len(g)] = g["latency_ns"].to_numpy()
            sub = rows[(rows["phase"] == ph) & (rows["family"] == family)]
            out.append({"phase": ph, "family": family, "forwards": n,
                        "count_per_forward": float(np.median(counts)),
                        "latency_per_forward_ns": float(np.median(lats)),
                        "kernel_median_ns": float(sub["duration"].median()),
                        "method": "/".join(sorted(sub["method"].unique())),
                        "names": int(sub["code"].nunique()), "example": sub["name"].iloc[0]})
        families = pd.DataFrame(out, columns=["phase", "family", "forwards", "count_per_forward",
                                              "latency_per_forward_ns", "kernel_median_ns", "method", "names", "example"])
        if not families.empty:
            total = families.groupby("phase")["latency_per_forward_ns"].transform("sum")
            families.insert(5, "share_pct", (100 * families["latency_per_forward_ns"] / total).round(1))
            families = families.sort_values(["phase", "latency_per_forward_ns"], ascending=[True, False], kind="stable")
        return Forwards(families=families.reset_index(drop=True), forwards=fw.reset_index(drop=True),
                        skipped=skipped, cold=cold)

    # ---- all ops -------------------------------------------------------------------------
    def overview(self) -> pd.DataFrame:
        """Each item to one op: the innermost enclosing range that matches an op's NVTX patterns
        (launch time first, then capture time), else the first op whose kernel patterns match its
        name. A row per (op, phase)."""
        r = self.proj.ranges
        uniq = pd.unique(self._texts)
        first_op = {t: (self.registry.range_ops(t) or [None])[0] for t in uniq}
        range_op = pd.Series(self._texts, dtype=object).map(first_op).to_numpy(dtype=object) if len(uniq) \
            else np.zeros(0, object)
        nearest = r.nearest_on_chain(pd.notna(range_op)) if len(range_op) else np.zeros(0, np.int64)
        at_launch, at_capture = self._item_lookup(nearest, NO_RANGE)
        op = np.full(len(self.items), None, dtype=object)
        method = np.full(len(self.items), None, dtype=object)
        for where, label in ((at_capture, "nvtx-capture"), (at_launch, "nvtx")):
            ok = where >= 0
            op[ok] = range_op[where[ok]]
            method[ok] = label
        owner = np.array([self.registry.kernel_op(n) for n in self.names["demangled"]], dtype=object)
        rest = pd.isna(op)
        op[rest] = owner[self.items["code"].to_numpy()[rest]]
        shared = {o.name for o in self.registry.ops if o.shared}
        method[rest] = np.where(pd.Series(op[rest], dtype=object).isin(shared), "name-shared", "name")
        op[pd.isna(op)] = "unattributed"
        items = self._with_names(self.items.assign(op=op, method=method, phase=self.phases()))
        items["phase"] = items["phase"].fillna("all")
        total = items["duration"].sum()
        g = items.groupby(["op", "phase"], sort=False)
        df = g.agg(kernels=("code", "size"), names=("code", "nunique"), families=("family", "nunique"),
                   total_ns=("duration", "sum"), method=("method", lambda m: "/".join(sorted(set(m.dropna()))))
                   ).reset_index()
        df["share_pct"] = (100 * df["total_ns"] / total).round(1) if total else 0.0
        df = df[["op", "phase", "kernels", "names", "families", "total_ns", "share_pct", "method"]]
        return df.sort_values("total_ns", ascending=False, kind="stable").reset_index(drop=True)


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
