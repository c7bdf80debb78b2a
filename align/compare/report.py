"""Self-contained reports of a mock/E2E comparison: HTML with inline SVG plots, and Markdown.

The HTML has no scripts and no external resources, so it opens anywhere (CI artifacts, mail) and
renders the same offline.
"""

from __future__ import annotations

import html
import math

import pandas as pd

from align.compare.diff import Comparison
from align.compare.verdict import Verdict, kernel_cut_headline, pairing_view

COLORS = {"mock": "#d1495b", "e2e": "#00798c"}
STATUS_COLORS = {"match": "#2e7d32", "pass": "#2e7d32", "missing": "#c62828", "extra": "#c62828", "FAIL": "#c62828",
                 "count": "#ef6c00", "slower": "#ef6c00", "faster": "#ef6c00", "differs": "#ef6c00"}


def _esc(x) -> str:
    return html.escape("" if x is None or (isinstance(x, float) and math.isnan(x)) else str(x))


def _num(x, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return f"{x:,.{digits}f}"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round values (1, 2 or 5 times a power of ten apart) covering [lo, hi]."""
    span = max(hi - lo, abs(hi) * 1e-6, 1e-9)
    raw = span / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    last = math.ceil(hi / step) * step
    return [first + i * step for i in range(int(round((last - first) / step)) + 1)]


def family_bars(table: pd.DataFrame, phase: str, width: int = 900) -> str:
    """Horizontal bars: latency per forward of each family, mock and E2E side by side."""
    t = table[(table["phase"] == phase) & (table["family"] != "TOTAL")]
    if t.empty:
        return ""
    label_w, bar_h, gap = 330, 9, 8
    top = 24
    height = top + len(t) * (2 * bar_h + gap) + 10
    ticks = nice_ticks(0.0, max(float(t[["mock_ns", "e2e_ns"]].max().max()), 1.0), 5)
    height += 16  # the value axis under the bars
    scale = (width - label_w - 90) / ticks[-1]
    parts = [f'<svg class="bars" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'xmlns="http://www.w3.org/2000/svg" role="img" aria-label="latency per family, {_esc(phase)}">',
             f'<text x="{label_w}" y="14" font-size="12">latency per forward (ns): '
             f'<tspan fill="{COLORS["mock"]}">mock</tspan> / <tspan fill="{COLORS["e2e"]}">E2E</tspan></text>']
    axis_y = height - 18
    for v in ticks:
        x = label_w + v * scale
        parts.append(f'<line class="tick" x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{axis_y}" stroke="#e3e3e3"/>')
        parts.append(f'<text class="tick" x="{x:.1f}" y="{axis_y + 12}" font-size="9" text-anchor="middle">'
                     f'{_num(v)}</text>')
    y = top
    for r in t.itertuples():
        fam = str(r.family)
        label = fam if len(fam) <= 48 else fam[:45] + "..."
        parts.append(f'<text x="{label_w - 6}" y="{y + bar_h + 3}" font-size="11" text-anchor="end">'
                     f'<title>{_esc(fam)}</title>{_esc(label)}</text>')
        for i, (side, value) in enumerate((("mock", r.mock_ns), ("e2e", r.e2e_ns))):
            w = max(float(value) * scale, 0.0)
            yy = y + i * bar_h
            parts.append(f'<rect class="bar {side}" x="{label_w}" y="{yy}" width="{w:.1f}" height="{bar_h - 1}" '
                         f'fill="{COLORS[side]}"><title>{side}: {_num(value)} ns</title></rect>')
            parts.append(f'<text x="{label_w + w + 4:.1f}" y="{yy + bar_h - 1}" font-size="9">{_num(value)}</text>')
        y += 2 * bar_h + gap
    parts.append("</svg>")
    return "\n".join(parts)


def forward_timeline(cmp: Comparison, phase: str, width: int = 900, height: int = 220) -> str:
    """Latency of every forward in order, both sides; dropped warm-up forwards drawn hollow."""
    series = {}
    for side in (cmp.mock, cmp.e2e):
        fw = side.forwards.forwards
        series[side.label] = fw[fw["phase"] == phase].reset_index(drop=True)
    if all(s.empty for s in series.values()):
        return ""
    n = max(len(s) for s in series.values())
    hi = max(float(s["latency_ns"].max()) for s in series.values() if len(s)) or 1.0
    lo = 0.9 * min(float(s["latency_ns"].min()) for s in series.values() if len(s))
    yticks = nice_ticks(lo, hi, 4)
    vmin, vmax = yticks[0], yticks[-1]
    left, bottom, top = 84, 30, 20
    sx = (width - left - 20) / max(n - 1, 1)
    sy = (height - bottom - top) / max(vmax - vmin, 1.0)
    xticks = [v for v in nice_ticks(0, max(n - 1, 1), 8) if v <= n - 1 and v == int(v)]
    parts = [f'<svg class="timeline" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'xmlns="http://www.w3.org/2000/svg" role="img" aria-label="latency per forward, {_esc(phase)}">',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" stroke="#999"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#999"/>',
             f'<text x="{left}" y="{top - 6}" font-size="11">ns per forward: '
             f'<tspan fill="{COLORS["mock"]}">mock</tspan> / <tspan fill="{COLORS["e2e"]}">E2E</tspan>; '
             f'hollow: dropped as warm-up</text>',
             f'<text x="{width - 10}" y="{height - 8}" font-size="11" text-anchor="end">forward</text>']
    for v in yticks:
        y = height - bottom - (v - vmin) * sy
        parts.append(f'<line class="tick" x1="{left - 4}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text class="tick" x="{left - 7}" y="{y + 3:.1f}" font-size="9" text-anchor="end">'
                     f'{_num(v)}</text>')
    for v in xticks:
        x = left + v * sx
        parts.append(f'<line class="tick" x1="{x:.1f}" y1="{height - bottom}" x2="{x:.1f}" y2="{height - bottom + 4}" '
                     f'stroke="#999"/>')
        parts.append(f'<text class="tick" x="{x:.1f}" y="{height - bottom + 14}" font-size="9" '
                     f'text-anchor="middle">{int(v)}</text>')
    for label, s in series.items():
        pts = [(left + i * sx, height - bottom - (float(v) - vmin) * sy) for i, v in enumerate(s["latency_ns"])]
        if len(pts) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{COLORS[label]}" stroke-width="1.5"/>')
        for (x, y), kept, v in zip(pts, s["kept"], s["latency_ns"]):
            fill = COLORS[label] if kept else "white"
            parts.append(f'<circle class="point {label}" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{fill}" '
                         f'stroke="{COLORS[label]}"><title>{label}: {_num(v)} ns{"" if kept else " (dropped)"}</title>'
                         f"</circle>")
    parts.append("</svg>")
    return "\n".join(parts)


SEQ_COLORS = {"=": "#9e9e9e", "~": "#ef6c00", "+": "#c62828", "-": "#1565c0"}
SEQ_WORDS = {"=": "same family", "~": "other family in its place", "+": "mock only", "-": "E2E only"}


def kernel_timeline(cmp: Comparison, phase: str, width: int = 900, lane: int = 26) -> str:
    """One forward of each side (the kept one of median latency), each kernel (and memcpy/memset) at its start offset
    within the forward with its duration; colours from the alignment of the two kernel sequences
    (sequence.py), so the place where they diverge shows."""
    from align.compare.sequence import edit_alignment, representative_forward

    fws = {}
    for side in (cmp.mock, cmp.e2e):
        fws[side.label] = representative_forward(side.items, side.forwards.forwards, phase)
    if any(f.empty for f in fws.values()):
        return ""
    a, b = (fws[x]["family"].astype(str).tolist() for x in ("mock", "e2e"))
    try:
        pairs = edit_alignment(a, b)
    except ValueError:
        return ""  # too long to align: the table and the other plots remain
    ops = {"mock": ["+"] * len(a), "e2e": ["-"] * len(b)}
    for i, j in pairs:
        if i is not None and j is not None:
            ops["mock"][i] = ops["e2e"][j] = "=" if a[i] == b[j] else "~"
    span = max(float((f["start"] + f["duration"]).max() - f["start"].min()) for f in fws.values()) or 1.0
    ticks = nice_ticks(0, span / 1e3, 8)
    left, top = 84, 22
    height = top + 2 * lane + 40
    sx = (width - left - 20) / (ticks[-1] * 1e3 or 1.0)
    parts = [f'<svg class="kernels" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'xmlns="http://www.w3.org/2000/svg" role="img" aria-label="kernels of one forward, {_esc(phase)}">',
             f'<text x="{left}" y="{top - 8}" font-size="11">kernels of one forward by start offset: '
             + ", ".join(f'<tspan fill="{SEQ_COLORS[o]}">{w}</tspan>' for o, w in SEQ_WORDS.items()) + "</text>"]
    axis_y = top + 2 * lane + 6
    parts.append(f'<line x1="{left}" y1="{axis_y}" x2="{width - 10}" y2="{axis_y}" stroke="#999"/>')
    for v in ticks:
        x = left + v * 1e3 * sx
        parts.append(f'<line class="tick" x1="{x:.1f}" y1="{axis_y}" x2="{x:.1f}" y2="{axis_y + 4}" stroke="#999"/>')
        parts.append(f'<text class="tick" x="{x:.1f}" y="{axis_y + 14}" font-size="9" text-anchor="middle">'
                     f"{_num(v, 1 if ticks[-1] < 10 else 0)}</text>")
    parts.append(f'<text x="{width - 10}" y="{axis_y + 28}" font-size="11" text-anchor="end">us from the '
                 "forward's first kernel</text>")
    for row, label in enumerate(("mock", "e2e")):
        f = fws[label]
        y = top + row * lane
        parts.append(f'<text x="{left - 7}" y="{y + lane / 2 + 3:.1f}" font-size="11" text-anchor="end">'
                     f'{"mock" if label == "mock" else "E2E"}</text>')
        t0 = float(f["start"].min())
        for (st, du, fam), op in zip(f[["start", "duration", "family"]].itertuples(index=False), ops[label]):
            x = left + (float(st) - t0) * sx
            w = max(float(du) * sx, 1.0)
            parts.append(f'<rect class="kernel {label}" x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{lane - 6}" '
                         f'fill="{SEQ_COLORS[op]}"><title>{_esc(fam)}: +{(float(st) - t0) / 1e3:,.1f} us, '
                         f"{float(du) / 1e3:,.1f} us ({SEQ_WORDS[op]})</title></rect>")
    parts.append("</svg>")
    return "\n".join(parts)


def _threshold(v) -> str:
    return "" if v is None else f"{v:g}" if isinstance(v, (int, float)) else str(v)


def _table_html(df: pd.DataFrame, status_col: str | None = None) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in df.columns)
    rows = []
    for r in df.itertuples(index=False):
        cells = []
        for c, v in zip(df.columns, r):
            if isinstance(v, float) and v.is_integer() and c != "latency_ratio":
                text = _num(v, 0)  # counts per forward: 5, not 5.0
            elif isinstance(v, float):
                text = _num(v, 2 if c == "latency_ratio" else 1)
            else:
                text = _esc(v)
            style = f' style="color:{STATUS_COLORS.get(str(v), "inherit")};font-weight:600"' if c == status_col else ""
            klass = ' class="num"' if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
            cells.append(f"<td{klass}{style}>{text}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 .pass { color: #2e7d32; } h1 .fail { color: #c62828; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; }
th { background: #f4f4f4; }
td { max-width: 520px; overflow-wrap: anywhere; }
td.num { white-space: nowrap; text-align: right; }
.meta { color: #555; font-size: 13px; }
"""


def _causes_html(verdict: Verdict) -> str:
    """The diagnosis: each cause with its fix and the share of the gap it explains."""
    if not verdict.causes:
        return ""
    items = "".join(f"<li><b>{_esc(c.kind)}</b> [{_esc(c.phase)}; {c.explains:.0%} of the gap]: {_esc(c.says)}"
                    f"<br>fix: {_esc(c.fix)}<br><span class='meta'>{_esc(c.source)}</span></li>" for c in verdict.causes)
    return f"<h2>Causes</h2><p class='fail'>{_esc(verdict.answer)}</p><ol>{items}</ol>"


def render_html(verdict: Verdict) -> str:
    cmp = verdict.comparison
    status = "PASS" if verdict.passed else "FAIL"
    checks = verdict.checks.assign(result=verdict.checks["passed"].map({True: "pass", False: "FAIL"}))
    checks = checks.assign(threshold=checks["threshold"].map(_threshold))[["name", "result", "threshold", "reason"]]
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>align verdict: {status} ({_esc(verdict.op)})"
             f"</title><style>{CSS}</style></head><body>",
             f"<h1>align verdict: <span class='{status.lower()}'>{status}</span> ({_esc(verdict.op)})</h1>",
             f"<p class='meta'>mock: {_esc(verdict.mock)} (op region: {_esc(cmp.mock.range_used)})<br>"
             f"E2E: {_esc(verdict.e2e)} (op region: {_esc(cmp.e2e.range_used)})</p>",
             _comparability_html(cmp), _causes_html(verdict),
             "<h2>Checklist</h2>", _table_html(checks, status_col="result")]
    if verdict.accepted is not None and len(verdict.accepted):
        parts += ["<h2>Accepted differences</h2>", "<p class='meta'>left out of the checks, each with the reason "
                  "given</p>", _table_html(verdict.accepted[["phase", "family", "difference", "reason"]])]
    if not verdict.pairing.empty:
        parts += ["<h2>Pairing</h2>", "<p class='meta'>which E2E forwards each mock phase is compared with, "
                  "and on what evidence</p>", _table_html(pairing_view(verdict.pairing))]
    if cmp.op_reason:
        parts.append(f"<p class='meta'>{_esc(cmp.op_reason)}</p>")
    if len(cmp.ranks):
        from align.compare.verdict import rank_lines

        parts += ["<h2>Ranks</h2>", "".join(f"<p class='meta'>{_esc(x)}</p>" for x in rank_lines(cmp.ranks)),
                  _table_html(cmp.ranks.drop(columns=["spread_pct", "outlier"]))]
    if not cmp.launch.empty:
        parts += ["<h2>Launch mode</h2>", "<p class='meta'>how each side launched the op's kernels, per forward "
                  "(CUDA-graph replay or eager) and the CPU time inside the launch calls</p>",
                  _table_html(cmp.launch[["phase", "same", "mock", "e2e"]])]
    shapes = cmp.shapes
    differ = shapes[~shapes["same"].astype(bool)] if len(shapes) else shapes
    if len(differ):
        parts += ["<h2>Launch shapes that differ</h2>", "<p class='meta'>families launched on both sides whose mock "
                  "shapes (grid, block, registers, static+dynamic shared memory) are not among the E2E run's, and "
                  "the likely cause</p>", _table_html(differ[["phase", "family", "cause", "mock", "e2e"]])]
    for phase in sorted(set(cmp.table["phase"])):
        parts.append(f"<h2>{_esc(phase)}</h2>")
        parts.append(family_bars(cmp.table, phase))
        parts.append(forward_timeline(cmp, phase))
        parts.append(kernel_timeline(cmp, phase))
        parts.append(_table_html(cmp.table[cmp.table["phase"] == phase].drop(columns=["phase"]), status_col="status"))
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p)


