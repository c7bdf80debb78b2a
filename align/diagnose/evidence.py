"""What the diagnosis reads of a comparison, once: each side's kept kernels with their full names,
durations and grids, and the per-family gaps of the family table."""

from __future__ import annotations

from dataclasses import dataclass

from align.lazy import np, pd

GRID = ["gridX", "gridY", "gridZ"]
CONFIG = ["blockX", "blockY", "blockZ", "registersPerThread", "staticSharedMemory", "dynamicSharedMemory"]


def kernels(side) -> "pd.DataFrame":
    """The side's kept GPU work: phase, family, full name, duration, forward, start, and each
    kernel's launch (grid, block, registers, shared memory; NaN for memcpy/memset)."""
    items = side.kept_items()
    if items.empty:
        return pd.DataFrame(columns=["phase", "family", "name", "duration", "forward", "start", "kind"] + GRID + CONFIG)
    out = pd.DataFrame({"phase": items["phase"].astype(str).to_numpy(), "family": items["family"].astype(str).to_numpy(),
                        "name": pd.Categorical(side.view.demangled(items)), "duration": items["duration"].to_numpy(),
                        "forward": items["forward"].to_numpy(), "start": items["start"].to_numpy(),
                        "kind": items["kind"].to_numpy()}, index=items.index)
    # a mock compared with each rank of an E2E run holds each kernel once per rank: read each once
    det = side.view.launch_details(items[~items.index.duplicated()])
    if not len(det):
        return out.assign(**{c: np.nan for c in GRID + CONFIG})
    det = det.reindex(out.index)
    det.index = out.index
    return pd.concat([out, det], axis=1)


@dataclass
class Evidence:
    """A comparison as the diagnosis reads it."""

    cmp: object
    mock: "pd.DataFrame"
    e2e: "pd.DataFrame"
    families: "pd.DataFrame"  # the family table without TOTAL rows, with ``gap`` = |mock_ns - e2e_ns|
    totals: "pd.DataFrame"    # TOTAL rows by phase

    @property
    def phases(self) -> list[str]:
        return list(self.totals.index)

    def gap(self, claimed: set[tuple[str, str]]) -> float:
        """The share of all families' latency gaps that ``claimed`` (phase, family) pairs make up."""
        total = float(self.families["gap"].sum())
        if not total or not claimed:
            return 0.0
        key = list(zip(self.families["phase"], self.families["family"]))
        hit = [k in claimed for k in key]
        return float(self.families.loc[hit, "gap"].sum() / total)


def read(cmp) -> Evidence:
    t = cmp.table
    fam = t[t["family"] != "TOTAL"].copy()
    fam["gap"] = (fam["mock_ns"] - fam["e2e_ns"]).abs()
    return Evidence(cmp=cmp, mock=kernels(cmp.mock), e2e=kernels(cmp.e2e), families=fam,
                    totals=t[t["family"] == "TOTAL"].set_index("phase"))
