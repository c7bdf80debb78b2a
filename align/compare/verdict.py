"""The alignment checklist of seed 002, one row per check, with numbers and a reason.

names    the kernel families making up most of the E2E op's latency all occur in the mock
counts   kernels per forward close (per family and in total)
latency  total latency per forward, mock / E2E, within the ratio (default < 2x)
missing  no E2E family absent from the mock
extra    no mock family absent from the E2E run
bench    (with a decoder-submodule benchmark result) latency difference < 1 % and the same
         CUDA-graph behaviour on both sides
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from align.compare.diff import Comparison, compare
from align.errors import AlignError

CHECKS = ("names", "counts", "latency", "missing", "extra", "bench")
MAX_LISTED = 6


@dataclass
class Verdict:
    op: str
    passed: bool
    checks: pd.DataFrame
    mock: str
    e2e: str
    comparison: Comparison | None = None

    def to_dict(self) -> dict:
        rows = []
        for r in self.checks.to_dict(orient="records"):
            rows.append({"name": r["name"], "passed": bool(r["passed"]), "value": _plain(r["value"]),
                         "threshold": _plain(r["threshold"]), "reason": r["reason"], "kernels": list(r["kernels"])})
        return {"passed": self.passed, "op": self.op, "mock": self.mock, "e2e": self.e2e, "checks": rows}

    def to_markdown(self) -> str:
        head = f"### align verdict: {'PASS' if self.passed else 'FAIL'} ({self.op})\n\n"
        head += f"mock `{self.mock}` vs E2E `{self.e2e}`\n\n| check | result | value | threshold | reason |\n|---|---|---|---|---|\n"
        for r in self.checks.to_dict(orient="records"):
            reason = r["reason"].replace("|", "\\|")
            head += (f"| {r['name']} | {'pass' if r['passed'] else '**FAIL**'} | {_fmt(r['value'])} | "
                     f"{_fmt(r['threshold'])} | {reason} |\n")
        return head


def _plain(v):
    if hasattr(v, "item"):
        return v.item()
    return v


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items())
    return "" if v is None else str(v)


def _names(fams: list[str]) -> str:
    shown = ", ".join(fams[:MAX_LISTED])
    return shown + (f" and {len(fams) - MAX_LISTED} more" if len(fams) > MAX_LISTED else "")


def _check(name, passed, value, threshold, reason, kernels=()) -> dict:
    return {"name": name, "passed": bool(passed), "value": value, "threshold": threshold, "reason": reason,
            "kernels": list(kernels)}


def evaluate(cmp: Comparison, bench: dict | None = None) -> list[dict]:
    cfg = cmp.config["verdict"]
    t = cmp.table
    fam = t[t["family"] != "TOTAL"]
    tot = t[t["family"] == "TOTAL"].set_index("phase")
    phases = sorted(set(fam["phase"]))
    checks = []

    # names: families covering names_share of each phase's E2E latency are present in the mock
    lacking, value = [], {}
    for ph in phases:
        g = fam[(fam["phase"] == ph) & (fam["e2e_count"] > 0)].sort_values("e2e_ns", ascending=False)
        total = g["e2e_ns"].sum()
        if total <= 0:
            continue
        cum = g["e2e_ns"].cumsum() / total
        key = g[(cum - g["e2e_ns"] / total) < cfg["names_share"]]
        present = key["mock_count"] > 0
        value[ph] = float(key.loc[present, "e2e_ns"].sum() / total)
        lacking += [f"{ph}:{f}" for f in key.loc[~present, "family"]]
    checks.append(_check("names", not lacking, value, cfg["names_share"],
                         "the main E2E kernel families all occur in the mock" if not lacking else
                         f"main E2E kernels not launched by the mock: {_names(lacking)}", lacking))

    # counts: per family and in total per forward
    off = fam[(fam["mock_count"] > 0) & (fam["e2e_count"] > 0) &
              ((fam["mock_count"] - fam["e2e_count"]).abs() > cmp.config["diff"]["count_tolerance"])]
    bad_total, value = [], {}
    for ph in phases:
        if ph not in tot.index:
            continue
        m, e = float(tot.loc[ph, "mock_count"]), float(tot.loc[ph, "e2e_count"])
        value[ph] = {"mock": m, "e2e": e}
        if e and abs(m - e) / e > cfg["counts_tolerance"]:
            bad_total.append(f"{ph}: {m:g} vs {e:g} kernels per forward")
    off_names = [f"{r.phase}:{r.family} ({r.mock_count:g} vs {r.e2e_count:g})" for r in off.itertuples()]
    ok = not off_names and not bad_total
    checks.append(_check("counts", ok, value, cfg["counts_tolerance"],
                         "kernels per forward are the same" if ok else
                         "; ".join(bad_total + ([f"per family: {_names(off_names)}"] if off_names else [])),
                         list(off["family"])))

    # latency: total per forward within ratio both ways
    bad, value = [], {}
    for ph in phases:
        if ph not in tot.index or not tot.loc[ph, "e2e_ns"]:
            continue
        r = float(tot.loc[ph, "mock_ns"] / tot.loc[ph, "e2e_ns"])
        value[ph] = r
        if not (1 / cfg["latency_ratio"] < r < cfg["latency_ratio"]):
            bad.append(f"{ph}: mock {tot.loc[ph, 'mock_ns']:,.0f} ns vs E2E {tot.loc[ph, 'e2e_ns']:,.0f} ns "
                       f"per forward ({r:.2f}x)")
    slow = fam[fam["phase"].isin([b.split(":")[0] for b in bad])].copy()
    slow["gap"] = (slow["mock_ns"] - slow["e2e_ns"]).abs()
    worst = list(slow.sort_values("gap", ascending=False)["family"].head(MAX_LISTED))
    checks.append(_check("latency", not bad, value, cfg["latency_ratio"],
                         "latency per forward within ratio: " + ", ".join(f"{k} {v:.2f}x" for k, v in value.items())
                         if not bad else "; ".join(bad) + (f"; largest gaps: {_names(worst)}" if worst else ""),
                         worst if bad else []))

    # missing / extra families
    for name, status, side_ns, share_key in (("missing", "missing", "e2e_ns", "missing_share"),
                                             ("extra", "extra", "mock_ns", "extra_share")):
        rows = fam[fam["status"] == status]
        listed, value = [], {}
        for ph in phases:
            total = fam.loc[fam["phase"] == ph, side_ns].sum()
            g = rows[rows["phase"] == ph]
            share = g[side_ns] / total if total else g[side_ns] * 0
            hit = g[share >= cfg[share_key]] if cfg[share_key] > 0 else g
            value[ph] = int(len(hit))
            listed += [f"{ph}:{f}" for f in hit["family"]]
        where = "in the E2E run but not in the mock" if name == "missing" else "in the mock but not in the E2E run"
        checks.append(_check(name, not listed, value, cfg[share_key],
                             f"no kernel family only {where.split(' but ')[0]}" if not listed else
                             f"{len(listed)} kernel families {where}: {_names(listed)}", listed))

    # bench: decoder submodule vs mock layer with identical inputs (align bench --format json)
    if bench is not None:
        checks.append(_bench_check(bench, cfg["bench_diff_pct"]))
    return checks


def _bench_check(bench: dict, limit: float) -> dict:
    try:
        diff = float(bench["diff_pct"])
        mg, sg = bench["mock"]["cuda_graph"], bench["submodule"]["cuda_graph"]
    except (KeyError, TypeError, ValueError):
        raise AlignError("the --bench file lacks diff_pct / mock.cuda_graph / submodule.cuda_graph",
                         "pass the JSON written by align bench --format json") from None
    ok = abs(diff) < limit and mg == sg
    reason = (f"mock layer {bench['mock'].get('median_ms', float('nan')):.4g} ms vs decoder submodule "
              f"{bench['submodule'].get('median_ms', float('nan')):.4g} ms ({diff:+.2f} %)")
    if mg != sg:
        reason += f"; CUDA graph differs: mock {mg}, submodule {sg}"
    return _check("bench", ok, {"diff_pct": diff, "mock_graph": mg, "submodule_graph": sg}, limit, reason)


def verdict(mock=None, e2e=None, op: str | None = None, bench: str | os.PathLike | dict | None = None,
            config=None, phase: str | None = None, mock_range: str | None = None, e2e_range: str | None = None,
            skip: int = 0, ops_file: str | None = None, store=None, e2e_select: dict | None = None) -> Verdict:
    """The checklist for ``op``; without ``mock``/``e2e`` the newest stored profiles of that op."""
    from align.profile.store import Store

    store = store or Store()
    if mock is None or e2e is None:
        if op is None:
            raise AlignError("no profiles given", "pass --mock and --e2e, or --op to use the newest stored ones")
        mock = mock or newest(store, "mock", op)
        e2e = e2e or newest(store, "e2e", op)
    cmp = compare(mock, e2e, op=op, phase=phase, mock_range=mock_range, e2e_range=e2e_range, skip=skip,
                  config=config, ops_file=ops_file, store=store, e2e_select=e2e_select)
    return judge(cmp, _read_bench(bench) if bench is not None else None)


def judge(cmp: Comparison, bench: dict | None = None) -> Verdict:
    """The checklist of an existing comparison."""
    checks = pd.DataFrame(evaluate(cmp, bench), columns=["name", "passed", "value", "threshold", "reason", "kernels"])
    return Verdict(op=cmp.op, passed=bool(checks["passed"].all()), checks=checks, mock=cmp.mock.path,
                   e2e=cmp.e2e.path, comparison=cmp)


def record(v: Verdict, store) -> Path:
    """Keep the verdict in the store (``verdicts/<op>/<time>.json``): ``align collect`` refuses to
    collect an op whose newest verdict did not pass."""
    import datetime as dt

    when = dt.datetime.now(dt.timezone.utc)
    folder = Path(store.root) / "verdicts" / str(v.op)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{when.strftime('%Y%m%dT%H%M%S.%fZ')}.json"
    path.write_text(json.dumps({**v.to_dict(), "time": when.isoformat()}, indent=2) + "\n")
    return path


def newest_record(store, op: str) -> dict | None:
    folder = Path(store.root) / "verdicts" / op
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    return json.loads(files[-1].read_text()) if files else None


def _read_bench(bench) -> dict:
    if isinstance(bench, dict):
        return bench
    try:
        return json.loads(Path(bench).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AlignError(f"cannot read benchmark result {bench}: {exc}", "pass align bench --format json output")


def newest(store, kind: str, op: str) -> str:
    """The newest stored profile of ``kind`` recorded for ``op`` (``align profile --op``)."""
    df = store.list()
    hit = df[(df["kind"] == kind) & (df["op"] == op) & df["sqlite"]] if "op" in df else df.iloc[0:0]
    if hit.empty:
        raise AlignError(f"no {kind} profile of op {op!r} in {store.root}",
                         f"capture one with align profile {kind} --op {op} -- ..., or pass --{kind} PATH")
    return str(store.root / hit.iloc[-1]["name"])
