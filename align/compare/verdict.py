"""The alignment checklist of seed 002, one row per check, with numbers and a reason.

names    the kernel families making up most of the E2E op's latency all occur in the mock
counts   kernels per forward close (per family and in total)
latency  total latency per forward, mock / E2E, within the ratio (default < 2x)
missing  no E2E family absent from the mock
extra    no mock family absent from the E2E run
shapes   per family launched on both sides, the mock's grids within the span of the E2E run's
         (``shape_tolerance`` beyond it at most): the same batch, sequence and heads
graph    the op's kernels launched the same way on both sides, per phase: replayed from a CUDA
         graph, or eagerly (``[verdict] graph = false`` turns it off)
bench    (with a decoder-submodule benchmark result) latency difference < 1 % and the same
         CUDA-graph behaviour on both sides
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from align.compare.diff import Comparison, base_phase, check_accept, compare, meta_beside
from align.compare.pairing import NAMED, plain_rows
from align.errors import AlignError, arg

MAX_LISTED = 6
SCHEMA_VERSION = 2  # of Verdict.to_dict(): 2 added answer, causes, launch, shapes, ranges, recorded
MAX_CAUSES = 4  # causes on the first screen (all of them in JSON and with --explain)
SHORT = 80  # characters of a check's short reason on the first screen


@dataclass
class Verdict:
    op: str
    passed: bool
    checks: pd.DataFrame
    mock: str
    e2e: str
    comparison: Comparison | None = None
    chosen: str | None = None  # how the pair was found, when the store chose it
    recorded: Path | None = None  # the store's record of this verdict (verdict(record_in_store=True))
    accepted: pd.DataFrame | None = None  # known differences left out of the checks, with reasons
    causes: list = field(default_factory=list)  # align.diagnose.Cause, most of the gap first

    @property
    def answer(self) -> str:
        """The first line: ``FAIL (dsa): 2 causes: dtype, batch`` or ``PASS (dsa)``."""
        word = "PASS" if self.passed else "FAIL"
        if self.passed or not self.causes:
            return f"{word} ({self.op})"
        if [c.kind for c in self.causes] == ["unexplained"]:
            return f"{word} ({self.op}): no cause found in the kernels"
        labels = list(dict.fromkeys(c.label for c in self.causes))
        n = len(self.causes)
        shown = ", ".join(labels[:MAX_CAUSES]) + (f" and {len(labels) - MAX_CAUSES} more" if len(labels) > MAX_CAUSES else "")
        return f"{word} ({self.op}): {n} cause{'s' if n != 1 else ''}: {shown}"

    @property
    def short_reasons(self) -> list[str]:
        """One short reason per check, for the first screen (the full one is in ``checks``)."""
        return [short_reason(r) for r in self.checks.to_dict(orient="records")]

    @property
    def pairing(self) -> pd.DataFrame:
        """Which E2E forwards each mock phase was compared with, on what evidence (compare/pairing.py)."""
        cmp = self.comparison
        return cmp.pairing.table if cmp is not None and cmp.pairing is not None else pd.DataFrame()

    @property
    def headline(self) -> str:
        """What must be read before the checks (a verdict across GPU models), or ""."""
        cmp = self.comparison
        lines = [cmp.comparability.headline() if cmp is not None and cmp.comparability is not None else "",
                 kernel_cut_headline(cmp)]
        return "; ".join(x for x in lines if x)

    def to_dict(self) -> dict:
        rows = []
        for r in self.checks.to_dict(orient="records"):
            rows.append({"name": r["name"], "passed": bool(r["passed"]), "value": _plain(r["value"]),
                         "threshold": _plain(r["threshold"]), "reason": r["reason"], "kernels": list(r["kernels"])})
        cmp = self.comparison
        pairing = cmp.pairing.records() if cmp is not None and cmp.pairing is not None else []
        out = {"schema_version": SCHEMA_VERSION, "answer": self.answer, "passed": self.passed, "op": self.op,
               "mock": self.mock, "e2e": self.e2e, "causes": [c.to_dict() for c in self.causes],
               "checks": rows, "pairing": pairing}
        if cmp is not None:
            out["ranges"] = {"mock": cmp.mock.range_used, "e2e": cmp.e2e.range_used}
            out["launch"] = plain_rows(cmp.launch) if cmp.launch is not None else []
            out["shapes"] = shape_records(cmp)
            out["e2e_processes"] = cmp.e2e_processes
        if self.recorded is not None:
            out["recorded"] = str(self.recorded)
        if self.headline:
            out = {"headline": self.headline, **out}
        if cmp is not None and cmp.comparability is not None:
            out["comparability"] = cmp.comparability.to_dict()
        if self.accepted is not None and len(self.accepted):
            out["accepted"] = plain_rows(self.accepted)
        if cmp is not None and len(cmp.ranks):
            out["ranks"] = {"per_rank": plain_rows(cmp.ranks), "summary": rank_lines(cmp.ranks)}
        if cmp is not None and cmp.op_reason:
            out["op_chosen"] = cmp.op_reason
        if self.chosen:
            out["pair_chosen"] = self.chosen
        return out

    def screen(self, width: int = 100, all_causes: bool = False) -> list[str]:
        """The first screen: the answer, each cause with its fix, the checklist one short reason each,
        and one line of what was compared (the rest: ``checks``, the report, ``--explain``)."""
        import textwrap

        def wrap(text: str, first: str, rest: str) -> list[str]:
            return textwrap.wrap(text, width=max(width, 40), initial_indent=first, subsequent_indent=rest,
                                 break_on_hyphens=False, break_long_words=False) or [first]

        out = wrap(self.headline, "", "  ") if self.headline else []  # a verdict across GPU models says so first
        out.append(self.answer)
        shown = self.causes if all_causes else self.causes[:MAX_CAUSES]
        for i, c in enumerate(shown, 1):
            share = f"; {c.explains:.0%} of the gap" if c.explains else ""
            out += wrap(f"{c.kind} [{c.phase}{share}]: {c.says}", f"{i}. ", "   ")
            out += wrap(f"fix: {c.fix}", "   ", "        ")
        if len(self.causes) > len(shown):
            rest = sum(c.explains for c in self.causes[len(shown):])
            out.append(f"   and {len(self.causes) - len(shown)} more causes ({rest:.0%} of the gap): --explain or --format json")
        out.append("checks:")
        name_w = max(len(n) for n in self.checks["name"]) if len(self.checks) else 6
        for (name, ok), short in zip(zip(self.checks["name"], self.checks["passed"]), self.short_reasons):
            head = f"  {name:<{name_w}}  {'pass' if ok else 'FAIL'}  "
            out += wrap(short, head, " " * len(head))[:2]
        if self.comparison is not None and self.comparison.pairing is not None:
            out += wrap("compared: " + "; ".join(pairing_short(self.pairing)), "", "  ")
            out += wrap(self.comparison.process_line(width=120), "", "  ")
        return out

    def to_markdown(self) -> str:
        head = f"### align verdict: {'PASS' if self.passed else 'FAIL'} ({self.op})\n\n"
        if self.headline:
            head += f"**{self.headline}**\n\n"
        head += f"mock `{self.mock}` vs E2E `{self.e2e}`\n\n"
        if self.causes:
            head += f"**{self.answer}**\n\n" + "".join(
                f"{i}. **{c.kind}** [{c.phase}; {c.explains:.0%} of the gap]: {c.says}  \n   fix: {c.fix}\n"
                for i, c in enumerate(self.causes, 1)) + "\n"
        cmp = self.comparison
        if cmp is not None and cmp.comparability is not None:
            head += cmp.comparability.line() + "".join(f"; warning: {w}" for w in cmp.comparability.warnings)
            head += "\n\n"
        head += "| check | result | value | threshold | reason |\n|---|---|---|---|---|\n"
        for r in self.checks.to_dict(orient="records"):
            reason = r["reason"].replace("|", "\\|")
            head += (f"| {r['name']} | {'pass' if r['passed'] else '**FAIL**'} | {_fmt(r['value'])} | "
                     f"{_fmt(r['threshold'])} | {reason} |\n")
        ranks = self.comparison.ranks if self.comparison is not None else pd.DataFrame()
        if len(ranks):
            head += "\n**Ranks**: " + "; ".join(rank_lines(ranks)) + "\n"
        return head + accepted_markdown(self.accepted) + pairing_markdown(self.pairing)


def short_reason(r: dict) -> str:
    """A check's reason in a few words: its numbers, not its lists (those are in ``reason``)."""
    name, ok, value, kernels, reason = r["name"], r["passed"], r["value"], list(r["kernels"]), r["reason"]
    if len(reason) <= SHORT:
        return reason
    if name == "names" and not ok:
        return f"{len(kernels)} main E2E families not in the mock"
    if name == "counts" and isinstance(value, dict):
        per = [f"{ph} {v['mock']:g} vs {v['e2e']:g}" for ph, v in value.items() if isinstance(v, dict)]
        return ("kernels per forward: " + ", ".join(per))[:SHORT] if per else reason[:SHORT]
    if name == "latency" and isinstance(value, dict):
        return "mock/E2E per forward: " + ", ".join(f"{ph} {v:.2f}x" for ph, v in value.items())
    if name in ("missing", "extra") and not ok:
        return f"{len(kernels)} families only in the {'E2E run' if name == 'missing' else 'mock'}"
    if name == "shapes" and not ok:
        return f"{len(kernels)} families launched for another problem size"
    if name == "graph" and isinstance(value, dict):
        return "mock/E2E launch: " + ", ".join(f"{ph} {v}" for ph, v in value.items())
    cut = reason[:SHORT].rsplit(" ", 1)[0]
    return cut + " ..."


