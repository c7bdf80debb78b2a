"""Why a mock is not aligned: each cause the kernels show, with its evidence and the fix, ranked by
the share of the latency gap it explains (seed 002's troubleshooting table as rules).

Each detector reads the comparison's evidence (evidence.py) and claims the (phase, family) pairs it
explains; a later detector leaves claimed pairs alone, so one difference has one cause. Wording and
patterns live in align/data/causes.toml (rules.py). Nothing found where a check failed is said as
such (``unexplained``), never guessed.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from align.lazy import np, pd

from align.diagnose.evidence import CONFIG, GRID, Evidence, read
from align.diagnose.rules import Rules, load_rules

MAX_NAMED = 3


@dataclass
class Cause:
    kind: str              # dtype, batch, prompt, tokens, implementation, backend, submodule, count, graph, compiled,
    #                        prep, after, extra, contention, unexplained
    phase: str             # the compared phases it was seen in, "context, generation"
    says: str              # the cause, with its numbers
    fix: str
    source: str            # the seed row or evidence the rule rests on
    evidence: dict = field(default_factory=dict)
    explains: float = 0.0  # share of the families' latency gap it accounts for
    families: list[str] = field(default_factory=list)  # phase:family pairs it explains

    @property
    def label(self) -> str:
        """The kind, with what it names where several of a kind can occur (``submodule: the indexer``)."""
        what = self.evidence.get("submodule") or self.evidence.get("family")
        return f"{self.kind}: {_short(what)}" if what else self.kind

    def to_dict(self) -> dict:
        return {**asdict(self), "label": self.label}


def _phases(phases) -> str:
    return ", ".join(dict.fromkeys(phases))


def _short(family: str) -> str:
    """A family without its folding prefix: ``elementwise_kernel:MulFunctor`` -> ``MulFunctor``."""
    short = re.sub(r"^\w+:(?!:)", "", family)
    return re.sub(r"<.*", "<...>", short) if len(short) > 60 else short


def _named(fams, limit: int = MAX_NAMED) -> str:
    fams = list(dict.fromkeys(fams))
    shown = ", ".join(_short(f) for f in fams[:limit])
    return shown + (f" and {len(fams) - limit} more" if len(fams) > limit else "")


def _families(n: int, what: str = "") -> str:
    return f"{n} {what}famil{'y' if n == 1 else 'ies'}"


def _times(n: float) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n:g} times")


class _Claims:
    """(phase, family) pairs already explained by a cause."""

    def __init__(self):
        self.pairs: set[tuple[str, str]] = set()

    def free(self, phase: str, family: str) -> bool:
        return (phase, family) not in self.pairs

    def take(self, pairs) -> set[tuple[str, str]]:
        new = {p for p in pairs if p not in self.pairs}
        self.pairs |= new
        return new


def _differing(ev: Evidence, status: tuple[str, ...] | None = None) -> pd.DataFrame:
    f = ev.families
    return f[f["status"] != "match"] if status is None else f[f["status"].isin(status)]


# ---- dtype -----------------------------------------------------------------------------------
def compute_dtype(k: pd.DataFrame, rules: Rules) -> dict | None:
    """The dtype most of the compute kernels' time carries: {dtype, width, share, families}."""
    k = k[k["kind"] == 0]
    comp = k[_names_match(k["name"], rules.compute.search)]
    comp = _tokens_of(comp if len(comp) else k, rules)
    if comp.empty:
        return None
    by_width = comp.groupby("width", observed=True)["duration"].sum()
    width = int(by_width.idxmax())
    share = float(by_width.max() / by_width.sum())
    if share < rules.min_share:
        return None
    same = comp[comp["width"] == width]
    names = same.groupby("dtype", observed=True)["duration"].sum().sort_values(ascending=False)
    specific = [d for d in names.index if d != "16-bit"]
    dtype = specific[0] if specific else names.index[0]
    fams = same.groupby("family", observed=True)["duration"].sum().sort_values(ascending=False)
    return {"dtype": dtype, "width": width, "share": round(share, 3), "families": list(fams.index[:MAX_NAMED])}


def _names_match(names: pd.Series, test) -> np.ndarray:
    """``test`` of each kernel name as a boolean mask, run once per distinct name."""
    uniq = pd.unique(names)
    hit = {n: bool(test(n)) for n in uniq}
    return np.fromiter((hit[n] for n in names), bool, len(names)) if len(names) else np.zeros(0, bool)


def _tokens_of(k: pd.DataFrame, rules: Rules) -> pd.DataFrame:
    """The kernels of ``k`` whose names name a dtype, with its ``width`` and ``dtype`` (one regex
    pass per distinct name)."""
    k = k[k["kind"] == 0]
    found = {n: rules.dtype_of(n) for n in pd.unique(k["name"])}
    width = np.array([found[n].width if found[n] is not None else -1 for n in k["name"]], dtype=np.int64)
    dtype = np.array([found[n].dtype if found[n] is not None else "" for n in k["name"]], dtype=object)
    keep = width >= 0
    return k[keep].assign(width=width[keep], dtype=dtype[keep])