def _comparability_html(cmp) -> str:
    """The comparability line and its warnings, the verdict's headline first."""
    c = cmp.comparability
    if c is None:
        return ""
    lines = [x for x in (c.headline(), kernel_cut_headline(cmp)) if x]
    head = "".join(f"<p class='fail'><b>{_esc(x)}</b></p>" for x in lines)
    warns = "".join(f"<li>{_esc(w)}</li>" for w in c.warnings)
    line = cmp.process_line()
    procs = f"<p class='meta'>{_esc(line)}</p>" if line else ""
    return head + f"<p class='meta'>{_esc(c.line())}</p>" + procs + (f"<ul class='meta'>{warns}</ul>" if warns else "")


def render_markdown(verdict: Verdict) -> str:
    """A pull-request summary: the checklist, then the per-family table of each phase."""
    cmp = verdict.comparison
    out = [verdict.to_markdown()]
    for phase in sorted(set(cmp.table["phase"])):
        t = cmp.table[cmp.table["phase"] == phase]
        out.append(f"\n#### {phase}\n\n| family | status | mock count | E2E count | mock ns | E2E ns | ratio |\n"
                   "|---|---|---|---|---|---|---|")
        for r in t.itertuples():
            out.append(f"| `{r.family}` | {r.status} | {r.mock_count:g} | {r.e2e_count:g} | {_num(r.mock_ns)} | "
                       f"{_num(r.e2e_ns)} | {'' if pd.isna(r.latency_ratio) else f'{r.latency_ratio:.2f}'} |")
    return "\n".join(out) + "\n"