def shape_records(cmp: Comparison) -> list[dict]:
    """Per family launched on both sides: each side's distinct launches as fields (grid, block,
    registers, shared memory), whether the mock's are among the E2E run's, and why not."""
    from align.compare.shapes import shape_fields

    t = cmp.shapes
    if t is None or t.empty:
        return []
    fields = shape_fields(cmp.mock, cmp.e2e)
    out = []
    for r in plain_rows(t):
        key = (r["phase"], r["family"])
        out.append({"phase": r["phase"], "family": r["family"], "same": bool(r["same"]), "cause": r["cause"],
                    "beyond": r["beyond"], "mock": fields[0].get(key, []), "e2e": fields[1].get(key, [])})
    return out


def rank_lines(ranks: pd.DataFrame) -> list[str]:
    """Per phase of a multi-process E2E run: ranks, their E2E latency range, spread and outlier."""
    out = []
    for ph, g in ranks.groupby("phase", sort=False):
        worst = g[g["rank"] == g["outlier"].iloc[0]].iloc[0]
        out.append(f"{ph}: {len(g)} ranks, E2E {g['e2e_ns'].min() / 1e3:,.1f}-{g['e2e_ns'].max() / 1e3:,.1f} us per "
                   f"forward (spread {g['spread_pct'].iloc[0]:.2f} %), mock/E2E {g['ratio'].min():.2f}-"
                   f"{g['ratio'].max():.2f}x; outlier {worst['rank']} ({worst['deviation_pct']:+.2f} % from the median)")
    return out