def _modal(df: pd.DataFrame, key: list[str], value: str) -> pd.Series:
    """Per ``key``, the ``value`` most rows hold (ties: the largest), one grouping for all keys."""
    counts = df.groupby(key + [value], dropna=False, observed=True).size().reset_index(name="n")
    counts = counts.sort_values(["n", value], kind="stable").drop_duplicates(key, keep="last")
    return counts.set_index(key)[value]


def _family_widths(k: pd.DataFrame, rules: Rules) -> dict[str, tuple[int, str]]:
    """Family -> (width, dtype) most of its time carries, over kernels whose names name a dtype."""
    k = _tokens_of(k, rules)
    if k.empty:
        return {}
    by = k.groupby(["family", "width"], observed=True)["duration"].sum().reset_index()
    best = by.sort_values("duration", kind="stable").drop_duplicates("family", keep="last")[["family", "width"]]
    names = k.groupby(["family", "width", "dtype"], observed=True)["duration"].sum().reset_index().merge(best)
    # a specific dtype before "16-bit" (cuDNN's f16 says bf16 or fp16), then the most time
    names = names.assign(vague=names["dtype"] == "16-bit").sort_values(["vague", "duration"], ascending=[False, True],
                                                                         kind="stable")
    names = names.drop_duplicates("family", keep="last")
    return {f: (int(w), d) for f, w, d in zip(names["family"], names["width"], names["dtype"])}


def _own_share(mine: pd.DataFrame, other: pd.DataFrame, width: int, rules: Rules) -> float:
    """The share of ``mine``'s compute time at ``width`` spent in kernels ``other`` runs by the same
    full name: near 1 when ``mine`` only lacks a sub-op of another dtype (a float32 indexer left out),
    near 0 when its GEMMs were instantiated for another dtype."""
    comp = mine[(mine["kind"] == 0) & _names_match(mine["name"], lambda n: (rules.compute.search(n))
                                                      and (t := rules.dtype_of(n)) is not None and t.width == width)]
    total = float(comp["duration"].sum())
    if not total:
        return 0.0
    return float(comp.loc[comp["name"].astype(str).isin(set(other["name"].astype(str))), "duration"].sum() / total)


def _dtype(ev: Evidence, rules: Rules, claims: _Claims) -> list[Cause]:
    """The same families run at another width on the two sides (the op's own kernels instantiated
    for another dtype); the compute kernels' dtypes name it. A sub-op of another dtype missing on one
    side (an fp32 indexer) changes no shared family's width, so it is no dtype cause."""
    seen, per_phase = [], {}
    for ph in ev.phases:
        wa = _family_widths(ev.mock[ev.mock["phase"] == ph], rules)
        wb = _family_widths(ev.e2e[ev.e2e["phase"] == ph], rules)
        both = sorted(set(wa) & set(wb))
        time = ev.e2e[ev.e2e["phase"] == ph].groupby("family", observed=True)["duration"].sum()
        differ = sorted((f for f in both if wa[f][0] != wb[f][0]), key=lambda f: -float(time.get(f, 0)))
        a = compute_dtype(ev.mock[ev.mock["phase"] == ph], rules)
        b = compute_dtype(ev.e2e[ev.e2e["phase"] == ph], rules)
        compute_differs = a is not None and b is not None and a["width"] != b["width"] and \
            _own_share(ev.mock[ev.mock["phase"] == ph], ev.e2e[ev.e2e["phase"] == ph], a["width"], rules) < 0.5
        # many shared families at another width; or the GEMMs at another width and some shared family too
        if not differ or not ((len(differ) >= 2 and len(differ) >= 0.25 * len(both)) or compute_differs):
            continue
        pairs = pd.Series([(wa[f][1], wb[f][1]) for f in differ]).value_counts()
        ma, mb = pairs.index[0]
        if a is not None and b is not None and a["width"] != b["width"]:
            ma, mb = a["dtype"], b["dtype"]
        seen.append(ph)
        per_phase[ph] = {"mock": ma, "e2e": mb, "families": len(differ), "of": len(both),
                         "examples": [{"family": f, "mock": wa[f][1], "e2e": wb[f][1]} for f in differ[:MAX_NAMED]],
                         "compute": {"mock": a, "e2e": b}}
    if not seen:
        return []
    first = per_phase[seen[0]]
    ma, mb = first["mock"], first["e2e"]
    pairs = set()
    for ph in seen:
        for k, other in ((ev.mock, ev.e2e), (ev.e2e, ev.mock)):
            mine = k[k["phase"] == ph]
            theirs = set(other.loc[other["phase"] == ph, "name"])
            only = mine[~mine["name"].isin(theirs)]
            for fam, names in only.groupby("family", observed=True)["name"]:
                if any(rules.dtype_of(n) is not None for n in set(names)):
                    pairs.add((ph, fam))
    # another dtype changes the kernels a library picks, and how many (split-K, workspace memsets)
    counts = _differing(ev, ("count", "slower", "faster"))
    pairs |= {(p, f) for p, f in zip(counts["phase"], counts["family"]) if p in seen}
    pairs = claims.take(pairs)
    ex = first["examples"][0]
    evidence = (f"{first['families']} of {first['of']} kernel families on both sides run at another width, e.g. "
                f"{_short(ex['family'])} {ex['mock']} vs {ex['e2e']}")
    comp = first["compute"]
    if comp["mock"] is not None and comp["e2e"] is not None and comp["mock"]["width"] != comp["e2e"]["width"]:
        evidence += (f"; GEMM/attention: {_named(comp['mock']['families'], 2)} in the mock, "
                     f"{_named(comp['e2e']['families'], 2)} in the E2E run")
    says, fix, source = rules.say("dtype", mock=ma, e2e=mb, evidence=evidence, torch=rules.torch.get(mb, mb))
    return [Cause("dtype", _phases(seen), says, fix, source, {"per_phase": per_phase}, ev.gap(pairs),
                  [f"{p}:{f}" for p, f in sorted(pairs)])]


