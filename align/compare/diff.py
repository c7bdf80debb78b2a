"""Mock vs E2E, per kernel family per forward: the side-by-side table behind ``align diff``.

Each side is cut to the op (registry NVTX patterns, or ``mock_range``/``e2e_range``; a mock that
marks its iterations with the convention in verdict.toml needs neither) so the mock's input
preparation outside its op region never counts as the op. Then per phase and kernel family: count
and median latency per forward on each side, their ratio and a status.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from align.compare.comparability import Comparability, assess, environment
from align.compare.pairing import NAMED, Pairing, forward_summary, pair
from align.compare.side import ProfileSide, as_side
from align import datafiles
from align.datafiles import Bool, Num, Regex, Str, Table
from align.errors import AlignError, arg
from align.attribute.ops import EVIDENCE, PHASES, Forwards, OpView
from align.ops.registry import Registry, load_registry
from align.loader import load


def load_config(path: str | os.PathLike | None = None) -> dict:
    """Built-in thresholds (align/data/verdict.toml) overridden by ``path`` or ./align-verdict.toml
    (align.datafiles), value by value inside the built-in sections; the user's file is checked
    against :data:`SCHEMA` first."""
    cfg = datafiles.builtin("verdict")
    chosen = datafiles.user_file("verdict", path)
    if chosen:
        user = datafiles.read_user(chosen, "config", "pass a TOML file shaped like align/data/verdict.toml", SCHEMA)
        check_accept(user.get("accept", {}), f"[accept] of config {chosen}")
        for section, values in user.items():
            cfg[section].update(values)
    return cfg


def _op_keys(table: dict, where: str) -> None:
    """[e2e] is keyed by op name (checked against the registry where it is known, :func:`check_e2e_ops`)."""
    from align.ops.registry import valid_op_name

    for key in table:
        if not valid_op_name(key):
            raise AlignError(f"{key!r} in {where} is not an op name", "key [e2e] by op name: OP = 'REGEX'")


def check_e2e_ops(cfg: dict, registry: Registry, where: str = "the config") -> None:
    """Every [e2e] key names an op of the registry: a misspelt one would never be used."""
    import difflib

    for key in cfg.get("e2e", {}):
        if key not in registry.names():
            close = difflib.get_close_matches(key, registry.names(), n=1)
            raise AlignError(f"[e2e] {key} of {where} names no op{f' (did you mean {close[0]!r}?)' if close else ''}",
                             f"known ops: {', '.join(registry.names())}")


# what each threshold may be: a value outside would judge nothing sensible, and inf or nan would
# turn a check off (align.datafiles.Num: finite numbers only)
_RANGE = re.IGNORECASE
SCHEMA = Table({
    "mock": Table({"range": Regex(flags=_RANGE)}),
    "e2e": Table(other=Regex(flags=_RANGE), check=_op_keys),
    "pairing": Table({"min_family_overlap": Num(0, 1), "shape_weight": Num(0), "latency_split_ratio": Num(1, low_open=True),
                      "max_candidates": Num(1, integer=True)}),
    "diff": Table({"count_tolerance": Num(0), "latency_ratio": Num(1)}),
    "verdict": Table({"names_share": Num(0, 1, low_open=True), "counts_tolerance": Num(0),
                      "latency_ratio": Num(1, low_open=True), "missing_share": Num(0, 1), "extra_share": Num(0, 1),
                      "bench_diff_pct": Num(0, low_open=True), "shape_tolerance": Num(0), "graph": Bool()}),
    "accept": Table(other=Str()),
})


def check_accept(accept: dict, where: str) -> None:
    """Every known difference comes with its reason (the config's [accept], or verdict's ``accept``)."""
    for family, why in accept.items():
        if not isinstance(why, str) or not why.strip():
            raise AlignError(f"{family!r} in {where} has no reason",
                             f'write "{family}" = "why this difference is harmless"')


@dataclass
class Side:
    """One profile cut to the op: its GPU work (``items``, phases relabelled to the comparison keys
    once paired) and, after pairing, its per-forward figures."""

    label: str
    path: str
    view: OpView
    items: pd.DataFrame
    range_used: str
    forwards: Forwards | None = None

    def kept_items(self) -> pd.DataFrame:
        """The GPU work of the forwards the comparison kept (after warm-up and --skip)."""
        fw = self.forwards.forwards
        return self.items[self.items["forward"].isin(set(fw.loc[fw["kept"], "forward"]))]


def side_view(side: ProfileSide, registry: Registry, store=None, name: str = "short") -> OpView:
    """A side's GPU work ready to cut by op: its process selection and phase map applied."""
    from align.profile.processes import gpu_filter

    label = side.label
    profile = load(side.profile, store)
    if not profile.has_kernels:
        raise AlignError(f"the {label} profile {profile.path} has no CUDA kernel data",
                         f"pass an export of a run profiled with CUDA tracing on a GPU as the {label} side")
    return OpView(profile, registry, name=name, where=gpu_filter(profile, **(side.select or {})),
                  phase_map=list(side.phase_map or ()))


