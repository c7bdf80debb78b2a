"""How each side launched the op's kernels: replayed from a CUDA graph or one call per kernel, and
what the launching costs the CPU. Seed 002: a mock that replays a graph against an E2E run that
launches eagerly (or the reverse) times something the E2E run does not do.

Per side and phase, over the kept forwards (medians per forward):
  mode                 graph (every kernel a replayed graph node), eager (none), or mixed
  graph_launches       cudaGraphLaunch calls behind the op's kernels
  launches             launch calls of any kind behind them
  api_ns               CPU time inside those calls (the launch overhead the trace shows)
"""

from __future__ import annotations

from align.lazy import np, pd

COLUMNS = ["phase", "mode", "forwards", "kernels", "graph_kernels", "graph_launches", "launches", "api_ns"]


def launch_modes(side) -> "pd.DataFrame":
    """One row per phase of a compared side (``compare.diff.Side`` with its forwards)."""
    items = side.kept_items()
    if items.empty:
        return pd.DataFrame(columns=COLUMNS)
    if side.view is not None:
        launch = items["launch"].to_numpy()
        dur = side.view.call_ns(launch)
    else:  # a side built by hand, without its profile: one launch per kernel, no API times
        launch = items["launch"].to_numpy() if "launch" in items else np.arange(len(items))
        dur = np.full(len(items), np.nan)
    graph = (items["graph_node_id"].to_numpy() >= 0) if "graph_node_id" in items else np.zeros(len(items), bool)
    df = pd.DataFrame({"phase": items["phase"].astype(str).to_numpy(), "forward": items["forward"].to_numpy(),
                       "launch": launch, "graph": graph, "api_ns": dur})
    key = ["phase", "forward"]
    per = df.groupby(key, sort=False).agg(kernels=("graph", "size"), graph_kernels=("graph", "sum"))
    calls = df.drop_duplicates(key + ["launch"])
    per["launches"] = calls.groupby(key, sort=False).size()
    per["graph_launches"] = calls[calls["graph"]].groupby(key, sort=False).size().reindex(per.index, fill_value=0)
    api = calls.groupby(key, sort=False)["api_ns"]
    per["api_ns"] = api.sum(min_count=1)  # NaN where no call was found (a side without its profile)
    per = per.reset_index()
    out = []
    for ph, g in per.groupby("phase", sort=False):
        share = g["graph_kernels"].sum() / max(g["kernels"].sum(), 1)
        mode = "graph" if share == 1 else "eager" if share == 0 else "mixed"
        out.append({"phase": ph, "mode": mode, "forwards": len(g), "kernels": float(g["kernels"].median()),
                    "graph_kernels": float(g["graph_kernels"].median()),
                    "graph_launches": float(g["graph_launches"].median()), "launches": float(g["launches"].median()),
                    "api_ns": float(g["api_ns"].median())})
    return pd.DataFrame(out, columns=COLUMNS)


def describe(row: dict) -> str:
    """``graph (1 graph launch, 330 kernels per forward; 12 us of launch calls)``."""
    if row["mode"] == "eager":
        how = f"{row['launches']:g} launches"
    else:
        how = f"{row['graph_launches']:g} graph launch{'es' if row['graph_launches'] != 1 else ''}"
        if row["mode"] == "mixed":
            how += f" + {row['launches'] - row['graph_launches']:g} eager"
    api = "" if row["api_ns"] != row["api_ns"] else f"; {row['api_ns'] / 1e3:.0f} us in launch calls"
    return f"{row['mode']} ({how} for {row['kernels']:g} kernels per forward{api})"


def compare_modes(mock: "pd.DataFrame", e2e: "pd.DataFrame") -> "pd.DataFrame":
    """Per phase both sides' launch mode, and whether they agree."""
    a = mock.set_index("phase")
    b = e2e.set_index("phase")
    rows = []
    for ph in [p for p in b.index if p in a.index]:
        m, e = a.loc[ph].to_dict(), b.loc[ph].to_dict()
        m["phase"] = e["phase"] = ph
        rows.append({"phase": ph, "mock_mode": m["mode"], "e2e_mode": e["mode"], "same": m["mode"] == e["mode"],
                     "mock": describe(m), "e2e": describe(e), "mock_api_ns": m["api_ns"], "e2e_api_ns": e["api_ns"]})
    return pd.DataFrame(rows, columns=["phase", "mock_mode", "e2e_mode", "same", "mock", "e2e", "mock_api_ns",
                                       "e2e_api_ns"])
