"""Every rank of a multi-process E2E run (hf_dsa_e2e_ranks: one process per H200, captured on the
two-GPU machine kind) against the mock, per rank and summarised; and the report's per-forward kernel
timeline, where the mock's and the E2E run's sequences diverge."""

from __future__ import annotations

import json
import re

from align.compare.diff import compare

from .conftest import ROOT, run_align

EX = ROOT / "profiles" / "examples"


def test_every_rank_is_compared_and_summarised(tmp_path):
    c = compare(EX / "hf_dsa_mock", EX / "hf_dsa_e2e_ranks", op="dsa", e2e_select={"rank": "all"})
    r = c.ranks
    assert sorted(zip(r["phase"], r["rank"])) == [("context", "rank 0"), ("context", "rank 1"),
                                                  ("generation", "rank 0"), ("generation", "rank 1")]
    for ph, g in r.groupby("phase"):
        e2e = g["e2e_ns"].to_numpy()
        assert abs(g["spread_pct"].iloc[0] - (e2e.max() - e2e.min()) / (sum(e2e) / 2) * 100) < 1e-9
        assert g["outlier"].iloc[0] in set(g["rank"])
        # each rank's own TOTAL row of the family table
        for row in g.to_dict(orient="records"):
            tot = c.table[(c.table["phase"] == f"{ph} ({row['rank']})") & (c.table["family"] == "TOTAL")].iloc[0]
            assert tot["e2e_ns"] == row["e2e_ns"] and tot["latency_ratio"] == row["ratio"]
    out = run_align("verdict", "--op", "dsa", "--mock", str(EX / "hf_dsa_mock"), "--e2e", str(EX / "hf_dsa_e2e_ranks"),
                    "--rank", "all", "--store", str(tmp_path), "-f", "json")
    assert out.returncode == 0, out.stderr
    v = json.loads(out.stdout)
    assert len(v["ranks"]["per_rank"]) == 4 and len(v["ranks"]["summary"]) == 2
    assert re.match(r"generation: 2 ranks, E2E [\d,.]+-[\d,.]+ us per forward \(spread [\d.]+ %\)", v["ranks"]["summary"][1])
    assert any(line.startswith("ranks: context: 2 ranks") for line in out.stderr.splitlines())
    html = tmp_path / "r.html"
    rep = run_align("report", str(EX / "hf_dsa_mock"), str(EX / "hf_dsa_e2e_ranks"), "--op", "dsa", "--rank", "all",
                    "-o", str(html))
    assert rep.returncode == 0 and "<h2>Ranks</h2>" in html.read_text()


def test_one_rank_and_bad_ranks(tmp_path):
    base = ["verdict", "--op", "dsa", "--mock", str(EX / "hf_dsa_mock"), "--store", str(tmp_path)]
    one = run_align(*base, "--e2e", str(EX / "hf_dsa_e2e_ranks"), "--rank", "1", "-f", "json")
    assert one.returncode == 0 and "ranks" not in json.loads(one.stdout)
    for e2e, rank, says in (("hf_dsa_e2e", "all", "has one process with the op's forwards"),
                            ("hf_dsa_e2e_ranks", "x", "--rank 'x' is neither a rank number nor all")):
        r = run_align(*base, "--e2e", str(EX / e2e), "--rank", rank)
        assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_the_report_draws_one_forward_of_each_side_where_they_diverge(tmp_path):
    """attn_mock_missing lacks the rotary kernels: in the kernel timeline, the E2E-only kernels (blue)
    are exactly the kernels per forward the mock does not launch."""
    html = tmp_path / "r.html"
    r = run_align("report", str(EX / "attn_mock_missing"), str(EX / "llama_e2e"), "--op", "attention", "-o", str(html))
    assert r.returncode == 0, r.stderr
    svgs = re.findall(r'<svg class="kernels".*?</svg>', html.read_text(), re.S)
    assert len(svgs) == 2  # context and generation
    c = compare(EX / "attn_mock_missing", EX / "llama_e2e", op="attention")
    for svg, ph in zip(svgs, ("context", "generation")):
        tot = c.table[(c.table["phase"] == ph) & (c.table["family"] == "TOTAL")].iloc[0]
        mock = svg.count('class="kernel mock"')
        e2e = svg.count('class="kernel e2e"')
        assert (mock, e2e) == (tot["mock_count"], tot["e2e_count"])
        only_e2e = len(re.findall(r'class="kernel e2e"[^>]*fill="#1565c0"', svg))
        assert only_e2e >= tot["e2e_count"] - tot["mock_count"] > 0
        assert 'class="tick"' in svg


def test_tensor_parallel_ranks_in_a_nccl_group(tmp_path):
    """hf_dsa_e2e_tp (two-GPU machine kind): two processes, one per H200, in a torch.distributed NCCL
    group all-reducing each layer's attention output. Each rank is found from its GPU; the NCCL
    kernels are the comm op's, outside the DSA op's forwards; the mock passes against every rank."""
    from align.attribute.ops import OpView
    from align.loader import load
    from align.profile.processes import process_table

    with load(EX / "hf_dsa_e2e_tp") as p:
        procs = process_table(p)
        ranked = procs[procs["kernels"] > 0].sort_values("rank")
        assert ranked["rank"].tolist() == [0, 1] and ranked["devices"].astype(str).tolist() == ["0", "1"]
        view = OpView(p)
        comm = view.op_items("comm")
        dsa = compare(EX / "hf_dsa_mock", EX / "hf_dsa_e2e_tp", op="dsa").e2e.items
    kernels = comm[comm["kind"] == 0]  # NCCL's own NVTX ranges hold its memsets too
    assert len(kernels) and kernels["name"].astype(str).str.contains("ncclDevKernel_AllReduce").all()
    assert set(kernels["pid"]) == set(ranked["pid"])
    assert not dsa["name"].astype(str).str.contains("nccl", case=False).any()
    r = run_align("verdict", "--op", "dsa", "--mock", str(EX / "hf_dsa_mock"), "--e2e", str(EX / "hf_dsa_e2e_tp"),
                  "--rank", "all", "--store", str(tmp_path), "-f", "json")
    assert r.returncode == 0, r.stderr
    v = json.loads(r.stdout)
    assert {x["rank"] for x in v["ranks"]["per_rank"]} == {"rank 0", "rank 1"}
