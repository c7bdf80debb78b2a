"""Launch shapes per kernel family, mock against E2E (seed 002: "names match but latency does not:
check the input shapes").

A family's shape is how its kernels were launched: grid and block, registers per thread, static +
dynamic shared memory. Same kernels launched with other grids mean another problem size (batch,
sequence or heads: the grid dimension that differs says which, and a kernel that launches one block
per query token, ``token_kernels`` of the op in collect.toml, gives the tokens outright); another
block, register count or shared memory means another tile or kernel configuration.
"""

from __future__ import annotations

from align.attribute.ops import LAUNCH_COLUMNS
from align.ops.registry import alternation
from align.lazy import pd

COLUMNS = ["phase", "family", "same", "mock", "e2e", "cause", "beyond"]
MAX_SHOWN = 3  # distinct shapes shown per side


def _shape_rows(side) -> "pd.DataFrame":
    """Kernels of the side's kept forwards with their family, phase and launch configuration."""
    items = side.kept_items().reset_index(drop=True)
    if items.empty or side.view is None:
        return pd.DataFrame()
    det = side.view.launch_details(items)
    if det.empty:
        return pd.DataFrame()
    det = det.dropna(subset=["gridX"]).astype("int64", errors="ignore")
    rows = items.loc[det.index, ["phase", "family"]]  # categoricals: no string per kernel
    # full names: another instantiation (dtype, vector width) is no other problem size
    full = pd.Series(side.view.demangled(items), index=items.index).loc[det.index]
    rows = rows.assign(name=pd.Categorical(full.to_numpy()))
    return pd.concat([rows, det], axis=1)


def _words(grid: tuple, config: tuple) -> str:
    bx, by, bz, regs, ssm, dsm = config
    smem = f" smem {ssm or 0}+{dsm or 0}" if ssm is not None or dsm is not None else ""
    return (f"grid {grid[0]},{grid[1]},{grid[2]} block {bx},{by},{bz}" + (f" regs {regs}" if regs is not None else "")
            + smem)


def _shown(shapes: list[tuple]) -> str:
    out = "; ".join(_words(g, c) for g, c in shapes[:MAX_SHOWN])
    return out + (f"; +{len(shapes) - MAX_SHOWN} more" if len(shapes) > MAX_SHOWN else "")


def compare_shapes(mock, e2e, token_kernels: list[str] | None = None) -> "pd.DataFrame":
    """Per (phase, family) launched on both sides: the distinct shapes of each, whether the mock's are
    all among the E2E run's (``same``), and, where not, the likely cause."""
    a, b = _shape_rows(mock), _shape_rows(e2e)
    if a.empty or b.empty:
        return pd.DataFrame(columns=COLUMNS)
    tokens = alternation(token_kernels or [], "token_kernels", "fix collect.toml")
    shapes_a, names_a = _by_family(a)
    shapes_b, names_b = _by_family(b)
    out = []
    order = b[["phase", "family"]].drop_duplicates()  # the E2E run's order of first launch
    for ph, fam in zip(order["phase"].astype(str), order["family"].astype(str)):
        sb = shapes_b[(ph, fam)]
        sa = shapes_a.get((ph, fam))
        if sa is None:
            continue  # a family on one side only is the missing/extra checks' business
        # the E2E run may launch more shapes than the mock (its cache length grows step by step): the
        # mock's shapes must be among them
        same = set(sa) <= set(sb)
        if same:
            extra = len(set(sb) - set(sa))
            cause = f"the E2E run also launched {extra} other shape(s)" if extra else ""
        elif not names_a[(ph, fam)] <= names_b[(ph, fam)]:
            # other instantiations of the family's kernels (another dtype, vector width): their grids
            # follow from that, not from the problem size; the names and counts checks speak to it
            cause = "another kernel instantiation (its name differs: dtype, tile, vector width or variant)"
        else:
            first = next(iter(names_b[(ph, fam)]))
            cause = _cause(sa, sb, tokens is not None and bool(tokens.search(first)))
        size = not same and not cause.startswith("another kernel instantiation")
        out.append({"phase": ph, "family": fam, "same": same, "mock": _shown(sa), "e2e": _shown(sb), "cause": cause,
                    "beyond": _beyond(sa, sb) if size else 0.0})
    return pd.DataFrame(out, columns=COLUMNS)