# ---- attention implementation ----------------------------------------------------------------
def _implementations(k: pd.DataFrame, rules: Rules) -> dict[str, tuple]:
    """Implementation name -> (implementation, families, time) of the kernels of ``k``."""
    out: dict[str, list] = {}
    for (fam, name), d in k.groupby(["family", "name"], observed=True)["duration"].sum().items():
        impl = rules.implementation(name)
        if impl is not None:
            row = out.setdefault(impl.name, [impl, set(), 0.0])
            row[1].add(fam)
            row[2] += float(d)
    return {n: (v[0], v[1], v[2]) for n, v in out.items()}


def _implementation(ev: Evidence, rules: Rules, claims: _Claims, found: list[Cause]) -> list[Cause]:
    """Per part of the op (attention, experts): the implementation most of its time runs on each
    side; where they differ, a cause (another dtype explains another SDPA backend: folded into it)."""
    dtype = next((c for c in found if c.kind == "dtype"), None)
    out: dict[tuple, dict] = {}
    for ph in ev.phases:
        a = _implementations(ev.mock[ev.mock["phase"] == ph], rules)
        b = _implementations(ev.e2e[ev.e2e["phase"] == ph], rules)
        for of in dict.fromkeys(v[0].of for v in list(a.values()) + list(b.values())):
            pa = {n: v for n, v in a.items() if v[0].of == of}
            pb = {n: v for n, v in b.items() if v[0].of == of}
            if set(pa) == set(pb):
                continue
            ma = max(pa.values(), key=lambda v: v[2])[0] if pa else None
            mb = max(pb.values(), key=lambda v: v[2])[0] if pb else None
            if ma is not None and mb is not None and ma.name == mb.name:
                continue
            if ma is None:
                continue  # the mock runs none it names: the missing checks and sub-modules speak to it
            fams = {(ph, f) for v in list(pa.values()) + list(pb.values()) for f in v[1]}
            if dtype is not None and ph in dtype.phase.split(", "):
                # SDPA picks its backend by dtype (float32: memory-efficient or math): the dtype explains it
                dtype.families += [f"{p}:{f}" for p, f in sorted(claims.take(fams))]
                dtype.explains = ev.gap({tuple(x.split(":", 1)) for x in dtype.families})
                dtype.evidence.setdefault("implementation", {})[ph] = {"mock": ma.name, "e2e": mb.name if mb else None}
                continue
            kind = "implementation_one" if mb is None else "backend" if ma.api == mb.api else "implementation"
            row = out.setdefault((kind, of, ma.name, mb.name if mb else None, mb.api if mb else ma.api),
                                 {"phases": [], "pairs": set(), "fams": set()})
            row["phases"].append(ph)
            # an implementation runs its own kernels, and as many GEMMs and elementwise steps as it needs
            counts = _differing(ev, ("count",))
            counts = counts[counts["phase"] == ph]
            row["pairs"] |= fams | set(zip(counts["phase"], counts["family"]))
            row["fams"] |= {f for _, f in fams}
    causes = []
    for (kind, of, ma, mb, api), row in out.items():
        pairs = claims.take(row["pairs"])
        evidence = f"{of} kernels {_named(sorted(row['fams']))}"
        counted = len({f for _, f in pairs} - row["fams"])
        if counted:
            evidence += f"; with it {_families(counted, 'other ')} run another number of times"
        says, fix, source = rules.say(kind, mock=ma, e2e=mb, api=api, of=of, evidence=evidence)
        causes.append(Cause("implementation" if kind == "implementation_one" else kind, _phases(row["phases"]), says,
                            fix, source, {"of": of, "mock": ma, "e2e": mb, "api": api}, ev.gap(pairs),
                            [f"{p}:{f}" for p, f in sorted(pairs)]))
    return causes