def cut_op(view: OpView, op: str | None, range_pattern: str | None = None, config: dict | None = None,
           labels: tuple[str, ...] = ("mock",), iter_pattern: str | None = None) -> tuple[pd.DataFrame | None, str | None]:
    """The op's GPU work and the ranges it was cut with: the registry's NVTX patterns, else
    ``range_pattern``, else the conventional ranges of verdict.toml for the first of ``labels``
    (mock: [mock] range; e2e: [e2e] <op>) that holds any. One cut for ``verdict``, ``diff`` and ``ops``."""
    config = config or load_config(None)
    used = range_pattern or (f"op {op} (registry patterns)" if op else None)
    items = view.op_items(op, range_pattern=range_pattern, iter_pattern=iter_pattern) if (op or range_pattern) else None
    by_nvtx = items is not None and items["method"].astype(str).str.startswith("nvtx").any()
    if not range_pattern and not by_nvtx:
        # the ranges that hold the op by convention: a mock's own iteration ranges
        # (verdict.toml [mock] range), or an E2E model's module for this op ([e2e] <op>)
        for label in labels:
            conv = config["mock"]["range"] if label == "mock" else config["e2e"].get(op or "")
            conv_items = view.op_items(range_pattern=conv, iter_pattern=iter_pattern) if conv else None
            if conv_items is not None and len(conv_items):
                where = "[mock] range" if label == "mock" else f"[e2e] {op}"
                return conv_items, f"{conv} (verdict.toml {where})"
    return items, used


def op_side(view: OpView, label: str, op: str | None, range_pattern: str | None, config: dict) -> Side:
    """The op's GPU work in one profile (:func:`cut_op` with the side's conventional ranges)."""
    path = view.profile.path
    items, used = cut_op(view, op, range_pattern, config, (label,))
    if items is None or items.empty:
        raise AlignError(f"no GPU work for {op or range_pattern} in the {label} profile {path}",
                         f"pass {arg(label + '_range', 'REGEX')} naming its NVTX ranges (see align nvtx {path})")
    if not (items["forward"] >= 0).any():
        raise AlignError(f"the {label} profile {path} has kernels of {op or range_pattern} but no forwards "
                         "(no NVTX range instance holds them)",
                         f"pass {arg(label + '_range', 'REGEX')} naming the ranges around one forward (see align nvtx {path})")
    return Side(label=label, path=str(path), view=view, items=items, range_used=used)


def meta_beside(path) -> dict | None:
    """The store's meta.json beside an export, if any (its readable, well-typed values)."""
    from align.store import META, read_meta

    folder = Path(path).parent
    return read_meta(folder)[0] if (folder / META).exists() else None


