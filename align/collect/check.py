"""``align collect --check``: the validation steps of seed 001 on a collected folder.

Row counts per phase and TP size against the op's grid (every case has a row, or a recorded reason:
a memory skip, a failure, or a ``--cases`` restriction), the per-case benchmark flags the collector
kept (CUDA graph or eager, throttling, SM clocks, power), and the newest ``--verify`` report. A case
with no row and no reason, a failure, a throttled case or a verification that drifted fails it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from align.collect import writers
from align.collect.cases import grid
from align.errors import AlignError, arg

CASES_LOG = "cases.jsonl"


@dataclass
class CheckReport:
    out: Path
    op: str
    counts: pd.DataFrame       # phase, tp, grid, rows, skipped, failed, outside_cases, missing, extra
    missing: pd.DataFrame      # case, phase, reason: every planned grid case without a row
    flags: pd.DataFrame        # phase, recorded, cuda_graph, eager, throttled, sm_clock_*, power_w_*
    verify: pd.DataFrame | None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    aic: dict | None = None    # aiconfigurator's whole-model estimate on the tables, when asked

    @property
    def passed(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        from align.output import records

        return {"out": str(self.out), "op": self.op, "passed": self.passed, "problems": self.problems,
                "notes": self.notes,
                "counts": records(self.counts), "missing": records(self.missing), "flags": records(self.flags),
                "verify": records(self.verify) if self.verify is not None else None, "aic": self.aic}


def read_case_log(out: Path) -> dict[str, dict]:
    """Case id -> the newest benchmark record the collector kept for it (``.align/cases.jsonl``)."""
    path = Path(out) / ".align" / CASES_LOG
    found: dict[str, dict] = {}
    if not path.exists():
        return found
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill: that case's row, if written, is still counted
        if isinstance(rec, dict) and isinstance(rec.get("case"), str):
            found[rec["case"]] = rec
    return found


def check(out: Path, op: str, settings=None, aic_work: Path | None = None) -> CheckReport:
    """Validate the collection of ``op`` in ``out`` (the folder ``align collect --out`` wrote);
    ``aic_work``: also run aiconfigurator's whole-model estimate on it there (align.collect.aic_estimate)."""
    from align.collect.runner import Checkpoint, _case_key, _row_keys, as_collected, spec_of, table_dir

    out = Path(out)
    ck = Checkpoint(out)
    runs = ck.data.get("runs", [])
    if not runs:
        raise AlignError(f"{out} holds no collection of {op} (no .align/checkpoint.json with a run)",
                         f"pass the folder align collect --op {op} wrote")
    mine = [r for r in runs if r.get("op") == op]
    if not mine:
        raise AlignError(f"{out} holds no collection of {op} (its runs collected {', '.join(sorted({str(r.get('op')) for r in runs}))})",
                         "pass the op it collected")
    settings = as_collected(settings, mine[-1].get("settings", {}))
    spec = spec_of(op, settings)
    module = spec.module()
    subsets = [r.get("subset") for r in mine]
    planned_known = all("subset" in r for r in mine)  # runs before align kept --cases did not record it
    logged = all(r.get("case_log") for r in mine)  # runs that write each case's record before its row
    asked = {p for r in mine for p in (r.get("phases") or spec.phases)}
    folder = _tables(out, spec, settings)
    failed, skipped, log = ck.data.get("failed", {}), ck.data.get("skipped", {}), read_case_log(out)
    counts, missing, flags = [], [], []
    unrecorded: list[str] = []
    for phase, ps in spec.phases.items():
        if phase not in asked:
            continue  # no run collected this phase (--phase)
        path = folder / ps.perf_file
        rows = writers.read_rows(path)
        cases = grid(ps)[0]
        if not cases:
            continue
        fields = list(module.describe(phase, *cases[0].args))
        present = set(_row_keys(rows, fields)) if not rows.empty else set()
        tp_at = ps.fields.index("tp") if "tp" in ps.fields else None
        per_tp: dict = {}
        keys, measured = set(), []
        for case in cases:
            key = _case_key(module, case)
            keys.add(key)
            tp = case.args[tp_at] if tp_at is not None else None
            c = per_tp.setdefault(tp, {"phase": phase, "tp": tp, "grid": 0, "rows": 0, "skipped": 0, "failed": 0,
                                       "outside_cases": 0, "missing": 0})
            c["grid"] += 1
            if key in present:
                c["rows"] += 1
                if case.id in log:
                    measured.append(log[case.id])
                else:
                    unrecorded.append(case.id)
                continue
            if case.id in skipped:
                c["skipped"] += 1
                reason = f"skipped: {skipped[case.id]}"
            elif case.id in failed:
                c["failed"] += 1
                reason = f"failed: {failed[case.id].get('error', '?')}"
            elif not planned_known or (subsets and all(_outside(s, ps.fields, case.args) for s in subsets)):
                c["outside_cases"] += 1  # never asked for (--cases), or not known to be: counted, not listed
                continue
            else:
                c["missing"] += 1
                reason = "not run (the collection stopped early: --resume)"
            missing.append({"case": case.id, "phase": phase, "reason": reason})
        extra = len(present - keys)
        for c in per_tp.values():
            counts.append({**c, "extra": 0})
        if counts:
            counts[-1]["extra"] = extra  # rows off the grid are counted once per phase
        flags.append(_flags(phase, measured))
    counts_df = pd.DataFrame(counts, columns=["phase", "tp", "grid", "rows", "skipped", "failed", "outside_cases",
                                              "missing", "extra"])
    missing_df = pd.DataFrame(missing, columns=["case", "phase", "reason"])
    flags_df = pd.DataFrame(flags)
    verify = _newest_verify(out)
    problems, notes = [], []
    if not planned_known:
        planned = int(mine[-1].get("cases") or 0)
        have = int(counts_df["rows"].sum() + counts_df["failed"].sum())
        notes.append(f"the runs did not record their --cases: judged by the newest run's plan, {planned} case(s), "
                     f"of which {have} have a row or a recorded failure")
        if have < planned:
            problems.append(f"{planned - have} planned case(s) have no row: run align collect --op {op} --out {out} "
                            "--resume")
    recorded_folder = table_dir(out, spec, settings)
    if folder != recorded_folder:
        notes.append(f"tables read from {folder} (the runs recorded {recorded_folder})")
    if counts_df["missing"].sum():
        problems.append(f"{int(counts_df['missing'].sum())} grid case(s) have no row and no reason: run "
                        f"align collect --op {op} --out {out} --resume")
    if counts_df["failed"].sum():
        problems.append(f"{int(counts_df['failed'].sum())} case(s) failed (see missing; --resume --retry-failed)")
    if not flags_df.empty and flags_df["throttled"].sum():
        problems.append(f"{int(flags_df['throttled'].sum())} case(s) ran while the GPU throttled: collect them "
                        "again on an idle, cool GPU")
    if verify is not None and "verdict" in verify and (verify["verdict"] == "drift").any():
        problems.append(f"{int((verify['verdict'] == 'drift').sum())} verified case(s) drifted by 2 % or more "
                        "on two re-runs")
    if logged and unrecorded:
        problems.append(f"{len(unrecorded)} row(s) have no record in {out / '.align' / CASES_LOG} (a write failed, "
                        f"or the log was edited; the first: {unrecorded[0]}): delete those rows from their perf file "
                        f"and run align collect --op {op} --out {out} --resume to measure them again")
    elif not flags_df.empty and not flags_df["recorded"].sum():
        notes.append("no per-case records (.align/cases.jsonl): collected before align kept them")
    notes += _seed_notes(op, counts_df)
    aic = None
    if aic_work is not None:
        from align.collect.aic_estimate import estimate

        try:
            aic = estimate(folder, op, aic_work)
        except AlignError as exc:
            problems.append(f"aiconfigurator's estimate on these tables: {exc}")
    return CheckReport(out=out, op=op, counts=counts_df, missing=missing_df, flags=flags_df, verify=verify,
                       problems=problems, notes=notes, aic=aic)


