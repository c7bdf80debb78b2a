"""The batch / sequence / cache-length points an E2E run exercised, and whether a collection's grid
covers them (``align collect --cases-from E2E_PROFILE``).

Only the profile speaks: no run log, no model config.
- **Query tokens per forward** come from a kernel whose grid shows them (``token_kernels`` of the
  op in collect.toml: PyTorch's row-wise top-k launches one block per query row, so the DSA
  indexer's top-k grid x is the forward's query tokens).
- **Batch**: an engine step range that counts its requests (``[Executor] _forward_step N: X ctx
  reqs, Y gen reqs``) gives it; without one, a decode forward carries one token per request, and a
  prefill is taken to serve the batch that decodes after it.
- **Phase**: the step's counts, else phase words, else the token counts (the smallest count that
  repeats is decode).
- **Cache length** of a decode forward: the prompt its batch was prefilled with plus the decode
  forwards since (one token each), the rule of ``generate()`` and of a static batch. A profile
  started mid-run (``--delay``), speculative decoding or requests of different lengths in one
  batch break it; such forwards are reported without a cache length, never guessed.

One forward per model step is read: the op's range of the first layer seen (``layers.0.self_attn``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from align.lazy import pd

from align.collect.cases import OpSpec
from align.errors import AlignError, arg

POINT_COLUMNS = ["pid", "phase", "batch", "seq", "kv_len", "prefix", "forwards", "tokens", "evidence", "covered", "grid"]


@dataclass
class E2ePoints:
    """What ``--cases-from`` found: one row per distinct point (``table``), and what it could not
    place (``notes``)."""

    profile: str
    op: str
    range_used: str
    table: "pd.DataFrame"
    notes: list[str] = field(default_factory=list)

    @property
    def uncovered(self) -> "pd.DataFrame":
        return self.table[~self.table["covered"].astype(bool)]


def token_rule(spec: OpSpec, token_kernels: list[str] | None = None) -> re.Pattern:
    from align.ops.registry import alternation

    patterns = token_kernels if token_kernels is not None else spec.token_kernels
    if not patterns:
        raise AlignError(f"op {spec.name} names no kernel whose grid shows the query tokens",
                         f"add token_kernels = ['REGEX'] under [ops.{spec.name}.from_e2e] in collect.toml")
    return alternation(patterns, f"[ops.{spec.name}.from_e2e] token_kernels", "fix collect.toml")


def e2e_points(profile, spec: OpSpec, *, e2e_range: str | None = None, select: dict | None = None,
               subset: dict | None = None, registry_file: str | None = None, store=None) -> E2ePoints:
    """The points (phase, batch, seq or kv_len) each step of the E2E profile ran, counted, with the
    coverage of each by the grid (restricted by ``subset`` as ``--cases`` restricts a collection)."""
    from align.compare.diff import load_config, op_side, side_view
    from align.compare.side import as_side
    from align.ops.registry import load_registry

    registry = load_registry(registry_file)
    side = as_side(profile, "e2e", e2e_range, None, select)
    view = side_view(side, registry, store)
    cut = op_side(view, "e2e", spec.name if not side.range else None, side.range, load_config(None))
    items = cut.items[cut.items["forward"] >= 0]
    rule = token_rule(spec)
    tok = items[(items["kind"] == 0) & items["name"].astype(str).str.contains(rule)]
    grid_x = view.launch_details(tok)["gridX"].dropna().astype("int64")  # one block per query token
    tokens = grid_x.groupby(tok.loc[grid_x.index, "forward"]).agg(lambda s: int(s.mode().iloc[0]))
    first = items.groupby("forward", sort=False).head(1)
    fw = pd.DataFrame({"forward": first["forward"].to_numpy(), "pid": first["pid"].to_numpy(),
                       "start": items.groupby("forward", sort=False)["start"].min().reindex(first["forward"]).to_numpy(),
                       "phase": first["phase"].astype(str).to_numpy(),
                       "evidence": first["evidence"].astype(str).to_numpy(),
                       "range": view.range_names(first), "step": view.step_texts(first)})
    fw["tokens"] = fw["forward"].map(tokens)
    notes = []
    rows = []
    for pid, per in fw.sort_values("start", kind="stable").groupby("pid", sort=True):
        lead = per["range"].iloc[0]
        per = per[per["range"] == lead]
        rows += _walk(per, registry, notes, pid)
    missing = int(fw["tokens"].isna().sum())
    if missing:
        notes.append(f"{missing} forward(s) launched no token kernel ({'|'.join(spec.token_kernels)}): not placed")
    if not rows:
        raise AlignError(f"no step of {profile} shows its query tokens",
                         f"check {arg('op')}, or add the kernel whose grid shows them to [ops.{spec.name}.from_e2e] "
                         "token_kernels in collect.toml")
    df = pd.DataFrame(rows)
    keys = ["pid", "phase", "batch", "seq", "kv_len", "prefix", "tokens", "evidence"]
    table = (df.fillna({"seq": -1, "kv_len": -1}).groupby(keys, sort=False, dropna=False).size()
             .rename("forwards").reset_index())
    for c in ("seq", "kv_len"):
        table[c] = table[c].astype("Int64").where(table[c] >= 0)
    table["prefix"] = table["prefix"].astype("Int64")
    cov = [coverage(spec, r, subset) for r in table.to_dict(orient="records")]
    table["covered"] = [c[0] for c in cov]
    table["grid"] = [c[1] for c in cov]
    return E2ePoints(profile=str(profile), op=spec.name, range_used=f"{cut.range_used} ({lead} per step)",
                     table=table[POINT_COLUMNS], notes=notes)


def _walk(per: "pd.DataFrame", registry, notes: list[str], pid: int) -> list[dict]:
    """Steps of one process in time order -> points; the prompt of each batch carries into its decodes."""
    placed = per.dropna(subset=["tokens"])
    counts = placed["tokens"].value_counts()
    repeated = counts[counts > 1]
    decode_tokens = int(repeated.index.min()) if len(repeated) else None
    past: dict[int, int] = {}   # batch -> tokens cached so far
    out = []
    rows = placed.to_dict(orient="records")
    for i, r in enumerate(rows):
        t = int(r["tokens"])
        steps = registry.step_requests(r["step"]) if r["step"] else None
        evidence = "engine steps" if steps else r["evidence"] if r["phase"] in ("context", "generation") else "tokens"
        if steps:
            ctx, gen = steps
            phase = "generation" if gen and t == gen else "context" if ctx else "generation"
            batch = gen if phase == "generation" else ctx
        else:
            phase = r["phase"] if r["phase"] in ("context", "generation") else \
                ("generation" if t == decode_tokens else "context")
            if phase == "generation":
                batch = t
            else:
                after = next((int(x["tokens"]) for x in rows[i + 1:] if int(x["tokens"]) < t), None)
                batch = after if after and t % after == 0 else 1
                if batch == 1 and after:
                    notes.append(f"pid {pid}: a prefill of {t} tokens does not divide by the next decode's "
                                 f"batch {after}: taken as one request")
        if phase == "context":
            if t % batch:
                notes.append(f"pid {pid}: a prefill of {t} tokens over {batch} requests is not uniform: not placed")
                continue
            seq = t // batch
            if not (steps and steps[1]):  # a mixed step's joining request does not decode with this batch
                past[batch] = seq
            out.append({"pid": pid, "phase": "context", "batch": batch, "seq": seq, "kv_len": None, "prefix": 0,
                        "tokens": t, "evidence": evidence})
        else:
            kv = past.get(batch)
            if kv is None:
                notes.append(f"pid {pid}: a decode of batch {batch} with no prefill of that batch before it "
                             "(profile started mid-run?): its cache length is unknown")
            else:
                past[batch] = kv + 1
            out.append({"pid": pid, "phase": "generation", "batch": batch, "seq": None, "kv_len": kv, "prefix": None,
                        "tokens": t, "evidence": evidence})
    return out


def coverage(spec: OpSpec, point: dict, subset: dict | None = None) -> tuple[bool, str]:
    """Whether the op's grid for the point's phase holds it (every field within the grid's values,
    the tokens within ``max_tokens``), and how: on the grid, between two grid values (what
    aiconfigurator interpolates), or outside."""
    ph = spec.phases.get(point["phase"])
    if ph is None:
        return False, f"{spec.name} has no {point['phase']} grid"
    ok, words = True, []
    for f in ph.fields:
        if f == "tp":
            continue  # local heads decide it; kernels do not show them
        v = point.get(f)
        if v is None or v is pd.NA or v != v:
            return False, f"{f} unknown"
        v = int(v)
        values = sorted(x for x in (subset or {}).get(f, ph.values[f]) if isinstance(x, int))
        if v in values:
            words.append(f"{f} {v} on grid")
        elif values and values[0] < v < values[-1]:
            lo = max(x for x in values if x < v)
            hi = min(x for x in values if x > v)
            words.append(f"{f} {v} between {lo} and {hi}")
        else:
            ok = False
            words.append(f"{f} {v} OUTSIDE {values[0]}..{values[-1]}" if values else f"{f}: no grid values")
    per_request = point.get("seq") if point["phase"] == "context" else point.get("kv_len")
    if ph.max_tokens and per_request and point["batch"] * per_request > ph.max_tokens:
        ok = False
        words.append(f"batch x {'seq' if point['phase'] == 'context' else 'kv_len'} over max_tokens {ph.max_tokens}")
    return ok, "; ".join(words)


def compact(points: E2ePoints) -> "pd.DataFrame":
    """The points with each run of decode cache lengths of one batch folded into one row
    (``kv_len`` 512..526): what a person reads; ``points.table`` keeps every point."""
    t = points.table
    rows = []
    keys = ["pid", "phase", "batch", "seq", "prefix", "evidence"]
    for key, g in t.groupby(keys, sort=False, dropna=False):
        kv = g["kv_len"].dropna().astype("int64")
        span = "" if kv.empty else str(kv.min()) if kv.min() == kv.max() else f"{kv.min()}..{kv.max()}"
        words = [w for text in g["grid"] for w in text.split("; ")]
        rows.append({**dict(zip(keys, key)), "kv_len": span or None, "forwards": int(g["forwards"].sum()),
                     "covered": bool(g["covered"].all()), "grid": _fold(words)})
    out = pd.DataFrame(rows, columns=["pid", "phase", "batch", "seq", "kv_len", "forwards", "covered", "grid",
                                      "evidence", "prefix"])
    if out["pid"].nunique() <= 1:
        out = out.drop(columns=["pid"])
    for c in ("seq", "prefix"):
        out[c] = out[c].astype("Int64")
    return out


def _fold(words: list[str]) -> str:
    """Coverage words of many points in one: "on grid", "within" (between grid values), or what lies
    outside, per field as a span (``kv_len 512..518 OUTSIDE 2..256``)."""
    outside: dict[tuple[str, str], list[int]] = {}
    other = []
    for w in words:
        m = re.fullmatch(r"(\w+) (\d+) OUTSIDE (\S+)", w)
        if m:
            outside.setdefault((m.group(1), m.group(3)), []).append(int(m.group(2)))
        elif "on grid" not in w and "between" not in w:
            other.append(w)
    if outside or other:
        spans = [f"{f} {min(v)}{'..' + str(max(v)) if max(v) != min(v) else ''} OUTSIDE {rng}"
                 for (f, rng), v in outside.items()]
        return "; ".join(spans + list(dict.fromkeys(other)))
    return "on grid" if all("on grid" in w for w in words) else "within"


def suggested_cases(points: E2ePoints) -> list[str]:
    """``--phase``/``--cases`` arguments that collect the uncovered points exactly, one line per
    phase and batch."""
    wanted: dict[tuple[str, int], list[int]] = {}
    for r in points.uncovered.to_dict(orient="records"):
        f = "seq" if r["phase"] == "context" else "kv_len"
        v = r[f]
        if v is None or v is pd.NA or v != v:
            continue
        wanted.setdefault((r["phase"], int(r["batch"])), []).append(int(v))
    return [f"--phase {ph} --cases {'seq' if ph == 'context' else 'kv_len'}={','.join(map(str, sorted(set(v))))} "
            f"--cases batch={b}" for (ph, b), v in wanted.items()]