def read_phase_map(path: str | os.PathLike) -> dict[str, list[tuple[str, str]]]:
    """A --phase-map file: ``[mock]`` and ``[e2e]`` tables of ``"REGEX" = "PHASE"``."""
    data = datafiles.read_user(path, "phase map", 'write [e2e] tables of "REGEX" = "context|generation|mixed" in TOML')
    unknown = set(data) - {"mock", "e2e"}
    if unknown:
        raise AlignError(f"unknown section(s) {', '.join(sorted(unknown))} in {path}", "use [mock] and [e2e]")
    out = {}
    for side in ("mock", "e2e"):
        table = data.get(side, {})
        if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
            raise AlignError(f"[{side}] of {path} must map regexes to phase names", 'e.g. "prefill" = "context"')
        out[side] = list(table.items())
    return out


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
    cols = ["count_per_forward", "latency_per_forward_ns", "example", "variants"]
    a = mock.forwards.families.set_index(key)[cols]
    b = e2e.forwards.families.set_index(key)[cols]
    df = a.add_suffix("_mock").join(b.add_suffix("_e2e"), how="outer")
    for c in ("count_per_forward_mock", "count_per_forward_e2e", "latency_per_forward_ns_mock",
              "latency_per_forward_ns_e2e"):
        df[c] = df[c].fillna(0.0)
    df["example"] = df["example_e2e"].fillna(df["example_mock"])
    df["variants"] = [_variant_note(a, b) for a, b in zip(df["variants_mock"], df["variants_e2e"])]
    df = df.drop(columns=["example_mock", "example_e2e", "variants_mock", "variants_e2e"]).reset_index()
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
                       "variants": "",
                       "status": "match" if (g["status"] == "match").all() else "differs"})
    out = pd.concat([df, pd.DataFrame(totals)], ignore_index=True)
    out = out.sort_values(["phase"], kind="stable")
    cols = ["phase", "family", "status", "mock_count", "e2e_count", "mock_ns", "e2e_ns", "latency_ratio", "variants",
            "example"]
    return out[cols].reset_index(drop=True)


def _variant_note(mock: object, e2e: object) -> str:
    """Information, never a failure: the launch variants behind a folded family when the sides' mixes differ."""
    a = mock if isinstance(mock, str) else ""
    b = e2e if isinstance(e2e, str) else ""
    if a == b:
        return ""
    return f"mock: {a or 'one variant'}; E2E: {b or 'one variant'}"


def diff(mock, e2e, op: str | None = None, **options) -> pd.DataFrame:
    """Side-by-side per kernel family of a mock and an E2E profile; ``options`` as :func:`compare`."""
    return compare(mock, e2e, op=op, **options).table


@dataclass
class Comparison:
    mock: Side
    e2e: Side
    table: pd.DataFrame
    config: dict
    op: str | None
    pairing: Pairing | None = None
    op_reason: str | None = None
    comparability: Comparability | None = None
    # per compared key: (mock, E2E) families a compiler generated around the op's forwards
    compiled: dict | None = None
    # per key whose E2E forwards are cut by kernel names (compiled steps, or no NVTX around the op at
    # all): the families compared
    name_cut: dict | None = None
    # the keys of those whose E2E forwards no NVTX range holds at all: cut from the kernel stream
    kernel_cut: list = field(default_factory=list)

    @cached_property
    def launch(self) -> pd.DataFrame:
        """Per compared phase, how each side launched the op's kernels (launch_mode.py); read on demand:
        it reads the CUDA API calls."""
        from align.compare.launch_mode import compare_modes, launch_modes

        return compare_modes(launch_modes(self.mock), launch_modes(self.e2e))

    @cached_property
    def e2e_processes(self) -> list[dict]:
        """The E2E processes whose forwards were compared: pid, name, kernels, forwards compared,
        and for a served capture the server's command line (meta.json), so a verdict names the server."""
        fw = self.e2e.items.loc[self.e2e.items["forward"] >= 0, ["pid", "forward"]]
        per = fw.groupby("pid")["forward"].nunique()
        every = self.e2e.view.items
        kernels = every.loc[every["kind"] == 0, "pid"].value_counts()  # the view's items: no second read
        names = dict(zip(*self.e2e.view.profile.processes(all=True)[["pid", "name"]].to_numpy().T)) \
            if len(per) else {}
        meta = meta_beside(self.e2e.path) or {}
        served = str(meta.get("command_line", "")) if meta.get("serve") else None
        return [{"pid": int(pid), "name": names.get(pid), "kernels": int(kernels.get(pid, 0)), "forwards": int(n),
                 "served_command": served} for pid, n in per.items()]

    def process_line(self, width: int | None = None) -> str:
        """``E2E process: pid 972 python3 (1,024 forwards); the server: python3 -m ... serve ...``, the
        server's command cut to ``width`` characters (whole by default)."""
        parts = [f"pid {p['pid']} {os.path.basename(str(p['name']))} ({p['forwards']:,} forwards)"
                 for p in self.e2e_processes]
        if not parts:
            return ""
        served = self.e2e_processes[0]["served_command"]
        if served and width and len(served) > width:
            served = served[: width - 1] + "…"
        return (f"E2E process{'es' if len(parts) > 1 else ''}: " + ", ".join(parts) +
                (f"; the server: {served}" if served else ""))

    @cached_property
    def ranks(self) -> pd.DataFrame:
        """A multi-process E2E run compared process by process: per phase, each rank's E2E latency
        and kernels per forward, the mock/E2E ratio, its deviation from the ranks' median, and the
        spread across ranks and the outlier rank (empty for a one-process E2E run)."""
        return rank_summary(self.table)

    @cached_property
    def shapes(self) -> pd.DataFrame:
        """Per (phase, family) on both sides, their launch shapes and why they differ (shapes.py);
        read on demand from the kernel table."""
        from align.collect.cases import load_ops
        from align.compare.shapes import compare_shapes

        spec = load_ops().get(self.op or "")
        return compare_shapes(self.mock, self.e2e, spec.token_kernels if spec else None)