def _tables(out: Path, spec, settings) -> Path:
    """The folder holding the op's perf files: where the runs' settings put it, or else the one folder
    of ``<out>/<system>/<family>/*/*`` that holds them (a collection moved to another backend name)."""
    from align.collect.runner import table_dir

    recorded = table_dir(out, spec, settings)
    files = [ps.perf_file for ps in spec.phases.values()]
    if any((recorded / f).exists() for f in files):
        return recorded
    found = sorted({p.parent for f in files for p in Path(out).glob(f"*/{spec.family}/*/*/{f}")})
    if len(found) > 1:
        raise AlignError(f"{out} holds {spec.name} tables in {len(found)} folders ({', '.join(map(str, found))})",
                         f"check one collection at a time: pass its own {arg('out')}")
    return found[0] if found else recorded


def _seed_notes(op: str, counts: pd.DataFrame) -> list[str]:
    """Seed 001's expected rows per TP size (collect.toml [check.seed_rows_per_tp]) beside this grid's."""
    from align import datafiles

    seed = datafiles.builtin("collect").get("check", {}).get("seed_rows_per_tp", {}).get(op, {})
    out = []
    for phase, expected in seed.items():
        grid_per_tp = counts.loc[counts["phase"] == phase, "grid"]
        if len(grid_per_tp):
            out.append(f"seed 001 expects about {expected} {phase} rows per TP size (aiconfigurator's grid); "
                       f"align's {op} grid has {int(grid_per_tp.max())} per TP size")
    return out


def _outside(subset: dict | None, fields: list[str], args: tuple) -> bool:
    """Whether a run restricted by ``subset`` (--cases) left this case out."""
    if not subset:
        return False
    return any(f in subset and v not in subset[f] for f, v in zip(fields, args))


def _flags(phase: str, recs: list[dict]) -> dict:
    """What the kept benchmark records say about how a phase's rows were measured."""
    def values(key):
        return [r[key] for r in recs if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]

    clocks, starts, power = values("sm_clock_min_mhz"), values("sm_clock_start_mhz"), values("power")
    return {"phase": phase, "recorded": len(recs),
            "cuda_graph": sum(1 for r in recs if r.get("used_cuda_graph") is True),
            "eager": sum(1 for r in recs if r.get("used_cuda_graph") is False),
            "throttled": sum(1 for r in recs if r.get("throttled") is True),
            "sm_clock_min_mhz": min(clocks) if clocks else None, "sm_clock_max_mhz": max(starts) if starts else None,
            "power_w_min": min(power) if power else None, "power_w_max": max(power) if power else None}


def _newest_verify(out: Path) -> pd.DataFrame | None:
    path = Path(out) / ".align" / "verify.json"
    if not path.exists():
        return None
    try:
        return pd.DataFrame(json.loads(path.read_text()))
    except (ValueError, TypeError):
        return None