def accepted_markdown(accepted: pd.DataFrame | None) -> str:
    if accepted is None or accepted.empty:
        return ""
    out = "\n**Accepted differences** (left out of the checks)\n\n| phase | family | difference | reason |\n|---|---|---|---|\n"
    for r in accepted.to_dict(orient="records"):
        out += f"| {r['phase'] or 'any'} | `{r['family']}` | {r['difference']} | {r['reason']} |\n"
    return out


def accepted_table(cmp: Comparison) -> pd.DataFrame:
    """The [accept] entries against the comparison: each accepted (phase, family) with what differed
    there and the reason; an entry that matches nothing compared is listed as not found."""
    accept = cmp.config.get("accept", {}) or {}
    fam = cmp.table[cmp.table["family"] != "TOTAL"]
    rows = []
    for key, reason in accept.items():
        phase, family = (key.split(":", 1) if key.split(":", 1)[0] in NAMED else (None, key))
        hit = fam[(fam["family"] == family) & ((fam["phase"].map(base_phase) == phase) if phase else True)]
        if hit.empty:
            rows.append({"phase": phase, "family": family, "difference": "not found in this comparison",
                         "reason": reason, "found": False})
        for r in hit.to_dict(orient="records"):
            what = ("no difference" if r["status"] == "match" else
                    f"{r['status']} (mock {r['mock_count']:g} / E2E {r['e2e_count']:g} per forward)")
            rows.append({"phase": r["phase"], "family": family, "difference": what, "reason": reason, "found": True})
    return pd.DataFrame(rows, columns=["phase", "family", "difference", "reason", "found"])


