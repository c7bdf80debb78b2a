"""One mock against many E2E reports (one per host of a multi-node run, or many runs): each pair is
compared or judged in its own Dask task, where its E2E export lies; the client gets the small result
(family table, checks, the verdict as JSON) and puts them together: every rank of every report side by
side, with the spread and outlier across all of them, and one PASS only when every report passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from align.scale.analyses import label


def _relabel(table: pd.DataFrame, report: str) -> pd.DataFrame:
    """Comparison keys ``phase`` / ``phase (rank N)`` as ``phase (REPORT)`` / ``phase (REPORT rank N)``,
    so compare.diff.rank_summary sees every rank of every report as one process of one run."""
    def one(key: str) -> str:
        base, _, rest = key.partition(" (")
        return f"{base} ({report} {rest}" if rest else f"{base} ({report})"

    return table.assign(phase=table["phase"].astype(str).map(one))


def diff_task(e2e: str, mock: str, op: str | None, options: dict[str, Any]) -> tuple[pd.DataFrame, str | None]:
    """One E2E report against the mock: the family table (as ``align diff``) and the op compared."""
    from align.compare.diff import compare

    cmp = compare(mock, e2e, op=op, **options)
    return cmp.table, cmp.op


def verdict_task(e2e: str, mock: str, op: str | None, bench: Any, accept: dict | None, options: dict[str, Any]
                 ) -> dict[str, Any]:
    """One E2E report against the mock: the verdict (unrecorded: the client records the whole), its
    checks and family table."""
    from align.compare.verdict import verdict

    v = verdict(mock, e2e, op=op, bench=bench, accept=accept, record_in_store=False, **options)
    return {"verdict": v.to_dict(), "checks": v.checks, "table": v.comparison.table, "passed": v.passed,
            "op": v.op, "markdown": v.to_markdown()}


@dataclass
class ManyVerdicts:
    """The verdicts of one mock against several E2E reports."""

    mock: str
    reports: list[str]
    labels: list[str]
    results: list[dict[str, Any]]
    op: str | None = None
    recorded: Any = None
    ranks: pd.DataFrame = field(default_factory=pd.DataFrame)

    chosen = None  # the reports are always given (compare.verdict.record reads it)

    @property
    def passed(self) -> bool:
        return all(r["passed"] for r in self.results)

    @property
    def e2e(self) -> list[str]:
        return self.reports

    @property
    def checks(self) -> pd.DataFrame:
        """Every report's checks, a ``report`` column first."""
        return pd.concat([r["checks"].assign(report=lab) for lab, r in zip(self.labels, self.results)],
                         ignore_index=True)[["report", "name", "passed", "value", "threshold", "reason", "kernels"]]

    def rank_lines(self) -> list[str]:
        from align.compare.verdict import rank_lines

        return rank_lines(self.ranks) if len(self.ranks) else []

    def to_dict(self) -> dict[str, Any]:
        from align.compare.pairing import plain_rows

        out = {"passed": self.passed, "op": self.op, "mock": self.mock, "e2e": self.reports,
               "reports": [{"report": lab, **r["verdict"]} for lab, r in zip(self.labels, self.results)]}
        if len(self.ranks):
            out["ranks"] = {"per_rank": plain_rows(self.ranks), "summary": self.rank_lines()}
        return out

    def to_markdown(self) -> str:
        head = (f"## align verdict over {len(self.reports)} E2E reports: {'PASS' if self.passed else 'FAIL'} "
                f"({self.op})\n\n")
        if len(self.ranks):
            head += "**Ranks of all reports**: " + "; ".join(self.rank_lines()) + "\n\n"
        return head + "\n".join(f"#### {lab}\n\n{r['markdown']}" for lab, r in zip(self.labels, self.results))


def _ranks(labels: Sequence[str], tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    from align.compare.diff import rank_summary

    return rank_summary(pd.concat([_relabel(t, lab) for lab, t in zip(labels, tables)], ignore_index=True))


def diff_many(mock: str, reports: Sequence[str], op: str | None = None, options: dict[str, Any] | None = None,
              **dask: Any) -> tuple[pd.DataFrame, pd.DataFrame, str | None]:
    """``align diff MOCK E2E...``: every report's family table (a ``report`` column first), the ranks
    of all reports side by side, and the op compared."""
    from align.scale.reports import map_reports

    results = map_reports(diff_task, list(reports), mock, op, options or {}, **dask)
    labels = [label(r, reports) for r in reports]
    table = pd.concat([t.assign(report=lab) for lab, (t, _) in zip(labels, results)], ignore_index=True)
    table = table[["report"] + [c for c in table.columns if c != "report"]]
    return table, _ranks(labels, [t for t, _ in results]), results[0][1]


def verdict_many(mock: str, reports: Sequence[str], op: str | None = None, bench: Any = None,
                 accept: dict | None = None, store=None, record_in_store: bool = True,
                 options: dict[str, Any] | None = None, **dask: Any) -> ManyVerdicts:
    """The checklist of ``mock`` against each E2E report, put together; recorded in the store as one
    verdict (``align collect`` obeys it: it passes only when every report passed)."""
    from align.scale.reports import map_reports
    from align.store import Store

    results = map_reports(verdict_task, list(reports), mock, op, bench, accept, options or {}, **dask)
    labels = [label(r, reports) for r in reports]
    mv = ManyVerdicts(mock=str(mock), reports=list(reports), labels=labels, results=results, op=results[0]["op"],
                      ranks=_ranks(labels, [r["table"] for r in results]))
    if record_in_store:
        from align.compare.verdict import record

        mv.recorded = record(mv, store or Store())
    return mv
