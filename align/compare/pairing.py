"""Which E2E forwards each mock phase is compared with, and on what evidence.

Phases come from evidence, strongest first (decided per kernel in :class:`align.attribute.ops.OpView`):
the user's mapping, phase words in enclosing NVTX ranges, engine step ranges that count their
requests, the input shapes of layer-wise markers. Shapes say only prefill or decode: forwards of one
such phase are grouped by their kernels too, and a mock phase meets the group of its phase it
resembles most (a decode step at one cache length that launches one kernel more, say, stays apart).
Where E2E forwards carry none (``generate()`` with per-module ranges, vLLM without step
ranges), their own kernels decide: the forwards of each process are grouped by signature (the
multiset of kernel families, then duration), and each mock phase is paired with the group it
resembles most, family overlap first and launch shapes second, one group per mock phase. A
multi-process E2E run is paired process by process, so no process's forwards are pooled with
another's. The pairing is part of the answer, with its evidence and confidence.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

NAMED = ("context", "generation", "mixed")
SHAPES = "marker shapes"  # the evidence that names a phase but not which forwards of it are alike


@dataclass
class Settings:
    """The [pairing] thresholds of verdict.toml (documented there)."""

    min_family_overlap: float = 0.2
    shape_weight: float = 0.25
    latency_split_ratio: float = 3.0
    max_candidates: int = 8


@dataclass
class Group:
    """Forwards of one side that are compared as one phase."""

    label: str
    forwards: list
    evidence: str
    pid: int
    families: Counter = field(default_factory=Counter)
    shapes: Counter = field(default_factory=Counter)
    kernels: float = 0.0
    latency_ns: float = 0.0


@dataclass
class Pairing:
    """``table``: one row per mock phase and process, and per E2E group left unpaired; ``mock``:
    comparison key -> the mock forwards it holds (one mock phase serves every E2E process);
    ``e2e``: E2E forward -> comparison key (only paired forwards appear)."""

    table: pd.DataFrame
    mock: dict
    e2e: dict
    keys: list[str]

    def records(self) -> list[dict]:
        return plain_rows(self.table)


def plain_rows(table: pd.DataFrame) -> list[dict]:
    """Rows of a pairing table with plain Python values: NaN (pandas' missing value) becomes None."""
    return [{k: (None if isinstance(v, float) and np.isnan(v) else v.item() if hasattr(v, "item") else v)
             for k, v in r.items()} for r in table.to_dict(orient="records")]


def forward_summary(items: pd.DataFrame, shapes: pd.Series | None = None) -> pd.DataFrame:
    """One row per forward: phase, evidence, process, kernels, latency, family multiset (and shape multiset)."""
    df = items[items["forward"] >= 0]
    if df.empty:
        return pd.DataFrame(columns=["forward", "phase", "evidence", "pid", "start", "kernels", "latency_ns",
                                     "families", "shapes"])
    fam = df["family"].astype(str)
    sh = shapes.reindex(df.index).fillna("") if shapes is not None else pd.Series("", index=df.index)
    g = pd.DataFrame({"forward": df["forward"].to_numpy(), "family": fam.to_numpy(),
                      "fs": (fam + " | " + sh.astype(str)).to_numpy()})
    fams, shp = _multisets(g, "family"), _multisets(g, "fs")
    out = (df.groupby("forward", sort=False, observed=True)
             .agg(phase=("phase", "first"), evidence=("evidence", "first"), pid=("pid", "first"),
                  start=("start", "min"), kernels=("code", "size"), latency_ns=("duration", "sum"))
             .reset_index())
    out["phase"] = out["phase"].astype(str)
    out["evidence"] = out["evidence"].astype(str)
    out["families"] = out["forward"].map(fams)
    out["shapes"] = out["forward"].map(shp)
    return out.sort_values("start", kind="stable").reset_index(drop=True)


def _multisets(g: pd.DataFrame, key: str) -> dict:
    """forward -> Counter of ``key`` (keys in order of first appearance, as Counter(rows) gives),
    counted by one grouping instead of a Python call per forward."""
    out: dict = {}
    for (forward, value), n in g[["forward", key]].value_counts(sort=False).items():
        out.setdefault(forward, Counter())[value] = int(n)
    return out


def _signatures(rows: pd.DataFrame) -> pd.Series:
    """Each forward's family multiset as a hashable key (forwards alike share one)."""
    return rows["families"].map(lambda c: tuple(sorted(c.items())))


def _group(label: str, rows: pd.DataFrame, evidence: str, pid: int) -> Group:
    keys = _signatures(rows)
    modal = keys.mode().iloc[0]
    typical = rows[keys == modal]
    rep = typical.iloc[len(typical) // 2]  # a forward of the usual make-up, from the middle of the run
    return Group(label=label, forwards=list(rows["forward"]), evidence=evidence, pid=pid,
                 families=rep["families"], shapes=rep["shapes"], kernels=float(rows["kernels"].median()),
                 latency_ns=float(rows["latency_ns"].median()))


def _split_by_latency(rows: pd.DataFrame, ratio: float) -> list[pd.DataFrame]:
    """Forwards of one family multiset whose latencies form separate clusters (prefill and decode
    running the same kernels, say), split at each gap of ``ratio`` or more."""
    lat = np.log(np.maximum(rows["latency_ns"].to_numpy(float), 1.0))
    order = np.argsort(lat, kind="stable")
    gaps = np.flatnonzero(np.diff(lat[order]) >= np.log(ratio))
    if not len(gaps):
        return [rows]
    parts = np.split(order, gaps + 1)
    return [rows.iloc[np.sort(p)] for p in parts]


def side_groups(fw: pd.DataFrame, label_free: str = "G", settings: Settings | None = None) -> list[Group]:
    """Groups of one side: forwards with phase evidence by phase (and process); the rest by signature."""
    groups = []
    n = 0
    for pid, per in fw.groupby("pid", sort=True):
        for ph in NAMED:
            rows = per[per["phase"] == ph]
            if not len(rows):
                continue
            evidence = rows["evidence"].mode().iloc[0]
            if evidence != SHAPES:
                groups.append(_group(ph, rows, evidence, int(pid)))
                continue
            for _, part in rows.groupby(_signatures(rows), sort=False):
                groups.append(_group(ph, part, evidence, int(pid)))
        rest = per[~per["phase"].isin(NAMED)]
        if rest.empty:
            continue
        for _, rows in rest.groupby(_signatures(rest), sort=False):
            for part in _split_by_latency(rows, (settings or Settings()).latency_split_ratio):
                n += 1
                groups.append(_group(f"{label_free}{n}", part, "kernels", int(pid)))
    groups.sort(key=lambda g: (g.pid, min(g.forwards)))
    return groups


def overlap(a: Counter, b: Counter) -> float:
    """Shared share of two multisets: sum of the smaller counts over the larger total."""
    if not a or not b:
        return 0.0
    shared = sum(min(n, b[k]) for k, n in a.items())
    return shared / max(sum(a.values()), sum(b.values()))


def _score(m: Group, g: Group, s: Settings) -> float:
    return overlap(m.families, g.families) + s.shape_weight * overlap(m.shapes, g.shapes)


def _allowed(m: Group, g: Group, s: Settings) -> bool:
    """A phase named by evidence on both sides pairs only with the same name (found before this);
    a nameless group may pair with anything it resembles enough."""
    return not (m.label in NAMED and g.label in NAMED) and overlap(m.families, g.families) >= s.min_family_overlap


def _assign(mock: list[Group], cands: list[Group], s: Settings) -> dict[int, int]:
    """Mock group index -> candidate index, one-to-one, maximising the summed score."""
    best, best_total = {}, -1.0
    k = min(len(mock), len(cands))
    for chosen_m in itertools.combinations(range(len(mock)), k):
        for chosen_c in itertools.permutations(range(len(cands)), k):
            plausible = [(m, c) for m, c in zip(chosen_m, chosen_c) if _allowed(mock[m], cands[c], s)]
            total = sum(_score(mock[m], cands[c], s) for m, c in plausible)
            if total > best_total + 1e-12:
                best, best_total = dict(plausible), total
    return best


def _confidence(m: Group, chosen: Group, others: list[Group], s: Settings) -> float:
    """Family overlap of the pair, scaled down when another group resembles the mock phase almost as well."""
    fam = overlap(m.families, chosen.families)
    rivals = [_score(m, g, s) for g in others if g is not chosen and not (m.label in NAMED and g.label in NAMED)]
    margin = _score(m, chosen, s) - max(rivals) if rivals else 1.0
    return round(fam * min(1.0, max(margin, 0.0) / 0.2), 3)


def _word(conf: float, evidence: str) -> str:
    if evidence != "kernels":
        return "given"
    return "high" if conf >= 0.8 else "medium" if conf >= 0.5 else "low"


def _why_alone(m: Group, cands: list[Group], taken: dict[int, Group], s: Settings) -> str:
    left = [g for g in cands if g not in taken.values()]
    if not left:
        return "every E2E forward group is paired with another mock phase"
    named = sorted({g.label for g in left if g.label in NAMED})
    if m.label in NAMED and len(named) == len(left):
        return f"the E2E forwards left carry other phases by evidence ({', '.join(named)})"
    best = max(overlap(m.families, g.families) for g in left)
    return f"no E2E forward group left shares {s.min_family_overlap:.0%} of its kernel families (best {best:.0%})"


def pair(mock_fw: pd.DataFrame, e2e_fw: pd.DataFrame, names: dict[int, str] | None = None,
         settings: Settings | dict | None = None) -> Pairing:
    """Pair the mock's phases with E2E forward groups, process by process.

    ``names``: pid -> how to call a process in the comparison key (``rank 0``); a single-process
    E2E run keeps plain phase keys (``generation``). ``settings``: verdict.toml's [pairing]."""
    s = settings if isinstance(settings, Settings) else Settings(**(settings or {}))
    mock_groups = side_groups(mock_fw, "M", s)
    e2e_groups = side_groups(e2e_fw, "G", s)
    pids = sorted({g.pid for g in e2e_groups})
    multi = len(pids) > 1
    rows, mock_map, e2e_map, keys = [], {}, {}, []
    for pid in pids:
        cands = [g for g in e2e_groups if g.pid == pid]
        taken: dict[int, Group] = {}
        how: dict[int, str] = {}
        # evidence first: a mock phase meets the E2E group of the same phase name
        for i, m in enumerate(mock_groups):
            same = [g for g in cands if g.label == m.label and m.label in NAMED]
            if same:
                best = max(same, key=lambda g: (_score(m, g, s), len(g.forwards)))
                taken[i], how[i] = best, best.evidence
        free_m = [i for i in range(len(mock_groups)) if i not in taken]
        free_c = sorted((g for g in cands if g not in taken.values()), key=lambda g: -len(g.forwards))[:s.max_candidates]
        for mi, ci in _assign([mock_groups[i] for i in free_m], free_c, s).items():
            taken[free_m[mi]], how[free_m[mi]] = free_c[ci], "kernels"
        nameless = sum(m.label not in NAMED for m in mock_groups)
        for i, m in enumerate(mock_groups):
            g = taken.get(i)
            phase = m.label if m.label in NAMED or g is None or g.label not in NAMED else g.label
            if phase not in NAMED:
                phase = "all" if nameless == 1 else m.label
            key = f"{phase} ({names.get(pid, f'pid {pid}') if names else f'pid {pid}'})" if multi else phase
            row = {"key": key, "pid": pid, "mock_phase": m.label if m.label in NAMED else phase,
                   "mock_forwards": len(m.forwards), "mock_kernels": m.kernels}
            if g is None:
                rows.append({**row, "key": None, "e2e_group": None, "e2e_forwards": 0, "evidence": None,
                             "confidence": 0.0, "confidence_word": "none", "family_overlap": np.nan,
                             "shape_overlap": np.nan, "e2e_kernels": np.nan,
                             "note": f"no plausible E2E partner: {_why_alone(m, cands, taken, s)}"})
                continue
            conf = 1.0 if how[i] != "kernels" else _confidence(m, g, cands, s)
            rows.append({**row, "e2e_group": g.label, "e2e_forwards": len(g.forwards), "evidence": how[i],
                         "confidence": conf, "confidence_word": _word(conf, how[i]),
                         "family_overlap": round(overlap(m.families, g.families), 3),
                         "shape_overlap": round(overlap(m.shapes, g.shapes), 3), "e2e_kernels": g.kernels, "note": ""})
            keys.append(key)
            for f in m.forwards:
                mock_map.setdefault(key, set()).add(f)
            for f in g.forwards:
                e2e_map[f] = key
        for g in cands:
            if g in taken.values():
                continue
            paired_same = any(t.label == g.label for t in taken.values())
            why = ("mixed steps (context and generation in one step) are kept apart" if g.label == "mixed"
                   else f"other kernels than the paired {g.label} forwards" if g.label in NAMED and paired_same
                   else f"the mock has no {g.label} phase" if g.label in NAMED
                   else "no mock phase resembles these forwards")
            rows.append({"key": None, "pid": pid, "mock_phase": None, "mock_forwards": 0, "mock_kernels": np.nan,
                         "e2e_group": g.label, "e2e_forwards": len(g.forwards), "evidence": g.evidence,
                         "confidence": np.nan, "confidence_word": "", "family_overlap": np.nan,
                         "shape_overlap": np.nan, "e2e_kernels": g.kernels, "note": f"not compared: {why}"})
    cols = ["key", "pid", "mock_phase", "mock_forwards", "mock_kernels", "e2e_group", "e2e_forwards", "evidence",
            "confidence", "confidence_word", "family_overlap", "shape_overlap", "e2e_kernels", "note"]
    table = pd.DataFrame(rows, columns=cols)
    if not multi:
        table = table.drop(columns=["pid"])
    return Pairing(table=table, mock=mock_map, e2e=e2e_map, keys=list(dict.fromkeys(keys)))