def pairing_lines(table: pd.DataFrame) -> list[str]:
    """The pairing in words, one line per mock phase (and per E2E group left out)."""
    lines = []
    for r in plain_rows(table):
        where = f" of pid {r['pid']}" if r.get("pid") is not None else ""
        if r["mock_phase"] is None:
            lines.append(f"E2E {r['e2e_group']}{where}: {r['e2e_forwards']} forwards {r['note']}")
        elif r["e2e_group"] is None:
            lines.append(f"mock {r['mock_phase']}: {r['note']}")
        else:
            how = ("by kernels (family overlap {:.0%}, launch shapes {:.0%}), confidence {} ({:.2f})".format(
                r["family_overlap"], r["shape_overlap"], r["confidence_word"], r["confidence"])
                   if r["evidence"] == "kernels" else f"by {r['evidence']}")
            lines.append(f"{r['key']}: mock {r['mock_phase']} ({r['mock_forwards']} forwards) vs E2E "
                         f"{r['e2e_group']}{where} ({r['e2e_forwards']} forwards), paired {how}")
    return lines


def pairing_short(table: pd.DataFrame) -> list[str]:
    """``context: mock 5 vs E2E G1 x4 (kernels, low)`` per compared key, and what was left out."""
    out = []
    for r in plain_rows(table):
        if r["mock_phase"] is None or r["e2e_group"] is None:
            out.append(f"{r['mock_phase'] or 'E2E ' + str(r['e2e_group'])} not compared")
            continue
        how = f"{r['evidence']}, {r['confidence_word']}" if r["evidence"] == "kernels" else r["evidence"]
        out.append(f"{r['key']}: mock x{r['mock_forwards']} vs E2E {r['e2e_group']} x{r['e2e_forwards']} ({how})")
    return out


def pairing_view(table: pd.DataFrame) -> pd.DataFrame:
    """The pairing as a short table for people: what is compared with what, on what evidence."""
    rows = []
    for r in plain_rows(table):
        paired = r["mock_phase"] is not None and r["e2e_group"] is not None
        where = f" pid {r['pid']}" if "pid" in r else ""
        conf = (f"{r['confidence_word']} ({r['confidence']:.2f}); families {r['family_overlap']:.0%}, shapes "
                f"{r['shape_overlap']:.0%}" if paired and r["evidence"] == "kernels" else
                r["confidence_word"] if paired else "")
        rows.append({"compared": r["key"] or "-",
                     "mock": f"{r['mock_phase']} x{r['mock_forwards']}" if r["mock_phase"] is not None else "-",
                     "e2e": f"{r['e2e_group']}{where} x{r['e2e_forwards']}" if r["e2e_group"] is not None else "-",
                     "evidence": r["evidence"] or "", "confidence": conf, "note": r["note"]})
    return pd.DataFrame(rows, columns=["compared", "mock", "e2e", "evidence", "confidence", "note"])