# ---- compiled / graph ------------------------------------------------------------------------
def _compiled(ev: Evidence, rules: Rules, claims: _Claims) -> list[Cause]:
    causes = []
    for key, (mock, e2e) in (ev.cmp.compiled or {}).items():
        if bool(mock) == bool(e2e):
            continue
        which, other, fams = ("E2E run", "mock", e2e) if e2e else ("mock", "E2E run", mock)
        pairs = claims.take({(key, f) for f in fams})
        evidence = f"{len(fams)} kernel families generated by torch.compile around the op, e.g. {_named(fams, 2)}"
        says, fix, source = rules.say("compiled", which=which, other=other, evidence=evidence)
        causes.append(Cause("compiled", key, says, fix, source, {"compiled": which, "families": list(fams)},
                            ev.gap(pairs), [f"{p}:{f}" for p, f in sorted(pairs)]))
    return _merge_phases(causes)


def _graph(ev: Evidence, rules: Rules) -> list[Cause]:
    launch = ev.cmp.launch
    if launch is None or launch.empty or not ev.cmp.config["verdict"].get("graph", True):
        return []
    causes = []
    for r in launch[~launch["same"].astype(bool)].to_dict(orient="records"):
        cost = r["e2e_api_ns"] - r["mock_api_ns"]
        graph_side = "mock" if r["mock_mode"] == "graph" else "E2E run"
        evidence = (f"{r['phase']}: the mock launches {r['mock_mode']}, the E2E run {r['e2e_mode']} "
                    f"(mock {r['mock']}; E2E {r['e2e']})")
        if cost == cost:
            evidence += f"; launch calls cost the E2E run {cost / 1e3:+,.0f} us per forward against the mock"
        fix = ("capture the mock's forward in a CUDA graph and replay it (torch.cuda.CUDAGraph), as the E2E run does"
               if r["e2e_mode"] == "graph" else "launch the mock eagerly, as the E2E run does (no CUDA graph)")
        says, fix, source = rules.say("graph", evidence=evidence, fix=fix)
        total = abs(float(ev.totals.loc[r["phase"], "mock_ns"] - ev.totals.loc[r["phase"], "e2e_ns"])) \
            if r["phase"] in ev.totals.index else 0.0
        share = min(1.0, abs(cost) / total) if total and cost == cost else 0.0
        causes.append(Cause("graph", r["phase"], says, fix, source,
                            {"mock": r["mock_mode"], "e2e": r["e2e_mode"], "graph_side": graph_side,
                             "launch_ns_difference": None if cost != cost else float(cost)}, share))
    return causes


# ---- problem size ----------------------------------------------------------------------------
def _token_counts(k: pd.DataFrame, pattern: re.Pattern | None) -> dict[str, int]:
    """Query tokens per forward by phase, from the op's token kernels (one block per query row)."""
    if pattern is None:
        return {}
    tok = k[(k["kind"] == 0) & _names_match(k["name"], pattern.search) & k["gridX"].notna()]
    if tok.empty:
        return {}
    per = _modal(tok, ["phase", "forward"], "gridX").reset_index()
    return {ph: int(g["gridX"].median()) for ph, g in per.groupby("phase", observed=True)}


def _grid_ratios(ev: Evidence, claims: _Claims) -> dict[str, tuple[float, list[str]]]:
    """Per phase: the grid-size ratio mock/E2E most kernels of identical name and configuration
    share (other than 1), and those families."""
    out = {}
    for ph in ev.phases:
        a = ev.mock[(ev.mock["phase"] == ph) & ev.mock["gridX"].notna()]
        b = ev.e2e[(ev.e2e["phase"] == ph) & ev.e2e["gridX"].notna()]
        if a.empty or b.empty:
            continue
        key = ["family", "name"] + CONFIG

        def modal(df):
            g = df.fillna({c: -1 for c in CONFIG})
            return _modal(g.assign(size=g[GRID].prod(axis=1)), key, "size")

        ma, mb = modal(a), modal(b)
        both = ma.index.intersection(mb.index)
        if not len(both):
            continue
        ratio = (ma[both] / mb[both]).round(2)
        fams = pd.Series([i[0] for i in both], index=ratio.index)
        counted = ratio[ratio != 1].groupby(ratio[ratio != 1], observed=True).size()
        if counted.empty:
            out[ph] = (1.0, [])
            continue
        best = float(counted.idxmax())
        if counted.max() < 2 or counted.max() < 0.2 * len(ratio):
            continue
        out[ph] = (best, sorted(set(fams[ratio == best])))
    return out


def _batch_grid(k: pd.DataFrame, rules: Rules) -> int | None:
    """The requests of a decode step, from a kernel whose grid counts them ([[batch_grids]])."""
    for g in rules.batch_grids:
        hit = k[(k["kind"] == 0) & _names_match(k["name"], lambda n: (g.kernels.search(n))) & k[g.dim].notna()]
        if len(hit):
            return int(hit[g.dim].mode().iloc[0])
    return None