def _by_family(rows: "pd.DataFrame") -> tuple[dict, dict]:
    """(phase, family) -> distinct (grid, config) launches, most launched first; and -> kernel names.
    One grouping over all kernels: a few distinct shapes per family, however many kernels."""
    counts = rows.fillna({c: -1 for c in LAUNCH_COLUMNS[6:]}).groupby(["phase", "family"] + LAUNCH_COLUMNS,
                                                                      sort=False, observed=True).size()
    counts = counts.sort_values(ascending=False, kind="stable")
    shapes: dict = {}
    for key, _ in counts.items():
        ph, fam, gx, gy, gz, bx, by, bz, regs, ssm, dsm = key
        config = (int(bx), int(by), int(bz)) + tuple(None if v < 0 else int(v) for v in (regs, ssm, dsm))
        shapes.setdefault((str(ph), str(fam)), []).append(((int(gx), int(gy), int(gz)), config))
    pairs = rows[["phase", "family", "name"]].drop_duplicates()
    names: dict = {}
    for ph, fam, name in zip(pairs["phase"].astype(str), pairs["family"].astype(str), pairs["name"].astype(str)):
        names.setdefault((ph, fam), set()).add(name)
    return shapes, names


def _beyond(mock: list[tuple], e2e: list[tuple]) -> float:
    """How far the mock's grids lie outside the range of the E2E run's, per dimension, as the largest
    relative distance (0 when every mock grid value is within the E2E run's span): 2x the batch is
    1.0, a decode one step past the E2E run's last cache length a fraction of a percent."""
    worst = 0.0
    for i in range(3):
        lo, hi = min(g[i] for g, _ in e2e), max(g[i] for g, _ in e2e)
        for g, _ in mock:
            v = g[i]
            if v > hi:
                worst = max(worst, (v - hi) / hi)
            elif v < lo:
                worst = max(worst, (lo - v) / v)
    return worst


def _values(values) -> str:
    """``1/5/12 ... 8320`` (at most five values written out)."""
    v = [str(x) for x in values]
    return "/".join(v) if len(v) <= 5 else "/".join(v[:3]) + f"/.../{v[-1]} ({len(v)} values)"


def _cause(mock: list[tuple], e2e: list[tuple], token_kernel: bool) -> str:
    configs_a, configs_b = {c for _, c in mock}, {c for _, c in e2e}
    if configs_a != configs_b:
        diffs = []
        for i, what in enumerate(("block x", "block y", "block z", "registers", "static smem", "dynamic smem")):
            va, vb = sorted({c[i] for c in configs_a}, key=str), sorted({c[i] for c in configs_b}, key=str)
            if va != vb:
                diffs.append(f"{what} {_values(va)} vs {_values(vb)}")
        return "another kernel configuration (tile choice): " + ", ".join(diffs[:3])
    if token_kernel:
        ta, tb = sorted({g[0] for g, _ in mock}), sorted({g[0] for g, _ in e2e})
        return (f"another problem size: query tokens per launch {_values(ta)} (mock) vs {_values(tb)} (E2E), "
                "one block per token")
    words = []
    for i, dim in enumerate("xyz"):
        va, vb = sorted({g[i] for g, _ in mock}), sorted({g[i] for g, _ in e2e})
        if va != vb:
            ratio = f" ({va[0] / vb[0]:.3g}x)" if len(va) == len(vb) == 1 and vb[0] else ""
            words.append(f"grid {dim} {_values(va)} vs {_values(vb)}{ratio}")
    if not words:
        # each dimension takes the same values on both sides, combined otherwise
        fmt = lambda shapes: sorted({",".join(map(str, g)) for g, _ in shapes})
        words.append(f"grids {_values(fmt(mock))} vs {_values(fmt(e2e))}")
    return "another problem size (batch, sequence or heads): " + ", ".join(words)


def shape_fields(mock, e2e) -> tuple[dict, dict]:
    """Per side, (phase, family) -> its distinct launches as fields, most launched first:
    ``{grid: [x, y, z], block: [x, y, z], registers, static_smem, dynamic_smem, kernels}``."""
    out = []
    for side in (mock, e2e):
        rows = _shape_rows(side)
        per: dict = {}
        if not rows.empty:
            g = rows.fillna({c: -1 for c in LAUNCH_COLUMNS[6:]}).groupby(["phase", "family"] + LAUNCH_COLUMNS, sort=False,
                                                                           observed=True).size()
            for key, n in g.sort_values(ascending=False, kind="stable").items():
                ph, fam, gx, gy, gz, bx, by, bz, regs, ssm, dsm = key
                opt = [None if v < 0 else int(v) for v in (regs, ssm, dsm)]
                per.setdefault((str(ph), str(fam)), []).append(
                    {"grid": [int(gx), int(gy), int(gz)], "block": [int(bx), int(by), int(bz)], "registers": opt[0],
                     "static_smem": opt[1], "dynamic_smem": opt[2], "kernels": int(n)})
        out.append(per)
    return out[0], out[1]