def pairing_markdown(table: pd.DataFrame) -> str:
    if table.empty:
        return ""
    return "\n**pairing**\n\n" + "".join(f"- {line}\n" for line in pairing_lines(table))


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


def evaluate(cmp: Comparison, bench: dict | None = None, accepted: pd.DataFrame | None = None) -> list[dict]:
    cfg = cmp.config["verdict"]
    t = cmp.table
    fam = t[t["family"] != "TOTAL"]
    tot = t[t["family"] == "TOTAL"].set_index("phase")
    if accepted is not None and accepted["found"].any():
        # accepted families leave the checks, and their kernels and time both sides' totals
        acc = accepted[accepted["found"]]
        drop = fam.set_index(["phase", "family"]).index.isin(list(zip(acc["phase"], acc["family"])))
        gone = fam[drop].groupby("phase")[["mock_count", "e2e_count", "mock_ns", "e2e_ns"]].sum()
        fam = fam[~drop]
        tot = tot.copy()
        for c in gone.columns:
            tot.loc[gone.index, c] = tot.loc[gone.index, c] - gone[c]
    phases = sorted(set(fam["phase"]))
    checks = [_phases_check(cmp)]

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
    shaped = _shape_words(cmp)
    checks.append(_check("latency", not bad, value, cfg["latency_ratio"],
                         ("latency per forward within ratio: " + ", ".join(f"{k} {v:.2f}x" for k, v in value.items())
                          if not bad else "; ".join(bad) + (f"; largest gaps: {_names(worst)}" if worst else ""))
                         + shaped, worst if bad else []))

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

    # shapes: the mock's kernels launched for the E2E run's problem size (seed 002: check the input shapes)
    checks.append(_shapes_check(cmp, cfg["shape_tolerance"]))

    # graph: the op's kernels launched the same way on both sides (CUDA-graph replay or eager), seed 002
    if cfg.get("graph", True):
        checks.append(_graph_check(cmp.launch))

    # compiled: both sides run the op as compiled code, or both eagerly
    checks.append(_compiled_check(cmp))

    # bench: decoder submodule vs mock layer with identical inputs (align bench --format json)
    if bench is not None:
        checks.append(_bench_check(bench, cfg["bench_diff_pct"]))
    return checks


def _phases_check(cmp: Comparison) -> dict:
    """Every phase the mock measures is compared with E2E forwards: a phase left without a partner
    was not checked, so the verdict cannot pass on the others alone."""
    t = cmp.pairing.table if cmp.pairing is not None else pd.DataFrame()
    alone = [r for r in plain_rows(t) if r["mock_phase"] is not None and r["e2e_group"] is None] if len(t) else []
    compared = sorted({base_phase(k) for k in cmp.pairing.keys}) if cmp.pairing is not None else []
    if not alone:
        return _check("phases", True, compared, None, "every mock phase is compared with E2E forwards: "
                      + ", ".join(compared))
    listed = [f"mock {r['mock_phase']} ({r['note']})" for r in alone]
    return _check("phases", False, compared, None, f"not compared with any E2E forward: {'; '.join(listed)}",
                  [r["mock_phase"] for r in alone])


