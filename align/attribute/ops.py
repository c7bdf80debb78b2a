"""Per-op kernel sets: which GPU work belongs to an operator, per forward, per phase.

An op's kernels are those inside NVTX ranges matching the op's range patterns (or a user's
``range_pattern``): at launch time, and for CUDA-graph kernels also at capture time, where the
per-layer ranges of a graph-replayed step exist. Where the profile has no such range, kernel-name
patterns decide, and an op whose kernels are shared by many ops (GEMM) is marked ambiguous rather
than guessed. Every row says which method attributed it.

A *forward* is one instance of the op's outermost matching range (or of an iteration range);
a captured range replayed by several graph launches makes one forward per launch. Range patterns
are matched against what a range names (markers.label): a layer-wise marker's module path, not its
dict text. An op whose own range sits inside the module that holds all of it (DSA's indexer inside
``self_attn``; MoE's experts inside ``mlp``) is cut at that module, its registry ``scope``.

Everything is decided on the range tree and on the distinct kernel names, then looked up per GPU
op through integer codes (its launch call's innermost range, its name code), so millions of
kernels cost a few array gathers and no per-kernel Python objects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from align.attribute import markers
from align.attribute.launches import KEY as LAUNCH_KEY, KEY_SHIFT, KIND_NAMES
from align.attribute.projection import Projection
from align.attribute.ranges import NO_RANGE
from align.errors import AlignError, arg
from align.ops.registry import Registry, load_registry
from align.profile.reader import Profile
from align.profile.schema import KERNEL_TABLE

METHODS = np.array(["nvtx", "nvtx-capture", "name", "name-shared"], dtype=object)
PHASES = np.array(["all", "context", "generation", "mixed"], dtype=object)  # code 0: no evidence, or conflicting
# what decided an item's phase, strongest first: the user's mapping, phase words in enclosing
# ranges, engine step ranges that count their requests, the input shapes of layer-wise markers;
# "none": left to the kernels (compare/pairing)
EVIDENCE = np.array(["none", "user", "phase ranges", "engine steps", "marker shapes", "server batching"], dtype=object)
ID_BITS = 30  # name ids below 2^30: (shown, demangled) pack into one int64


@dataclass
class Forwards:
    """Per-forward figures of one op: a row per (phase, family) and what was dropped as warm-up."""

    families: pd.DataFrame
    forwards: pd.DataFrame
    skipped: dict[str, int] = field(default_factory=dict)
    cold: dict[str, int] = field(default_factory=dict)
    # per kept forward and family: kernels (count) and GPU time (latency_ns); what `families` is the
    # median of, so several reports' forwards can be pooled (align.scale.analyses)
    by_forward: pd.DataFrame | None = None


# how a kernel was launched, as the kernel table records it (launch_details)
LAUNCH_COLUMNS = ["gridX", "gridY", "gridZ", "blockX", "blockY", "blockZ", "registersPerThread",
                  "staticSharedMemory", "dynamicSharedMemory"]


class OpView:
    """GPU work of one profile with everything needed to cut it by op, forward and phase."""

    def __init__(self, profile: Profile, registry: Registry | None = None, name: str = "demangled",
                 where: str | None = None, phase_map: list[tuple[str, str]] | None = None):
        """``phase_map``: (range regex, phase) pairs the user gives; they decide before any other evidence."""
        self.profile = profile
        self.registry = registry or load_registry()
        self.where = where
        self.phase_map = [(_regex(rx, "phase map"), _phase_name(ph)) for rx, ph in (phase_map or [])]
        self._proj = Projection(profile, where, call_durations=True)
        self._proj.without_spans()
        self.name_kind = name
        self._texts = self._proj.ranges.df["text"].astype(object).to_numpy()
        self._labels = self._per_text(markers.label, object)
        origins, self._cap = self._proj.captures
        self._node_index = pd.Index(origins["graph_node_id"].to_numpy()) if len(origins) else pd.Index([])
        self._launch_key = self._proj.gpu.launches["key"].to_numpy(np.int64)
        self._launch_api_ns = self._proj.gpu.launches["api_ns"].to_numpy()
        self.items = self._items()
        self._phase = None
        self._evidence = None
        # what remains needed is each launch's innermost range (calls.inner) and the items
        self._proj.release_gpu_ops()

    def _items(self) -> pd.DataFrame:
        """One row per GPU op with integer columns; ``code`` indexes :attr:`names`."""
        ops = self._proj.gpu.ops
        kind = ops["kind"].to_numpy()
        full = ops["name_id"].to_numpy(np.int64)
        shown = np.where(ops["short_id"].to_numpy() >= 0, ops["short_id"].to_numpy(), full) \
            if self.name_kind == "short" else full
        # memcpy/memset have no name id: give each kind its own negative id
        full = np.where(kind == 0, full, -1 - kind.astype(np.int64))
        shown = np.where(kind == 0, shown, full)
        codes, uniq = pd.factorize((shown + (1 << ID_BITS)) << (ID_BITS + 1) | (full + (1 << ID_BITS)))
        u_shown = (uniq >> (ID_BITS + 1)) - (1 << ID_BITS)
        u_full = (uniq & ((1 << (ID_BITS + 1)) - 1)) - (1 << ID_BITS)
        strings = self.profile.strings()

        def label(ids: np.ndarray) -> np.ndarray:
            text = strings.reindex(ids).to_numpy(dtype=object)
            return np.where(ids >= 0, text, np.array([f"[CUDA {KIND_NAMES[-1 - i]}]" if i < 0 else ""
                                                      for i in ids], dtype=object))

        names = pd.DataFrame({"name": label(u_shown), "demangled": label(u_full)})
        names["family"] = [self.registry.family(n) for n in names["demangled"]]
        names["variant"] = [self.registry.variant(n) for n in names["demangled"]]
        # unique display strings, so per-item columns can be categoricals over integer codes
        names["family_code"], self._family_cats = pd.factorize(names["family"])
        names["variant_code"], self._variant_cats = pd.factorize(names["variant"])
        names["name_code"], self._name_cats = pd.factorize(names["name"])
        self.names = names
        launch = ops["launch"].to_numpy()
        # the launching process: the high bits of the launch key (pid << 40 | correlation id)
        pid = np.where(launch >= 0, self._launch_key[np.maximum(launch, 0)] >> KEY_SHIFT, -1) \
            if len(self._launch_key) else np.full(len(launch), -1, np.int64)
        return pd.DataFrame({"code": codes.astype(np.int32), "start": ops["start"].to_numpy(),
                             "duration": ops["end"].to_numpy() - ops["start"].to_numpy(),
                             "launch": launch, "graph_node_id": ops["graph_node_id"].to_numpy(),
                             "pid": pid.astype(np.int32), "kind": kind}, copy=False)

    def range_texts(self) -> list[str]:
        """The distinct names of the profile's NVTX ranges as patterns see them (a layer-wise
        marker's module path, any other range's text)."""
        return [t for t in pd.unique(self._labels) if isinstance(t, str)] if len(self._labels) else []

    def _per_text(self, fn, dtype) -> np.ndarray:
        """``fn`` of each range's text, computed once per distinct text."""
        if not len(self._texts):
            return np.zeros(0, dtype)
        uniq = pd.unique(self._texts)
        return pd.Series(self._texts, dtype=object).map({t: fn(t) for t in uniq}).to_numpy(dtype=dtype)

    # ---- tree lookups -----------------------------------------------------------------------
    def _range_mark(self, match) -> np.ndarray:
        """Ranges whose name (module path of a marker, else text) ``match`` accepts; output markers never."""
        if not len(self._labels):
            return np.zeros(0, bool)
        uniq = pd.unique(self._labels)
        hit = {t: isinstance(t, str) and bool(match(t)) for t in uniq}
        return pd.Series(self._labels, dtype=object).map(hit).to_numpy(dtype=bool)

    def _scoped(self, mark: np.ndarray, spec) -> np.ndarray:
        """``mark`` with, for each marked range, the nearest range around it (itself included) that
        is the op's scope: the module holding the whole op (``scope`` in the registry)."""
        if spec is None or not spec.scope or not mark.any():
            return mark
        holder = self._proj.ranges.nearest_on_chain(self._range_mark(spec.matches_scope))
        up = holder[mark]
        out = mark.copy()
        out[up[up >= 0]] = True
        return out

    def _inner_at_launch(self) -> np.ndarray:
        launch = self.items["launch"].to_numpy()
        inner = self._proj.calls.inner
        if len(inner) == 0:
            return np.full(len(launch), NO_RANGE, np.int64)
        return np.where(launch >= 0, inner[np.maximum(launch, 0)], NO_RANGE)

    def _inner_at_capture(self) -> np.ndarray | None:
        """Innermost range around each item's node capture, or None when nothing was captured."""
        node = self.items["graph_node_id"].to_numpy()
        if not len(self._node_index) or not (node >= 0).any():
            return None
        pos = self._node_index.get_indexer(node)
        return np.where(pos >= 0, self._cap.inner[np.maximum(pos, 0)], NO_RANGE)

    def _se_first(self, mark: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """First marked start/end range enclosing each item's launch and capture (None: none anywhere)."""
        out = []
        for located, by_node in ((self._proj.calls, False), (self._cap, True)):
            if not len(located.se_ranges) or not mark[located.se_ranges].any():
                out.append(None)
                continue
            sel = mark[located.se_ranges]
            first = pd.Series(located.se_ranges[sel]).groupby(located.se_items[sel]).first()
            if by_node:
                key = self._node_index.get_indexer(self.items["graph_node_id"].to_numpy()) \
                    if len(self._node_index) else np.full(len(self.items), -1)
            else:
                key = self.items["launch"].to_numpy()
            res = np.full(len(self.items), NO_RANGE, np.int64)
            ok = key >= 0
            res[ok] = first.reindex(key[ok]).fillna(NO_RANGE).to_numpy(np.int64)
            out.append(res)
        return out[0], out[1]

    def _lookup(self, per_range: np.ndarray, mark: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``per_range`` (a range index per range, -1 for none) through each item's innermost range,
        at launch and at capture, completed with the marked start/end ranges."""
        a_in = self._inner_at_launch()
        at_launch = np.where(a_in >= 0, per_range[np.maximum(a_in, 0)], NO_RANGE) if len(per_range) else a_in
        c_in = self._inner_at_capture()
        at_capture = None if c_in is None else (
            np.where(c_in >= 0, per_range[np.maximum(c_in, 0)], NO_RANGE) if len(per_range) else c_in)
        se_l, se_c = self._se_first(mark)
        if se_l is not None:
            at_launch = np.where(at_launch >= 0, at_launch, se_l)
        if se_c is not None:
            at_capture = se_c if at_capture is None else np.where(at_capture >= 0, at_capture, se_c)
        return at_launch, at_capture

    def phase_codes(self) -> np.ndarray:
        """Phase code per item (index into PHASES) from the ranges enclosing it, launch or capture."""
        if self._phase is None:
            self._decide_phases()
        return self._phase

    def evidence_codes(self) -> np.ndarray:
        """What decided each item's phase (index into EVIDENCE)."""
        if self._evidence is None:
            self._decide_phases()
        return self._evidence

    def _phase_rules(self) -> list[tuple[dict[str, np.ndarray], bool]]:
        """Per evidence level (EVIDENCE[1:]): phase -> the ranges that say so, and whether the
        outermost such range on a chain decides (marker shapes: a decoder layer's input, not the
        last token an ``lm_head`` inside it is given) rather than the nearest."""
        reg = self.registry
        user: dict[str, list] = {}
        for rx, ph in self.phase_map:
            user.setdefault(ph, []).append(rx)
        words = {ph: (lambda t, rx=rx: bool(rx.search(t)) and not reg.is_step(t)) for ph, rx in reg.phase_patterns.items()}
        steps = {ph: (lambda t, ph=ph: reg.step_phase(t) == ph) for ph in ("context", "generation", "mixed")}
        levels = [({ph: self._range_mark(lambda t, rxs=rxs: any(rx.search(t) for rx in rxs)) for ph, rxs in user.items()},
                   False),
                  ({ph: self._range_mark(test) for ph, test in words.items()}, False),
                  ({ph: self._range_mark(test) for ph, test in steps.items()}, False)]
        shaped = self._per_text(markers.phase, object)
        levels.append(({ph: shaped == ph for ph in ("context", "generation")}, True))
        return levels

    def _decide_phases(self) -> None:
        """At each level of evidence, an item enclosed by ranges of exactly one phase gets that phase;
        items left open (no such range, or ranges of several phases) go to the next level."""
        r = self._proj.ranges
        n = len(self.items)
        phase = np.zeros(n, np.int8)
        evidence = np.zeros(n, np.int8)
        open_ = np.ones(n, bool)
        codes = {p: i for i, p in enumerate(PHASES)}
        # a range that never ended (closed by nsys at the last timestamp) is no evidence of a phase
        closed = self._proj.ranges.df["open_end"].to_numpy() == 0
        for level, (rules, outermost) in enumerate(self._phase_rules(), start=1):
            found = {}
            for ph, marked in rules.items():
                mark = marked & closed
                if not mark.any():
                    continue
                chain = r.nearest_on_chain(mark, outermost=outermost)
                a, c = self._lookup(chain, mark)
                found[ph] = (a >= 0) if c is None else ((a >= 0) | (c >= 0))
            if not found:
                continue
            hits = np.sum([f for f in found.values()], axis=0)
            for ph, f in found.items():
                take = open_ & f & (hits == 1)
                phase[take] = codes[ph]
                evidence[take] = level
            open_ &= ~(hits == 1)
        self._phase, self._evidence = phase, evidence

    def _frame(self, sel: np.ndarray, method: np.ndarray, **extra) -> pd.DataFrame:
        """Selected items as a readable frame; names, family, phase and method are categoricals
        over integer codes, so millions of rows hold no per-row strings."""
        df = self.items.iloc[sel].reset_index(drop=True)
        df.index = sel
        codes = df["code"].to_numpy()
        df["name"] = pd.Categorical.from_codes(self.names["name_code"].to_numpy()[codes], categories=self._name_cats)
        df["family"] = pd.Categorical.from_codes(self.names["family_code"].to_numpy()[codes],
                                                 categories=self._family_cats)
        df["variant"] = pd.Categorical.from_codes(self.names["variant_code"].to_numpy()[codes],
                                                  categories=self._variant_cats)
        df["phase"] = pd.Categorical.from_codes(self.phase_codes()[sel], categories=PHASES)
        df["evidence"] = pd.Categorical.from_codes(self.evidence_codes()[sel], categories=EVIDENCE)
        df["method"] = pd.Categorical.from_codes(method, categories=METHODS)
        for k, v in extra.items():
            df[k] = v
        return df

    # ---- one op --------------------------------------------------------------------------
    def require_items(self, op: str | None = None, range_pattern: str | None = None,
                      iter_pattern: str | None = None) -> pd.DataFrame:
        """:meth:`op_items`, never empty: no GPU work for the op is an error that says where to look."""
        rows = self.op_items(op, range_pattern=range_pattern, iter_pattern=iter_pattern)
        if rows.empty:
            raise AlignError(f"no GPU work found for {op or range_pattern} in {self.profile.path}",
                             f"check {arg('op')}/{arg('range_pattern')} against `align nvtx` range names, or pass "
                             f"{arg('range_pattern', 'REGEX')}")
        return rows

    def op_items(self, op: str | None = None, range_pattern: str | None = None,
                 iter_pattern: str | None = None) -> pd.DataFrame:
        """The op's GPU work: one row per item with its method, forward key and phase.

        ``range_pattern`` replaces the op's NVTX patterns (a mock marking its iterations
        ``mock_generation``, say); ``iter_pattern`` makes forwards the instances of that range
        instead of the op's range instances. A forward key is the outermost op range's index
        (times 2^32, plus the graph launch + 1 for a replay of a captured range).
        """
        if op is None and range_pattern is None:
            raise AlignError("no op given", f"pass {arg('op', 'NAME')} or {arg('range_pattern', 'REGEX')}")
        spec = self.registry.op(op) if op else None
        matcher = _regex(range_pattern, arg("range_pattern")).search if range_pattern else spec.matches_range
        mark = self._range_mark(matcher)
        if not range_pattern:
            mark = self._scoped(mark, spec)
        outer = self._proj.ranges.nearest_on_chain(mark, outermost=True) if len(mark) else np.zeros(0, np.int64)
        at_launch, at_capture = self._lookup(outer, mark)
        hit_l = at_launch >= 0
        hit = hit_l if at_capture is None else (hit_l | (at_capture >= 0))
        launch = self.items["launch"].to_numpy()
        if hit.any():
            sel = np.flatnonzero(hit)
            by_launch = hit_l[sel]
            rng = np.where(by_launch, at_launch[sel], at_capture[sel] if at_capture is not None else NO_RANGE)
            forward = (rng << 32) + np.where(by_launch, 0, launch[sel] + 1)
            method = np.where(by_launch, 0, 1).astype(np.int8)
            if spec is not None and not range_pattern and not iter_pattern:
                more, m_rng, m_fw = self._rangeless_steps(spec, hit)
                if len(more):
                    order = np.argsort(np.concatenate([sel, more]), kind="stable")
                    sel = np.concatenate([sel, more])[order]
                    rng = np.concatenate([rng, m_rng])[order]
                    forward = np.concatenate([forward, m_fw])[order]
                    method = np.concatenate([method, np.full(len(more), 2, np.int8)])[order]
        elif spec is not None and not range_pattern:
            sel = np.flatnonzero(self.named_for(spec.name))
            rng = np.full(len(sel), NO_RANGE, np.int64)
            forward = np.full(len(sel), -1, np.int64)
            method = np.full(len(sel), 3 if spec.shared else 2, np.int8)
        else:
            sel = np.empty(0, np.int64)
            rng, forward, method = sel, sel, np.empty(0, np.int8)
        if iter_pattern or (len(sel) and (forward < 0).all()):
            pattern = self.registry.iteration_pattern(iter_pattern or "align")
            it_mark = self._range_mark(_regex(pattern, arg("iter_pattern")).search)
            it_outer = self._proj.ranges.nearest_on_chain(it_mark, outermost=True) if len(it_mark) else \
                np.zeros(0, np.int64)
            it_launch, _ = self._lookup(it_outer, it_mark)
            it = it_launch[sel]
            forward = np.where(it >= 0, it << 32, -1)
        if spec is not None and not range_pattern and not iter_pattern and len(sel) and (forward < 0).all() \
                and not spec.shared:
            forward = self._kernel_cut(sel)
        return self._frame(sel, method, op_range=rng, forward=forward)

    def _kernel_cut(self, sel: np.ndarray) -> np.ndarray:
        """Forward keys for the op's kernels (by name) where no NVTX range holds any of them (a server
        that writes none, transformers serve say). Per process, in GPU order, a call of the op is a
        run of its kernels with no other GPU work of the process between them and no family twice:
        the rest of a layer (its GEMMs, norms) runs between two calls. Keys sit above every range's
        (the range count, plus the process's index) so none collides."""
        start = self.items["start"].to_numpy()
        pid = self.items["pid"].to_numpy()
        order = np.lexsort((start, pid))
        pos = np.empty(len(order), np.int64)
        pos[order] = np.arange(len(order))  # each item's place in its process's GPU order
        fam = self.names["family_code"].to_numpy()[self.items["code"].to_numpy()]
        mine = sel[np.lexsort((start[sel], pid[sel]))]
        call = np.empty(len(mine), np.int64)
        n, seen, last = -1, set(), None
        for k, i in enumerate(mine):
            key = (pid[i], pos[i])
            if last is None or key[0] != last[0] or key[1] != last[1] + 1 or fam[i] in seen:
                n, seen = n + 1, set()
            seen.add(fam[i])
            call[k], last = n, key
        step = len(self._texts) + pd.factorize(pid[mine], sort=True)[0].astype(np.int64)
        fw = pd.Series((step << 32) | (1 << 31) | call, index=mine)
        return fw.reindex(sel).to_numpy(np.int64)

    def named_for(self, op: str, items: pd.DataFrame | None = None) -> np.ndarray:
        """Per item (of ``items``, default all), whether its kernel name belongs to ``op``: the first
        op of the registry whose kernel patterns match it."""
        owner = np.array([self.registry.kernel_op(n) == op for n in self.names["demangled"]], dtype=bool)
        codes = (self.items if items is None else items)["code"].to_numpy()
        return owner[codes] if len(owner) else np.zeros(len(codes), bool)

    def _outermost(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The outermost range around each item (a step, a compiled call), at launch and at capture."""
        every = np.ones(len(self._texts), bool)
        return self._lookup(self._proj.ranges.nearest_on_chain(every, outermost=True) if len(every) else
                            np.zeros(0, np.int64), every)

    def _rangeless_steps(self, spec, hit: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The op's kernels, by name, in outermost ranges that hold none of its module ranges: steps
        of a compiled program, where no module hook fires (torch.compile, vLLM's default). Each such
        step runs the op once per layer: its n-th forward starts at the n-th kernel of the family the
        step's first one has. Only kernels whose names belong to the op are its own there (shared
        GEMMs and generated fusions are not): returns (items, step range, forward key)."""
        if spec.shared:
            return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64)
        step, step_c = self._outermost()
        if step_c is not None:
            step = np.where(step >= 0, step, step_c)
        codes = self.items["code"].to_numpy()
        held = np.unique(step[hit & (step >= 0)])
        cand = np.flatnonzero(~hit & self.named_for(spec.name) & (step >= 0) & ~np.isin(step, held))
        if not len(cand):
            return cand, cand, cand
        df = pd.DataFrame({"i": cand, "step": step[cand], "start": self.items["start"].to_numpy()[cand],
                           "family": self.names["family_code"].to_numpy()[codes[cand]]})
        df = df.sort_values(["step", "start"], kind="stable")
        first = df.groupby("step")["family"].transform("first")
        layer = (df["family"] == first).astype(np.int64).groupby(df["step"]).cumsum() - 1
        fw = (df["step"].to_numpy(np.int64) << 32) | (1 << 31) | np.maximum(layer.to_numpy(np.int64), 0)
        order = np.argsort(df["i"].to_numpy(), kind="stable")
        return df["i"].to_numpy()[order], df["step"].to_numpy(np.int64)[order], fw[order]

    def compiled_families(self, items: pd.DataFrame) -> list[str]:
        """Families generated by a compiler (the registry's ``[compiled] kernels``, Inductor's Triton
        kernels) among all GPU work inside the op ranges of ``items``: its module ranges, or the
        compiled steps its forwards were cut from."""
        rx = self.registry.compiled_re
        rng = np.unique(items["op_range"].to_numpy()) if len(items) else np.empty(0, np.int64)
        rng = rng[rng >= 0]
        if rx is None or not len(rng):
            return []
        mark = np.zeros(len(self._texts), bool)
        mark[rng] = True
        a, c = self._lookup(self._proj.ranges.nearest_on_chain(mark, outermost=True), mark)
        inside = (a >= 0) if c is None else ((a >= 0) | (c >= 0))
        fams = self.names["family"].to_numpy()[np.unique(self.items["code"].to_numpy()[inside])]
        return sorted({f for f in fams if rx.search(str(f))})

    def step_texts(self, items: pd.DataFrame) -> np.ndarray:
        """Text of the engine step range (``[iterations]`` with request counts) around each item of
        ``items``, at launch or capture time; "" where none is."""
        r = self._proj.ranges
        mark = self._range_mark(self.registry.is_step)
        out = np.full(len(items), "", dtype=object)
        if not mark.any():
            return out
        at_launch, at_capture = self._lookup(r.nearest_on_chain(mark), mark)
        rng = at_launch if at_capture is None else np.where(at_launch >= 0, at_launch, at_capture)
        rng = rng[items.index.to_numpy()]
        texts = r.df["text"].astype(str).to_numpy()
        out[rng >= 0] = texts[rng[rng >= 0]]
        return out

    def call_ns(self, launch: np.ndarray) -> np.ndarray:
        """How long the CUDA API call behind each launch row took (kernel launch, or ``cudaGraphLaunch``
        for a replayed node), ns; NaN where there is no launch or its call was not traced. Kept from
        the projection's one pass over the runtime table."""
        out = np.full(len(launch), np.nan)
        ok = launch >= 0
        ns = self._launch_api_ns[launch[ok]].astype(float)
        ns[ns < 0] = np.nan
        out[ok] = ns
        return out

    def range_names(self, items: pd.DataFrame, column: str = "op_range") -> np.ndarray:
        """Name of the range in ``column`` of each item (an index into the profile's ranges), "" for none."""
        idx = items[column].to_numpy()
        names = self._proj.ranges.df["name"].astype(str).to_numpy()
        out = np.full(len(items), "", dtype=object)
        out[idx >= 0] = names[idx[idx >= 0]]
        return out

    def inner_names(self, items: pd.DataFrame) -> np.ndarray:
        """Name of the innermost range around each item of ``items`` (at launch, else at capture),
        "" for none: the sub-module a kernel ran in, where every module is ranged."""
        at_launch = self._inner_at_launch()
        at_capture = self._inner_at_capture()
        rng = at_launch if at_capture is None else np.where(at_launch >= 0, at_launch, at_capture)
        rng = rng[items.index.to_numpy()]
        names = self._proj.ranges.df["name"].astype(str).to_numpy()
        out = np.full(len(items), "", dtype=object)
        out[rng >= 0] = names[rng[rng >= 0]]
        return out

    def demangled(self, items: pd.DataFrame) -> np.ndarray:
        """Each item's full (demangled) kernel name: the template arguments carry its dtype."""
        return self.names["demangled"].to_numpy(dtype=object)[items["code"].to_numpy()]

    def per_forward(self, items: pd.DataFrame, skip: int = 0, auto_skip: bool = True,
                    phase: str | None = None) -> Forwards:
        """Counts and latency per forward, by phase and kernel family, as medians over kept forwards."""
        return per_forward(items, skip=skip, auto_skip=auto_skip, phase=phase)

    def launch_details(self, items: pd.DataFrame) -> pd.DataFrame:
        """Each kernel of ``items`` as it was launched: grid and block (x, y, z), registers per
        thread, static and dynamic shared memory (bytes); rows for memcpy/memset are left out."""
        cols = LAUNCH_COLUMNS
        sel = items[(items["kind"] == 0) & (items["launch"] >= 0)]
        have = self.profile.schema.columns(KERNEL_TABLE) if self.profile.schema.has(KERNEL_TABLE) else set()
        if sel.empty or not {"gridX", "blockX", "correlationId", "globalPid"} <= have:
            return pd.DataFrame(columns=cols, index=sel.index[:0])
        present = [c for c in cols if c in have]
        key = self._launch_key[sel["launch"].to_numpy()]
        lo, hi = int(sel["start"].min()), int(sel["start"].max())
        cond = f"start BETWEEN {lo} AND {hi}" + (f" AND {self.where}" if self.where else "")
        q = (f"SELECT {LAUNCH_KEY.format(col='globalPid')} AS key, start, {', '.join(present)} "
             f"FROM {KERNEL_TABLE} WHERE {cond}")
        found = self.profile.engine.frame(q).drop_duplicates(["key", "start"]).set_index(["key", "start"])
        out = found.reindex(pd.MultiIndex.from_arrays([key, sel["start"].to_numpy()]))
        out.index = sel.index
        for c in cols:
            if c not in out:
                out[c] = np.nan
        return out[cols]

    def shapes(self, items: pd.DataFrame) -> pd.Series:
        """Launch shape of each kernel in ``items`` (rows of :meth:`op_items`), ``grid x,y,z block x,y,z``;
        empty for memcpy/memset. Read from the kernel table only for the items' time span, on demand."""
        out = pd.Series("", index=items.index, dtype=object)
        det = self.launch_details(items)
        det = det[det["gridX"].notna()]
        if det.empty:
            return out
        c = {k: det[k].astype("int64").astype(str) for k in ("gridX", "gridY", "gridZ", "blockX", "blockY", "blockZ")}
        out.loc[det.index] = ("grid " + c["gridX"] + "," + c["gridY"] + "," + c["gridZ"] + " block " + c["blockX"]
                              + "," + c["blockY"] + "," + c["blockZ"]).to_numpy()
        return out

    # ---- all ops -------------------------------------------------------------------------
    def overview(self) -> pd.DataFrame:
        """Each item to one op: the outermost enclosing range of an op (its NVTX patterns or scope;
        launch time first, then capture time), as an op's forwards are cut, else the first op whose
        kernel patterns match its name. A row per (op, phase)."""
        r = self._proj.ranges
        op_names = np.array(self.registry.names() + ["unattributed"], dtype=object)
        none = len(op_names) - 1
        # each range to the first op (registry order) it is a range of, its scope included
        range_op = np.full(len(self._texts), none, np.int64)
        for i, spec in enumerate(self.registry.ops):
            own = self._scoped(self._range_mark(spec.matches_range), spec)
            range_op[own & (range_op == none)] = i
        mark = range_op != none
        outer = r.nearest_on_chain(mark, outermost=True) if len(mark) else np.zeros(0, np.int64)
        at_launch, at_capture = self._lookup(outer, mark)
        op = np.full(len(self.items), none, np.int64)
        method = np.full(len(self.items), 2, np.int64)
        for where, m in ((at_capture, 1), (at_launch, 0)):
            if where is None:
                continue
            ok = where >= 0
            op[ok] = range_op[where[ok]]
            method[ok] = m
        op_index = {n: i for i, n in enumerate(op_names)}
        owner = np.array([op_index.get(self.registry.kernel_op(n), none) for n in self.names["demangled"]])
        rest = method == 2
        op[rest] = owner[self.items["code"].to_numpy()[rest]]
        shared = np.array([o.shared for o in self.registry.ops] + [False])
        method[rest & shared[op]] = 3
        fam = self.names["family_code"].to_numpy()[self.items["code"].to_numpy()]
        g = pd.DataFrame({"op": op, "phase": self.phase_codes(), "method": method, "code": self.items["code"].to_numpy(),
                          "family": fam, "duration": self.items["duration"].to_numpy()}, copy=False)
        total = g["duration"].sum()
        df = g.groupby(["op", "phase"], sort=False).agg(
            kernels=("code", "size"), names=("code", "nunique"), families=("family", "nunique"),
            total_ns=("duration", "sum"), method=("method", lambda m: "/".join(sorted(METHODS[np.unique(m)])))
        ).reset_index()
        df["op"] = op_names[df["op"].to_numpy()]
        df["phase"] = PHASES[df["phase"].to_numpy()]
        df["share_pct"] = (100 * df["total_ns"] / total).round(1) if total else 0.0
        df = df[["op", "phase", "kernels", "names", "families", "total_ns", "share_pct", "method"]]
        return df.sort_values("total_ns", ascending=False, kind="stable").reset_index(drop=True)


def per_forward(items: pd.DataFrame, skip: int = 0, auto_skip: bool = True, phase: str | None = None) -> Forwards:
    """Counts and latency per forward, by phase and kernel family, as medians over kept forwards."""
    if skip < 0:
        raise AlignError(f"{arg('skip', str(skip))} is negative", "pass the number of leading forwards to drop (0 or more)")
    df = items[items["forward"] >= 0]
    if phase:
        df = df[df["phase"] == phase]
    fw = (df.groupby("forward", sort=False, observed=True)
            .agg(phase=("phase", "first"), evidence=("evidence", "first"), pid=("pid", "first"),
                 start=("start", "min"), kernels=("code", "size"), latency_ns=("duration", "sum"))
            .reset_index().sort_values("start", kind="stable"))
    kept, skipped, cold = [], {}, {}
    for ph, group in fw.groupby("phase", sort=False, observed=True):
        g = group.iloc[skip:]
        skipped[ph] = min(skip, len(group))
        n_cold = _cold_prefix(g) if auto_skip else 0
        cold[ph] = n_cold
        kept.append(g.iloc[n_cold:])
    fw_kept = pd.concat(kept) if kept else fw.iloc[0:0]
    fw["kept"] = fw["forward"].isin(fw_kept["forward"])
    rows = df[df["forward"].isin(fw_kept["forward"])]
    fam = (rows.groupby(["phase", "forward", "family"], sort=False, observed=True)
               .agg(count=("code", "size"), latency_ns=("duration", "sum")).reset_index())
    n_fw = fw_kept.groupby("phase", observed=True).size()
    by_family = rows.groupby(["phase", "family"], sort=False, observed=True)
    detail = by_family.agg(kernel_median_ns=("duration", "median"), names=("code", "nunique"),
                           example=("name", "first"))
    methods = by_family["method"].agg(lambda m: "/".join(sorted(set(m))))
    variants = _variant_mix(rows, n_fw)
    out = []
    for (ph, family), g in fam.groupby(["phase", "family"], sort=False, observed=True):
        n = int(n_fw[ph])
        counts, lats = np.zeros(n), np.zeros(n)
        counts[: len(g)] = g["count"].to_numpy()
        lats[: len(g)] = g["latency_ns"].to_numpy()
        d = detail.loc[(ph, family)]
        out.append({"phase": ph, "family": family, "forwards": n,
                    "count_per_forward": float(np.median(counts)),
                    "latency_per_forward_ns": float(np.median(lats)),
                    "kernel_median_ns": float(d["kernel_median_ns"]), "method": methods.loc[(ph, family)],
                    "names": int(d["names"]), "variants": variants.get((ph, family), ""), "example": d["example"]})
    families = pd.DataFrame(out, columns=["phase", "family", "forwards", "count_per_forward",
                                          "latency_per_forward_ns", "kernel_median_ns", "method", "names",
                                          "variants", "example"])
    if not families.empty:
        total = families.groupby("phase", observed=True)["latency_per_forward_ns"].transform("sum")
        families.insert(5, "share_pct", (100 * families["latency_per_forward_ns"] / total).round(1))
        families = families.sort_values(["phase", "latency_per_forward_ns"], ascending=[True, False], kind="stable")
    return Forwards(families=families.reset_index(drop=True), forwards=fw.reset_index(drop=True),
                    skipped=skipped, cold=cold, by_forward=fam)


def _variant_mix(rows: pd.DataFrame, n_fw: pd.Series) -> dict[tuple, str]:
    """Per (phase, family) made of several launch variants: each variant's kernels per forward
    (mean over kept forwards), e.g. ``vectorized_elementwise_kernel:MulFunctor 2.5, elementwise_kernel:MulFunctor 13.5``."""
    if rows.empty or "variant" not in rows:
        return {}
    per = rows.groupby(["phase", "family", "variant"], sort=False, observed=True).size().reset_index(name="n")
    out = {}
    for (ph, family), g in per.groupby(["phase", "family"], sort=False, observed=True):
        if len(g) > 1:
            g = g.sort_values("n", ascending=False, kind="stable")
            out[(ph, family)] = ", ".join(f"{v} {n / n_fw[ph]:.3g}" for v, n in zip(g["variant"], g["n"]))
    return out


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


def _phase_name(phase: str) -> str:
    if phase not in PHASES[1:]:
        raise AlignError(f"unknown phase {phase!r} in a phase mapping", f"use {', '.join(PHASES[1:])}")
    return phase


def _regex(pattern: str, what: str) -> re.Pattern:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise AlignError(f"bad regex for {what}: {pattern!r} ({exc})", "use a Python regular expression") from None
