"""The notebooks run top to bottom (their code cells, in order, in the notebooks folder)."""

from __future__ import annotations

import json
import os

import pytest

from .conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, monkeypatch):
    monkeypatch.chdir(path.parent)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    cells = json.loads(path.read_text())["cells"]
    namespace: dict = {}
    for cell in cells:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), f"{path.name}", "exec"), namespace)
    if path.name == "01_kernels.ipynb":
        assert namespace["replayed"].shape[0] > 0  # the CUDA-graph part found replayed kernels
    if path.name == "02_ops.ipynb":  # per forward, the E2E attention launches what the mock launches
        side = namespace["side"]
        assert (side["count_per_forward"] == side["count_per_forward_mock"]).all()
    if path.name == "03_topk.ipynb":  # transformers' trace: sparse past top-k, blocks and overlap plotted
        assert len(namespace["sparse"]) > 100 and (namespace["sparse"]["share"] < 1).all()
        assert len(namespace["overlap"]) == len(namespace["requests"])