def _compiled_check(cmp: Comparison) -> dict:
    """Per compared phase, the op runs compiled on both sides or eager on both: generated kernels
    (torch.compile's Triton fusions) around it on one side only say the other is built another way."""
    words, off, value = [], [], {}
    for key, (mock, e2e) in (cmp.compiled or {}).items():
        value[key] = {"mock": len(mock), "e2e": len(e2e)}
        if bool(mock) == bool(e2e):
            continue
        which, other, fams = ("E2E run", "mock", e2e) if e2e else ("mock", "E2E run", mock)
        off.append(key)
        words.append(f"{key}: the {which} is compiled ({len(fams)} kernel families generated by torch.compile "
                     f"around the op, e.g. {fams[0]}), the {other} runs eagerly: build the mock the way the E2E "
                     "run is built (torch.compile with the same mode, or neither)")
    cut = "; ".join(f"{k}: the E2E forwards are {_cut_words(cmp, k)}, so only the op's own kernels ({_names(f)}) "
                    "are compared on both sides" for k, f in (cmp.name_cut or {}).items())
    if off:
        return _check("compiled", False, value, None, "; ".join(words) + (f"; {cut}" if cut else ""), off)
    both = [k for k, (mk, ek) in (cmp.compiled or {}).items() if mk and ek]
    reason = (f"both sides compiled in {', '.join(both)}" if both else "both sides run eagerly") + \
        (f"; {cut}" if cut else "")
    return _check("compiled", True, value, None, reason)


def _cut_words(cmp: Comparison, key: str) -> str:
    """How the E2E forwards of ``key`` were cut by kernel names."""
    if key in cmp.kernel_cut:
        return "cut from the kernel stream (no NVTX range holds the op's kernels)"
    return "compiled steps without module ranges"


def kernel_cut_headline(cmp: Comparison | None) -> str:
    """The line a verdict leads with when the E2E run had no NVTX around the op: what it rests on."""
    if cmp is None or not cmp.kernel_cut:
        return ""
    fams = sorted({f for k in cmp.kernel_cut for f in cmp.name_cut[k]})
    return (f"ONLY THE OP'S OWN KERNELS COMPARED ({_names(fams)}): no NVTX range of the E2E run holds the op, so "
            "its calls were cut from the kernel stream by name; the mock's other kernels (projections, RoPE, cache "
            "writes) are not checked: profile the E2E run with module ranges for a full comparison")


def _shape_words(cmp: Comparison) -> str:
    """"; launch shapes differ in N families: phase:family (cause), ..." or ""."""
    t = cmp.shapes
    differ = t[~t["same"].astype(bool)] if len(t) else t
    if differ.empty:
        return ""
    return f"; launch shapes differ in {len(differ)} families: {_with_causes(differ)}"


def _shapes_check(cmp: Comparison, tolerance: float) -> dict:
    """Fails when a family's mock grids lie beyond the span of the E2E run's by more than
    ``tolerance`` (relative): another batch, sequence or head count. Within the span (an E2E decode
    walks through cache lengths) or near it, and tile choices alone, are information."""
    t = cmp.shapes
    if t.empty:
        return _check("shapes", True, {}, tolerance, "no family launched on both sides has launch shapes to compare")
    value = {ph: float(g["beyond"].max()) for ph, g in t.groupby("phase", sort=False)}
    off = t[t["beyond"] > tolerance].sort_values("beyond", ascending=False)
    if off.empty:
        return _check("shapes", True, value, tolerance,
                      "the mock's kernels run at the E2E run's problem size (grids within its span)")
    return _check("shapes", False, value, tolerance,
                  f"{len(off)} families launched for another problem size than the E2E run's: {_with_causes(off)}",
                  [f"{r['phase']}:{r['family']}" for r in off.to_dict(orient="records")])


def _with_causes(rows: pd.DataFrame) -> str:
    """``phase:family (cause), ...`` of shape rows, the first MAX_LISTED and how many more."""
    listed = [f"{r['phase']}:{r['family']} ({r['cause']})" for r in rows.to_dict(orient="records")]
    more = f" and {len(listed) - MAX_LISTED} more" if len(listed) > MAX_LISTED else ""
    return ", ".join(listed[:MAX_LISTED]) + more