def compare(mock, e2e, op: str | None = None, phase: str | None = None, skip: int = 0,
            config: dict | str | None = None, ops_file: str | None = None, store=None, *,
            mock_range: str | None = None, e2e_range: str | None = None, e2e_select: dict | None = None,
            mock_phase: list[tuple[str, str]] | None = None, e2e_phase: list[tuple[str, str]] | None = None
            ) -> Comparison:
    """Cut both profiles to the op, pair the mock's phases with E2E forwards (evidence, then kernels),
    and compare each pair per kernel family. Nothing empty is ever compared: a side, phase or pair
    with no forward left is an error that says what to pass.

    ``mock``/``e2e``: a path, store name, :class:`align.Profile` or :class:`align.ProfileSide`; the
    ``mock_*``/``e2e_*`` keywords are shorthands for the sides' own settings (range, phase map,
    ``e2e_select`` = {pid, device, rank} of a multi-process E2E profile)."""
    if phase is not None and phase not in PHASES:
        raise AlignError(f"unknown phase {phase!r}", f"use {' or '.join(PHASES[1:])} (or all)")
    msd = as_side(mock, "mock", mock_range, mock_phase)
    every_rank = (e2e_select or {}).get("rank") == "all"
    if every_rank:  # every rank of a multi-process E2E run, each paired and compared on its own
        e2e_select = {k: v for k, v in e2e_select.items() if k != "rank"}
    esd = as_side(e2e, "e2e", e2e_range, e2e_phase, e2e_select)
    cfg = config if isinstance(config, dict) else load_config(config)
    registry = load_registry(ops_file)
    check_e2e_ops(cfg, registry, f"config {config}" if isinstance(config, (str, os.PathLike)) else "the config")
    mview = side_view(msd, registry, store)
    eview = side_view(esd, registry, store)
    reason, e2e_range = None, esd.range
    if op is None and not e2e_range:
        op, e2e_range, reason = infer_op(mview, eview, registry, cfg, msd.range)
    m = op_side(mview, "mock", op, msd.range, cfg)
    e = op_side(eview, "e2e", op, e2e_range, cfg)
    _check_not_itself(m, e)
    if op is not None and len(e.items) and (e.items["method"].astype(str) == "name").all():
        # no module range holds any E2E kernel of the op: the mock is paired on the same footing
        m.items = m.items[m.view.named_for(op, m.items)]
    mixing = _served_mixed(e)
    pairing = _pair(m, e, cfg["pairing"])
    keys = pairing.keys
    if every_rank and not any(" (" in k for k in keys):
        raise AlignError(f"every rank was asked for, but the E2E profile {e.path} has one "
                         "process with the op's forwards",
                         "compare it as it is (leave the rank out), or pass the export of a multi-process run")
    if phase is not None:
        present = sorted({base_phase(k) for k in keys})
        keys = [k for k in keys if base_phase(k) == phase]
        if not keys:
            raise AlignError(f"no {phase} forwards to compare in {m.path} and {e.path}",
                             f"phases paired here: {', '.join(present) or 'none'}; pass one of them as {arg('phase')} "
                             f"or map ranges to phases with {arg('mock_phase')}/{arg('e2e_phase')}")
    if not keys and mixing:
        mock_phases = sorted(set(m.items["phase"].astype(str)) - {"all"}) or ["none named"]
        raise AlignError(f"the E2E forwards of {e.path} are steps of a server that batches continuously ({mixing!r} in "
                         "its command line, serve.toml [steps] mixed) and no NVTX range says which steps mix prefill "
                         f"and decode; the mock has {', '.join(mock_phases)} only, and a mixed step is never "
                         "compared as pure context or generation",
                         f"pass a mock whose iterations run a mixed batch (ranges mapped with {arg('mock_phase')} "
                         "REGEX=mixed), or profile the server without continuous batching")
    if not keys:
        raise AlignError(f"no mock phase of {m.path} has a plausible partner among the E2E forwards of {e.path} "
                         f"({_unpaired(pairing)})",
                         f"check {arg('op')} (or {arg('mock_range')}/{arg('e2e_range')}), or pair them by hand with "
                         f"{arg('mock_phase')}/{arg('e2e_phase')} REGEX=PHASE")
    _relabel(m, e, pairing, keys)
    compiled = {k: (m.view.compiled_families(m.items[m.items["phase"] == k]),
                    e.view.compiled_families(e.items[e.items["phase"] == k])) for k in keys}
    name_cut = _cut_to_names(m, e, op, keys)
    kernel_cut = [k for k in name_cut if (e.items.loc[e.items["phase"] == k, "op_range"] < 0).all()]
    for side in (m, e):
        side.forwards = side.view.per_forward(side.items, skip=skip)
        _check_not_empty(side, keys, skip)
    return Comparison(mock=m, e2e=e, table=family_table(m, e, cfg), config=cfg, op=op or e2e_range,
                      pairing=pairing, op_reason=reason, comparability=_comparability(m, e), compiled=compiled,
                      name_cut=name_cut, kernel_cut=kernel_cut)