def _size(ev: Evidence, rules: Rules, claims: _Claims) -> list[Cause]:
    """Batch, prompt or tokens per forward: in numbers where the op's token kernels (query rows) or a
    decode kernel's grid (requests) show them, else as the ratio most identical kernels' grids share."""
    from align.collect.cases import load_ops
    from align.ops.registry import alternation

    spec = load_ops().get(ev.cmp.op or "")
    pattern = alternation(spec.token_kernels, "token_kernels", "fix collect.toml") if spec and spec.token_kernels else None
    ta, tb = _token_counts(ev.mock, pattern), _token_counts(ev.e2e, pattern)
    ratios = _grid_ratios(ev, claims)

    def pairs_for(phases) -> set:
        shapes = ev.cmp.shapes
        fams = set()
        for ph in phases:
            fams |= {(ph, f) for f in ratios.get(ph, (1, []))[1]}
            if len(shapes):
                s = shapes[(shapes["phase"] == ph) & shapes["cause"].str.startswith("another problem size")]
                fams |= {(ph, f) for f in s["family"]}
            # another size changes latency, and the kernels a library picks (split-K, memsets)
            slow = ev.families[(ev.families["phase"] == ph) & ev.families["status"].isin(["slower", "faster", "count"])]
            fams |= {(ph, f) for f in slow["family"]}
        return claims.take(fams)

    def cause(kind, evidence, phases, numbers, ratio=None, **fields):
        pairs = pairs_for(phases)
        if ratio is None:
            says, fix, source = rules.say(kind, evidence=evidence, phase=_phases(phases), **fields)
        else:
            scale = f"1/{ratio:g} of" if ratio > 1 else f"{1 / ratio:.3g}x"
            says, fix, source = rules.say(f"{kind}_ratio", ratio=f"{ratio:g}x", scale=scale, evidence=evidence,
                                          phase=_phases(phases), **rules.token_words(ev.cmp.op))
        return Cause(kind, _phases(phases), says, fix, source, numbers, ev.gap(pairs), [f"{p}:{f}" for p, f in sorted(pairs)])

    ctx = next((p for p in ev.phases if p.startswith("context")), None)
    gen = next((p for p in ev.phases if p.startswith("generation")), None)
    both = [p for p in (ctx, gen) if p]
    rc, fc = ratios.get(ctx, (1.0, [])) if ctx else (1.0, [])
    rg, fg = ratios.get(gen, (1.0, [])) if gen else (1.0, [])

    def grids(r, fams, ph):
        return f"{ph} grids of {len(fams)} identical kernels {r:g}x ({_named(fams, 2)})"

    # the batch: a decode forward carries one query token per request
    ba = bb = None
    how = ""
    if gen in ta and gen in tb:
        ba, bb = ta[gen], tb[gen]
        how = f"query rows of {_named(sorted(set(ev.e2e.loc[_names_match(ev.e2e['name'], lambda n: (pattern.search(n))), 'family'])), 2)}"
    elif gen:
        ba, bb = _batch_grid(ev.mock[ev.mock["phase"] == gen], rules), _batch_grid(ev.e2e[ev.e2e["phase"] == gen], rules)
        how = "the decode attention's grid"
    if ba is not None and bb is not None:
        if ctx in ta and ctx in tb:
            pa, pb = (ta[ctx] // ba if ba else None), (tb[ctx] // bb if bb else None)
            prompt_ratio = None
        else:
            pa = pb = None
            # the context grids say the prompt only where identical context kernels were found
            prompt_ratio = round(rc / (ba / bb), 2) if bb and ba and fc else None
        numbers = {"mock": {"batch": ba, "prompt": pa, "tokens": ta}, "e2e": {"batch": bb, "prompt": pb, "tokens": tb},
                   "context_grid_ratio": rc, "generation_grid_ratio": rg, "from": how}
        out = []
        same_prompt = (pa is not None and pa == pb) or prompt_ratio == 1
        if ba != bb:
            rest = f" (prompt {pa} both)" if pa is not None and pa == pb else \
                f" (prompt {pa} vs {pb})" if pa is not None and pb is not None else \
                " (prompt as the E2E run's)" if same_prompt and ctx else ""
            out.append(cause("batch", f"{how}: generation {ba} vs {bb}", both, numbers, mock=ba, e2e=bb, rest=rest))
        if pa is not None and pb is not None and pa != pb:
            rest = f", batch {ba} both" if ba == bb else ""
            out.append(cause("prompt", f"{how}: context {ta[ctx]} vs {tb[ctx]}", both, numbers, mock=pa, e2e=pb,
                             rest=rest))
        elif prompt_ratio is not None and prompt_ratio != 1 and ctx:
            extra = f", batch {ba} both" if ba == bb else f", batch {ba} vs {bb}"
            out.append(cause("prompt", grids(rc, fc, "context") + extra, both, numbers, prompt_ratio))
        return out
    if ctx in ta and ctx in tb and ta[ctx] != tb[ctx] and gen is None:
        return [cause("tokens", "query rows of the token kernels", [ctx], {"mock": {"tokens": ta}, "e2e": {"tokens": tb}},
                      mock=ta[ctx], e2e=tb[ctx], **rules.token_words(ev.cmp.op))]
    # nothing counts them: the grids of identical kernels say by how much, the phases say which
    numbers = {"context_grid_ratio": rc, "generation_grid_ratio": rg, "from": "grids of identical kernels"}
    if ctx and gen and rc != 1 and rc == rg:
        return [cause("batch", grids(rc, fc, "context") + ", " + grids(rg, fg, "generation"), both, numbers, rc)]
    if ctx and rc != 1 and (gen is None or rg == 1):
        # the batch unknown, context tokens are batch x prompt (x top-k for experts): said as tokens
        evidence = grids(rc, fc, "context") + (", generation grids as the E2E run's" if gen else "")
        return [cause("tokens", evidence, [ctx], numbers, rc)]
    if gen and rg != 1:
        return [cause("batch", grids(rg, fg, "generation"), [gen], numbers, rg)]
    return []


# ---- missing sub-module, counts, input preparation --------------------------------------------
def _submodule(ev: Evidence, rules: Rules, claims: _Claims) -> list[Cause]:
    """E2E-only families of a known sub-module (by its range in the E2E run, else its kernels' names),
    where the mock runs none of that sub-module's kernels in the phase."""
    missing = _differing(ev, ("missing",))
    missing = missing[[claims.free(p, f) for p, f in zip(missing["phase"], missing["family"])]]
    if missing.empty:
        return []
    k = ev.e2e[ev.e2e["family"].isin(set(missing["family"]))]
    inner = pd.Series(ev.cmp.e2e.view.inner_names(k), index=k.index) if len(k) else pd.Series(dtype=object)
    mock_inner = set(ev.cmp.mock.view.inner_names(ev.mock)) if len(ev.mock) else set()
    groups: dict[str, dict] = {}
    for ph, fam in zip(missing["phase"], missing["family"]):
        rows = k[(k["phase"] == ph) & (k["family"] == fam)]
        mine = ev.mock[ev.mock["phase"] == ph]
        what = None
        for path in inner.loc[rows.index].dropna().unique() if len(rows) else []:
            parts = re.sub(r"\.\d+(?=\.|$)", ".N", str(path).split(":", 1)[-1]).split(".")
            sub = next((x for x in rules.subops if x.modules is not None and any(x.modules.search(p) for p in parts[-2:])),
                       None)
            if sub is not None:
                what = (sub, ".".join(parts))
                break
        if what is None:
            sub = next((x for x in rules.subops if x.kernels is not None
                        and any(x.kernels.search(n) for n in set(rows["name"]) | {fam})), None)
            what = (sub, None) if sub is not None else None
        if what is None:
            continue
        sub = what[0]
        ran = (sub.kernels is not None and _names_match(mine["name"], lambda n: (sub.kernels.search(n))).any()) or \
            (sub.modules is not None and any(sub.modules.search(str(p).rsplit(".", 1)[-1]) for p in mock_inner if p))
        if ran:
            continue  # the mock runs the sub-module, with other kernels (another size, another variant)
        g = groups.setdefault(sub.name, {"phases": [], "pairs": set(), "modules": set()})
        g["phases"].append(ph)
        g["pairs"].add((ph, fam))
        if what[1]:
            g["modules"].add(what[1])
    causes = []
    for name, g in groups.items():
        # a sub-module left out also takes its share of kernels both sides run (fewer in the mock)
        f = ev.families
        fewer = f[f["phase"].isin(g["phases"]) & (f["mock_count"] > 0) & (f["mock_count"] < f["e2e_count"])]
        pairs = claims.take(g["pairs"] | set(zip(fewer["phase"], fewer["family"])))
        only = sorted({x for _, x in g["pairs"]})
        where = f"E2E range {', '.join(sorted(g['modules']))}: " if g["modules"] else "E2E kernels "
        evidence = f"{where}{_named(only)}, none of them in the mock"
        less = sorted({x for _, x in pairs} - set(only))
        if less:
            evidence += f"; fewer {_named(less, 2)} per forward"
        says, fix, source = rules.say("submodule", what=name, evidence=evidence)
        causes.append(Cause("submodule", _phases(g["phases"]), says, fix, source,
                            {"submodule": name, "modules": sorted(g["modules"]), "families": only}, ev.gap(pairs),
                            [f"{p}:{f}" for p, f in sorted(pairs)]))
    return causes


def _op_span(k: pd.DataFrame, rules: Rules, leave_out: set[str] = frozenset()) -> tuple[pd.Series, pd.Series]:
    """Per forward of ``k``, the start of the op's first and last main (compute) kernel, the families
    ``leave_out`` not counted."""
    main = k[(k["kind"] == 0) & _names_match(k["name"], rules.compute.search) & ~k["family"].isin(leave_out)]
    starts = main.groupby("forward", observed=True)["start"]
    return starts.min(), starts.max()


def _where(rows: pd.DataFrame, span: tuple[pd.Series, pd.Series]) -> str:
    """``before`` the op's first main kernel in every forward, ``after`` its last, else ``among``."""
    first, last = span
    fw = rows["forward"]
    if (rows["start"] < fw.map(first).fillna(np.inf)).all():
        return "before"
    if (rows["start"] > fw.map(last).fillna(-np.inf)).all():
        return "after"
    return "among"


def _outside(ev: Evidence, rules: Rules, claims: _Claims) -> list[Cause]:
    """Mock-only families by where they run in the mock's forward: before the op's first main
    (compute) kernel (input preparation), after its last (work after the op), or among them."""
    extra = _differing(ev, ("extra",))
    extra = extra[[claims.free(p, f) for p, f in zip(extra["phase"], extra["family"])]]
    if extra.empty:
        return []
    k = ev.mock
    span = _op_span(k, rules, set(extra["family"]))
    found: dict[tuple, dict] = {}
    for ph, fam in zip(extra["phase"], extra["family"]):
        rows = k[(k["phase"] == ph) & (k["family"] == fam)]
        if rows.empty:
            continue
        random = rules.prep is not None and any(rules.prep.search(n) for n in set(rows["name"]))
        where = _where(rows, span)
        kind = "prep" if random or where == "before" else "after" if where == "after" else "extra"
        row = found.setdefault((kind, fam), {"phases": [], "pairs": set(),
                                             "per_forward": float(rows.groupby("forward", observed=True).size().median()),
                                             "ns": float(rows.groupby("forward", observed=True)["duration"].sum().median())})
        row["phases"].append(ph)
        row["pairs"].add((ph, fam))
    causes = []
    for (kind, fam), row in found.items():
        pairs = claims.take(row["pairs"])
        evidence = f"{_short(fam)} ({row['per_forward']:g} per forward, {row['ns'] / 1e3:,.1f} us)"
        says, fix, source = rules.say(kind, evidence=evidence, family=fam)
        causes.append(Cause(kind, _phases(row["phases"]), says, fix, source, {"family": fam}, ev.gap(pairs),
                            [f"{p}:{f}" for p, f in sorted(pairs)]))
    return _merge_phases(causes)


ROOTS = ("dtype", "implementation", "backend", "compiled", "batch", "prompt", "tokens")


def _absorb(ev: Evidence, rules: Rules, claims: _Claims, found: list[Cause]) -> None:
    """One-side-only families among the op's kernels, in a phase a root cause (dtype, implementation,
    compilation, size) was found in, go to the largest such cause: libraries pick other kernels for
    another dtype or size (PyTorch's multi-block top-k for long rows, a float32 mask, a bmm's copy)."""
    roots = [c for c in found if c.kind in ROOTS]
    if not roots:
        return
    f = _differing(ev, ("missing", "extra"))
    k = ev.mock
    span = _op_span(k, rules)
    for ph, fam, status in zip(f["phase"], f["family"], f["status"]):
        if not claims.free(ph, fam):
            continue
        owner = max((c for c in roots if ph in c.phase.split(", ")), key=lambda c: c.explains, default=None)
        if owner is None:
            continue
        if status == "extra":
            rows = k[(k["phase"] == ph) & (k["family"] == fam)]
            if len(rows) and _where(rows, span) != "among":
                continue  # before or after the op: the mock's range holds more than the op
        claims.take({(ph, fam)})
        owner.families.append(f"{ph}:{fam}")
        owner.evidence.setdefault("one_side_only", []).append(f"{ph}:{fam}")
    for c in roots:
        only = c.evidence.get("one_side_only")
        if only:
            c.explains = ev.gap({tuple(x.split(":", 1)) for x in c.families})
            c.says = c.says[:-1] + f"; with it {_families(len(only))} on one side only)" if c.says.endswith(")") else c.says


def _count(ev: Evidence, rules: Rules, claims: _Claims) -> list[Cause]:
    tol = ev.cmp.config["diff"]["count_tolerance"]
    f = ev.families
    off = f[(f["mock_count"] > 0) & (f["e2e_count"] > 0) & ((f["mock_count"] - f["e2e_count"]).abs() > tol)]
    off = off[[claims.free(p, x) for p, x in zip(off["phase"], off["family"])]]
    if off.empty:
        return []
    pairs = claims.take(set(zip(off["phase"], off["family"])))
    words = [f"{_short(r.family)} {_times(r.mock_count)} per {r.phase} forward where the E2E run launches it "
             f"{_times(r.e2e_count)}" for r in off.itertuples()][:MAX_NAMED]
    evidence = "; ".join(words) + (f" and {len(off) - MAX_NAMED} more" if len(off) > MAX_NAMED else "")
    says, fix, source = rules.say("count", evidence=evidence)
    counts = [{"phase": r.phase, "family": r.family, "mock": float(r.mock_count), "e2e": float(r.e2e_count)}
              for r in off.itertuples()]
    return [Cause("count", _phases(off["phase"]), says, fix, source, {"counts": counts}, ev.gap(pairs),
                  [f"{p}:{x}" for p, x in sorted(pairs)])]


# ---- nothing in the kernels ------------------------------------------------------------------
def same_launch_ratio(ev: Evidence) -> float | None:
    """Median over kernels launched identically on both sides (full name, grid, block) of the
    mock's median duration over the E2E run's: how fast the same work ran on each side."""
    key = ["phase", "name"] + GRID + CONFIG
    a = ev.mock[ev.mock["kind"] == 0].fillna({c: -1 for c in GRID + CONFIG})
    b = ev.e2e[ev.e2e["kind"] == 0].fillna({c: -1 for c in GRID + CONFIG})
    ma, mb = a.groupby(key, observed=True)["duration"].median(), b.groupby(key, observed=True)["duration"].median()
    both = ma.index.intersection(mb.index)
    if len(both) < 3:
        return None
    return float((ma[both] / mb[both]).median())


def _spread(side) -> float:
    fw = side.forwards.forwards
    kept = fw[fw["kept"]]
    spreads = [float(g["latency_ns"].quantile(0.9) / g["latency_ns"].quantile(0.1))
               for _, g in kept.groupby("phase", observed=True) if len(g) >= 3 and g["latency_ns"].quantile(0.1) > 0]
    return max(spreads) if spreads else 1.0


def _unexplained(ev: Evidence, rules: Rules, checks: pd.DataFrame) -> list[Cause]:
    failed = [r for r in checks.to_dict(orient="records") if not r["passed"]]
    if not failed:
        return []
    ratio = same_launch_ratio(ev)
    names = ", ".join(r["name"] for r in failed)
    if ratio is not None and (ratio > 1.5 or ratio < 1 / 1.5):
        slow, steady = ("mock", ev.cmp.e2e) if ratio > 1 else ("E2E", ev.cmp.mock)
        slow_side = ev.cmp.mock if ratio > 1 else ev.cmp.e2e
        s_slow, s_steady = _spread(slow_side), _spread(steady)
        if s_slow > 1.2 * s_steady:
            says, fix, source = rules.say("contention", ratio=f"{max(ratio, 1 / ratio):.2f}x", slow=slow,
                                          spread=f"{s_slow:.2f}x", steady="mock's" if slow == "E2E" else "E2E run's",
                                          steady_spread=f"{s_steady:.2f}x")
            return [Cause("contention", _phases(ev.phases), says, fix, source,
                          {"same_launch_ratio": ratio, "spread": {slow: s_slow}}, 1.0)]
    evidence = f"the checks that failed ({names}) show no dtype, size, implementation, module, launch or compilation difference"
    if ratio is not None:
        evidence += f"; identical launches take {ratio:.2f}x as long in the mock"
    says, fix, source = rules.say("unexplained", what="the difference", evidence=evidence)
    return [Cause("unexplained", _phases(ev.phases), says, fix, source,
                  {"failed": [r["name"] for r in failed], "same_launch_ratio": ratio}, 0.0)]


def _merge_phases(causes: list[Cause]) -> list[Cause]:
    """One cause per (kind, wording) however many phases showed it."""
    out: dict[tuple, Cause] = {}
    for c in causes:
        key = (c.kind, c.fix, re.sub(r"\b(context|generation|mixed)\b", "", c.says))
        if key in out:
            o = out[key]
            o.phase = _phases(o.phase.split(", ") + c.phase.split(", "))
            o.families += c.families
            o.explains += c.explains
        else:
            out[key] = c
    return list(out.values())


def diagnose(cmp, checks: pd.DataFrame, rules: Rules | None = None) -> list[Cause]:
    """The causes of a comparison whose checks failed, most of the gap first ([] when all passed)."""
    if checks["passed"].all():
        return []
    rules = rules or load_rules()
    ev = read(cmp)
    claims = _Claims()
    found: list[Cause] = []
    found += _dtype(ev, rules, claims)
    found += _implementation(ev, rules, claims, found)
    found += _compiled(ev, rules, claims)
    found += _graph(ev, rules)
    found += _size(ev, rules, claims)
    found += _submodule(ev, rules, claims)
    _absorb(ev, rules, claims, found)
    found += _outside(ev, rules, claims)
    found += _count(ev, rules, claims)
    if not found:
        found = _unexplained(ev, rules, checks)
    return sorted(found, key=lambda c: -c.explains)