def _graph_check(launch: pd.DataFrame) -> dict:
    """Same launch mode per phase; the reason says how each side launched and what the calls cost."""
    value = {r["phase"]: f"{r['mock_mode']}/{r['e2e_mode']}" for r in launch.to_dict(orient="records")}
    differ = launch[~launch["same"].astype(bool)]
    if differ.empty:
        modes = ", ".join(f"{ph} {v.split('/')[0]}" for ph, v in value.items())
        return _check("graph", True, value, "same", f"the mock launches as the E2E run does: {modes}")
    words = [f"{r['phase']}: mock {r['mock']}, E2E {r['e2e']}" for r in differ.to_dict(orient="records")]
    return _check("graph", False, value, "same",
                  "; ".join(words) + " (seed 002: replay a CUDA graph in the mock where the E2E run does, "
                  "launch eagerly where it does not)")


def _bench_check(bench: dict, limit: float) -> dict:
    try:
        diff = float(bench["diff_pct"])
        mg, sg = bench["mock"]["cuda_graph"], bench["submodule"]["cuda_graph"]
    except (KeyError, TypeError, ValueError):
        raise AlignError(f"the {arg('bench')} file lacks diff_pct / mock.cuda_graph / submodule.cuda_graph",
                         "pass the JSON written by align bench --format json") from None
    ok = abs(diff) < limit and mg == sg
    reason = (f"mock layer {bench['mock'].get('median_ms', float('nan')):.4g} ms vs decoder submodule "
              f"{bench['submodule'].get('median_ms', float('nan')):.4g} ms ({diff:+.2f} %)")
    if mg != sg:
        reason += f"; CUDA graph differs: mock {mg}, submodule {sg}"
    return _check("bench", ok, {"diff_pct": diff, "mock_graph": mg, "submodule_graph": sg}, limit, reason)


def verdict(mock=None, e2e=None, op: str | None = None, bench: str | os.PathLike | dict | None = None,
            store=None, record_in_store: bool = True, accept: dict[str, str] | None = None,
            causes: str | os.PathLike | None = None, **options) -> Verdict:
    """The checklist for ``op``; without ``mock``/``e2e`` the newest comparable stored pair of that op.
    The verdict is recorded in the store (``v.recorded``), which ``align collect`` obeys;
    ``record_in_store=False`` only looks. ``accept``: known differences, ``{"FAMILY": "reason"}``, on
    top of the config's [accept]. ``causes``: a file of diagnosis rules on top of
    align/data/causes.toml. ``options`` as :func:`align.compare.diff.compare`."""
    from align.diagnose import load_rules

    from align.store import Store

    store = store or Store()
    chosen = None
    if mock is None or e2e is None:
        if op is None:
            raise AlignError("no profiles given", f"pass {arg('mock')} and {arg('e2e')}, or {arg('op')} to use the newest stored ones")
        mock, e2e, chosen = newest_pair(store, op, mock, e2e)
    cmp = compare(mock, e2e, op=op, store=store, **options)
    check_accept(accept or {}, arg("accept"))
    cmp.config = {**cmp.config, "accept": {**cmp.config.get("accept", {}), **(accept or {})}}
    rules = load_rules(causes)
    v = judge(cmp, _read_bench(bench) if bench is not None else None, causes_rules=rules)
    v.chosen = chosen
    if record_in_store:
        v.recorded = record(v, store)
    return v


def judge(cmp: Comparison, bench: dict | None = None, diagnosis: bool = True, causes_rules=None) -> Verdict:
    """The checklist of an existing comparison ([accept] entries of its config left out, and listed),
    and, where it fails, the diagnosis (align.diagnose; ``causes_rules`` a loaded rules set)."""
    accepted = accepted_table(cmp)
    checks = pd.DataFrame(evaluate(cmp, bench, accepted),
                          columns=["name", "passed", "value", "threshold", "reason", "kernels"])
    from align.diagnose import diagnose

    return Verdict(op=cmp.op, passed=bool(checks["passed"].all()), checks=checks, mock=cmp.mock.path,
                   e2e=cmp.e2e.path, comparison=cmp, accepted=accepted,
                   causes=diagnose(cmp, checks, causes_rules) if diagnosis else [])