def _served_mixed(e: Side) -> str | None:
    """E2E forwards no evidence gave a phase, of a server whose steps may mix prefill and decode
    (capture/serve.py ``mixing_steps``), are mixed: returns the command-line text that said so, or None."""
    from align.capture.serve import mixing_steps

    rx = mixing_steps(meta_beside(e.path))
    phase = e.items["phase"].astype(str).to_numpy(dtype=object)
    open_ = phase == "all"
    if rx is None or not open_.any():
        return None
    evidence = e.items["evidence"].astype(str).to_numpy(dtype=object)
    phase[open_], evidence[open_] = "mixed", "server batching"
    e.items = e.items.assign(phase=pd.Categorical(phase, categories=PHASES),
                             evidence=pd.Categorical(evidence, categories=EVIDENCE))
    return rx


def same_export(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths are one export: one file (through links or two spellings) or a byte-for-byte
    copy (read only as far as the first differing byte, and only when the sizes agree)."""
    import filecmp

    try:
        return os.path.samefile(a, b) or (os.path.getsize(a) == os.path.getsize(b) and filecmp.cmp(a, b, shallow=False))
    except OSError:
        return False


def _check_not_itself(m: Side, e: Side) -> None:
    """A profile compared with itself matches by construction and proves nothing: refuse it. One
    capture holding both runs is fine, as long as no kernel of it lands on both sides."""
    if not same_export(m.path, e.path):
        return
    key = ["start", "pid", "name"]
    shared = len(m.items[key].drop_duplicates().merge(e.items[key].drop_duplicates(), on=key))
    if shared:
        what = (f"file, {m.path}," if os.path.samefile(m.path, e.path)
                else f"export ({e.path} is a copy of {m.path})")
        raise AlignError(f"the mock and the E2E profile are the same {what} and {shared} of its kernels "
                         "are on both sides: a profile compared with itself always matches",
                         "pass the mock layer's capture and the model run's capture")


def _cut_to_names(m: Side, e: Side, op: str | None, keys: list[str]) -> dict[str, list[str]]:
    """Where the E2E forwards of a key were cut from compiled steps by kernel names alone (no module
    range there), the mock's forwards of that key are cut the same way: only the kernels whose names
    belong to the op stay on both sides. Returns key -> the op's families kept."""
    if op is None:
        return {}
    out = {}
    for key in keys:
        rows = e.items[e.items["phase"] == key]
        if not len(rows) or not (rows["method"].astype(str) == "name").all():
            continue
        m.items = m.items[(m.items["phase"] != key).to_numpy() | m.view.named_for(op, m.items)]
        out[key] = sorted(set(rows["family"].astype(str)))
    return out


def _comparability(m: Side, e: Side) -> Comparability:
    """What each side ran on, and the forwards each kept per compared phase (comparability.py)."""
    fm, fe = m.forwards.forwards, e.forwards.forwards
    kept = {}
    for ph in sorted(set(fm["phase"].astype(str)) & set(fe["phase"].astype(str))):
        kept[ph] = (int((fm["kept"] & (fm["phase"] == ph)).sum()), int((fe["kept"] & (fe["phase"] == ph)).sum()))
    return assess(environment(m.view.profile, m.view.where), environment(e.view.profile, e.view.where), kept)


def rank_summary(table: pd.DataFrame) -> pd.DataFrame:
    """From a family table keyed ``phase (rank N)``: one row per (phase, rank)."""
    tot = table[(table["family"] == "TOTAL") & table["phase"].str.contains(" (", regex=False)]
    cols = ["phase", "rank", "e2e_ns", "e2e_kernels", "ratio", "deviation_pct", "spread_pct", "outlier"]
    if tot.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for ph, g in tot.groupby(tot["phase"].map(base_phase), sort=False):
        med = float(g["e2e_ns"].median())
        dev = (g["e2e_ns"] - med) / med * 100 if med else g["e2e_ns"] * 0.0
        spread = float((g["e2e_ns"].max() - g["e2e_ns"].min()) / med * 100) if med else 0.0
        outlier = g["phase"].iloc[int(np.argmax(np.abs(dev.to_numpy())))].split(" (", 1)[1].rstrip(")")
        for r, d in zip(g.to_dict(orient="records"), dev):
            rows.append({"phase": ph, "rank": r["phase"].split(" (", 1)[1].rstrip(")"), "e2e_ns": r["e2e_ns"],
                         "e2e_kernels": r["e2e_count"], "ratio": r["latency_ratio"], "deviation_pct": float(d),
                         "spread_pct": spread, "outlier": outlier})
    return pd.DataFrame(rows, columns=cols)


def base_phase(key: str) -> str:
    """``generation (rank 0)`` -> ``generation``."""
    return key.split(" (", 1)[0]


def _pair(m: Side, e: Side, settings: dict) -> Pairing:
    # launch shapes are read only where the kernels must decide a pairing
    need_shapes = not set(e.items.loc[e.items["forward"] >= 0, "phase"].astype(str)) <= set(NAMED)
    mfw = forward_summary(m.items, m.view.shapes(m.items) if need_shapes else None)
    efw = forward_summary(e.items, e.view.shapes(e.items) if need_shapes else None)
    return pair(mfw, efw, _process_names(e), settings)


def _process_names(side: Side) -> dict[int, str]:
    from align.profile.processes import process_table

    pids = side.items["pid"].unique()
    if len(pids) < 2:
        return {}
    table = process_table(side.view.profile)
    ranks = dict(zip(table["pid"], table["rank"]))
    return {int(p): (f"rank {int(ranks[p])}" if p in ranks and not pd.isna(ranks[p]) else f"pid {int(p)}")
            for p in pids}


def _relabel(m: Side, e: Side, pairing: Pairing, keys: list[str]) -> None:
    """Phases become comparison keys: the mock's forwards under each key they serve (renumbered, since
    one mock phase serves every E2E process), the E2E's paired forwards under theirs; the rest is dropped."""
    parts = []
    for key in keys:
        rows = m.items[m.items["forward"].isin(pairing.mock.get(key, ()))].copy()
        rows["phase"] = key
        parts.append(rows)
    mi = pd.concat(parts)
    mi["forward"] = pd.factorize(pd.MultiIndex.from_arrays([mi["phase"], mi["forward"]]))[0].astype(np.int64)
    mi["phase"] = pd.Categorical(mi["phase"], categories=keys)
    ei = e.items[e.items["forward"].map(pairing.e2e).isin(keys)].copy()
    ei["phase"] = pd.Categorical(ei["forward"].map(pairing.e2e), categories=keys)
    m.items, e.items = mi, ei


def _check_not_empty(side: Side, keys: list[str], skip: int) -> None:
    fw = side.forwards.forwards
    for key in keys:
        g = fw[fw["phase"] == key]
        if not g["kept"].any():
            what = f"{arg('skip', str(skip))} drops all {len(g)}" if skip >= len(g) > 0 else "none is left"
            raise AlignError(f"no {side.label} forward of {key} to compare in {side.path} ({what})",
                             f"lower {arg('skip')}, or check {arg('phase')} and the process filters ({arg('e2e_select')})")


def _unpaired(p: Pairing) -> str:
    t = p.table
    groups = t[t["e2e_group"].notna()]
    return (f"{len(groups)} E2E forward group(s), "
            f"{int(groups['e2e_forwards'].sum())} forwards, none resembling the mock" if len(groups) else "no E2E forwards")


def infer_op(mview: OpView, eview: OpView, registry: Registry, cfg: dict, mock_range: str | None
             ) -> tuple[str | None, str | None, str]:
    """The op of a pair given without --op: meta.json's op where the store recorded one, else the
    registry op (or, after it on ties, the E2E module range) whose E2E kernels are most like those of
    the mock's measured ranges. Returns (op, e2e_range, why)."""
    for view, label in ((mview, "mock"), (eview, "E2E")):
        meta = meta_beside(view.profile.path)
        if meta and meta.get("op"):
            return meta["op"], None, f"op {meta['op']}: recorded in the {label} profile's meta.json"
    conv = mock_range or cfg["mock"]["range"]
    mitems = mview.op_items(range_pattern=conv)
    if mitems.empty:
        raise AlignError(f"which op? the mock {mview.profile.path} has no ranges matching {conv!r} and records no op",
                         f"pass {arg('op', 'NAME')} (see align ops --list), or {arg('mock_range')}/{arg('e2e_range', 'REGEX')}")
    mock_fams = set(mitems["family"].astype(str))
    scores = []
    for rank, spec in enumerate(registry.ops):
        items = eview.op_items(spec.name)
        how = "its NVTX ranges"
        if not items["method"].astype(str).str.startswith("nvtx").any():
            conv_e = cfg["e2e"].get(spec.name)
            items = eview.op_items(range_pattern=conv_e) if conv_e else items.iloc[0:0]
            how = f"ranges {conv_e!r}"
        if items.empty:
            continue
        # equal overlap: an op found by its own NVTX patterns beats one found by convention, then registry order
        scores.append((_jaccard(items, mock_fams), how == "its NVTX ranges", -rank, spec.name, how))
    # module ranges of the E2E run (layers.3.self_attn -> layers.\d+.self_attn), after the registry's ops on ties
    for pattern in module_patterns(eview):
        items = eview.op_items(range_pattern=pattern)
        if len(items):
            scores.append((_jaccard(items, mock_fams), False, -len(registry.ops), pattern, f"ranges {pattern!r}"))
    if not scores or max(s[0] for s in scores) == 0:
        raise AlignError(f"which op? no op of the registry or module range has E2E kernels like the mock's in "
                         f"{eview.profile.path}", f"pass {arg('op', 'NAME')} (see align ops --list), or {arg('e2e_range', 'REGEX')}")
    scores.sort(reverse=True)
    best = scores[0]
    runner = f"; next: {scores[1][3]} {scores[1][0]:.0%}" if len(scores) > 1 else ""
    is_op = best[3] in registry.names()
    why = (f"{'op' if is_op else 'E2E range'} {best[3]}: chosen by kernels: the E2E kernels in {best[4]} share "
           f"{best[0]:.0%} of their families with the mock's ranges {conv!r}{runner}")
    return (best[3], None, why) if is_op else (None, best[3], why)


def _jaccard(items: pd.DataFrame, families: set[str]) -> float:
    """Shared share of the distinct kernel families of ``items`` and ``families``."""
    fams = set(items["family"].astype(str))
    return round(len(fams & families) / len(fams | families), 3)


def module_patterns(view: OpView) -> list[str]:
    """Module-path NVTX ranges of a profile with layer numbers generalised: ``^layers\\.\\d+\\.self_attn$``."""
    import re

    out = set()
    for t in view.range_texts():
        if isinstance(t, str) and re.fullmatch(r"[\w.]*\.\d+\.[\w.]+", t):
            out.add("^" + re.sub(r"\\\.\d+\\\.", r"\\.\\d+\\.", re.escape(t)) + "$")
    return sorted(out)