def record(v: Verdict, store) -> Path:
    """Keep the verdict in the store: ``align collect`` refuses to collect an op whose newest
    verdict did not pass. (Also align.scale's ManyVerdicts: one record for all its E2E reports.)"""
    import datetime as dt

    from align.ops.registry import valid_op_name

    when = dt.datetime.now(dt.timezone.utc)
    pair = {"mock": v.mock, "e2e": v.e2e, "chosen": v.chosen or "given"}
    meta = meta_beside(v.mock)
    if meta:
        # which mock this was: the collect gate obeys the verdicts of the mock it times
        pair["mock_command"] = meta.get("command")
        pair["mock_planted"] = meta.get("planted")
    # an op name is a safe folder name (the registry checks it); a verdict of ranges goes apart
    folder = str(v.op) if valid_op_name(v.op) else "_ranges"
    return store.record_verdict(folder, {**v.to_dict(), "pair": pair, "time": when.isoformat()}, when)


def newest_record(store, op: str) -> dict | None:
    """The newest recorded verdict of ``op`` (with ``file``: where it lies), or None."""
    return store.newest_verdict(op)


def _read_bench(bench) -> dict:
    if isinstance(bench, dict):
        return bench
    try:
        return json.loads(Path(bench).read_text())
    except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8
        raise AlignError(f"cannot read benchmark result {bench}: {exc}", "pass align bench --format json output")


def _candidates(store, kind: str, op: str) -> pd.DataFrame:
    """Stored profiles recorded as ``kind`` (mock or e2e, never aux) for ``op`` that finished and were
    exported, leaving out captures that planted a fault to test the checks (meta.json ``planted``)."""
    from align.store import read_meta

    df = store.list()
    if "op" not in df:
        return df.iloc[0:0]
    ok = df["status"].isin(["ok"]) | df["status"].isna()
    df = df[(df["kind"] == kind) & (df["op"] == op) & df["sqlite"] & ok]
    planted = [bool(read_meta(store.root / n)[0].get("planted")) for n in df["name"]]
    return df[[not p for p in planted]]


def newest_pair(store, op: str, mock=None, e2e=None) -> tuple[str, str, str]:
    """The newest comparable stored pair of ``op``: the newest E2E profile recorded for the op, and the
    newest mock recorded for it on the same GPU model (any GPU when none matches). Auxiliary captures
    (``align profile aux``: module traces, tools) are never taken. Returns (mock, e2e, how)."""
    e2es = _candidates(store, "e2e", op)
    mocks = _candidates(store, "mock", op)
    if mock is None and mocks.empty:
        raise AlignError(f"no mock profile of op {op!r} in {store.root}",
                         f"capture one with align profile mock --op {op} -- ..., or pass {arg('mock', 'PATH')}")
    if e2e is None and e2es.empty:
        raise AlignError(f"no E2E profile of op {op!r} in {store.root}",
                         f"capture one with align profile e2e --op {op} -- ..., or pass {arg('e2e', 'PATH')}")
    how = []
    if e2e is None:
        row = e2es.iloc[-1]
        e2e = str(store.root / row["name"])
        gpu = row["gpu"]
        how.append(f"E2E {row['name']} (newest e2e of op {op})")
    else:
        gpu = None
    if mock is None:
        same = mocks[mocks["gpu"] == gpu] if gpu is not None else mocks.iloc[0:0]
        pick = (same if len(same) else mocks).iloc[-1]
        mock = str(store.root / pick["name"])
        how.append(f"mock {pick['name']} (newest mock of op {op}" + (f" on {gpu})" if len(same) else ")"))
    return mock, e2e, "; ".join(how) + f", from the store {store.root}"
