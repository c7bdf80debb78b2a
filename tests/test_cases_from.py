"""align collect --cases-from: the points transformers' own generate() ran, read from its profile
alone, equal what the program says it ran (its JSON line in the capture's nsys.log)."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from align.collect.cases import op_spec
from align.collect.from_e2e import _walk, e2e_points, suggested_cases
from align.ops.registry import load_registry

from .conftest import ROOT, run_align

EX = ROOT / "profiles" / "examples"
E2E = ["hf_dsa_e2e", "hf_dsa_e2e_steps", "hf_dsa_e2e_procs", "hf_dsa_e2e_ranks"]


def program_said(example: str) -> list[dict]:
    """The run lines hf_generate.py printed (one per process): batch, prompt, new_tokens, engine steps."""
    lines = [x for x in (EX / example / "nsys.log").read_text().splitlines() if x.startswith('{"script"')]
    return [json.loads(x) for x in lines]


def expected_points(run: dict) -> set[tuple]:
    b, s, n = run["batch"], run["prompt"], run["new_tokens"]
    want = {("context", b, s, None)} | {("generation", b, None, s + k) for k in range(n - 1)}
    for step in run["engine_steps"] or []:
        ctx, gen = map(int, re.search(r"(\d+) ctx reqs, (\d+) gen reqs", step).groups())
        if ctx and gen:  # the mixed step: a new request's own prefill beside the batch's decode
            want.add(("context", ctx, s, None))
    return want


@pytest.mark.parametrize("example", E2E)
def test_points_are_what_the_program_ran(example):
    runs = program_said(example)
    pts = e2e_points(EX / example, op_spec("dsa"))
    t = pts.table
    assert t["pid"].nunique() == len(runs)
    for pid, per in t.groupby("pid"):
        got = {(r["phase"], r["batch"], None if pd.isna(r["seq"]) else int(r["seq"]),
                None if pd.isna(r["kv_len"]) else int(r["kv_len"])) for r in per.to_dict(orient="records")}
        assert got == expected_points(runs[0]), (pid, sorted(got, key=str))
        assert per["forwards"].sum() == runs[0]["new_tokens"] + (1 if runs[0]["engine_steps"] else 0)
    assert t["covered"].all() and not pts.notes
    if example.endswith("steps"):
        assert set(t["evidence"]) == {"engine steps"}


def test_a_grid_that_stops_short_is_reported_with_the_cases_to_add():
    pts = e2e_points(EX / "hf_dsa_e2e", op_spec("dsa"), subset={"kv_len": [2, 64, 256]})
    out = pts.uncovered
    assert set(out["phase"]) == {"generation"} and sorted(out["kv_len"]) == list(range(512, 527))
    assert suggested_cases(pts) == ["--phase generation --cases kv_len=" + ",".join(map(str, range(512, 527)))
                                    + " --cases batch=4"]


def test_cli_exit_codes_and_formats():
    ok = run_align("collect", "--op", "dsa", "--cases-from", str(EX / "hf_dsa_e2e_steps"))
    assert ok.returncode == 0 and "every point of the E2E run lies within dsa's grid" in ok.stdout
    short = run_align("collect", "--op", "dsa", "--cases-from", str(EX / "hf_dsa_e2e"), "--cases", "seq=64,256",
                      "-f", "json")
    assert short.returncode == 1
    rows = json.loads(short.stdout)
    ctx = [r for r in rows if r["phase"] == "context"]
    assert len(ctx) == 1 and not ctx[0]["covered"] and "seq 512 OUTSIDE 64..256" in ctx[0]["grid"]
    assert "align collect --op dsa --phase context --cases seq=512 --cases batch=4" in short.stderr


@pytest.mark.parametrize("args,says", [
    (["--op", "mla", "--cases-from", str(EX / "hf_dsa_e2e")], "names no kernel whose grid shows the query tokens"),
    (["--op", "dsa", "--cases-from", str(EX / "hf_llama_e2e")], "no step of"),
    (["--op", "dsa", "--cases-from", str(EX / "attn_mock")], "--e2e-range REGEX"),
    (["--op", "dsa", "--cases-from", str(EX / "hf_dsa_e2e"), "--cases", "bogus=1"], "unknown field"),
    (["--op", "dsa", "--e2e-range", "x"], "add --cases-from"),
    (["--op", "dsa", "--cases-from", str(EX / "nowhere")], "nowhere"),
])
def test_bad_input_is_one_line(args, says):
    r = run_align("collect", *args)
    assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, r.stderr


def _steps(tokens: list[int], phases: list[str] | None = None) -> pd.DataFrame:
    n = len(tokens)
    return pd.DataFrame({"tokens": tokens, "step": [""] * n, "phase": phases or ["all"] * n,
                         "evidence": ["none"] * n})


def test_a_profile_started_mid_run_leaves_cache_lengths_unknown():
    """Synthetic steps: decodes with no prefill before them (nsys --delay) get no cache length."""
    notes: list[str] = []
    out = _walk(_steps([8, 8, 8, 1024, 8, 8]), load_registry(None), notes, 1)
    assert [r["kv_len"] for r in out if r["phase"] == "generation"] == [None, None, None, 128, 129]
    assert [(r["batch"], r["seq"]) for r in out if r["phase"] == "context"] == [(8, 128)]
    assert len(notes) == 3 and all("unknown" in x for x in notes)


def test_a_prefill_that_does_not_divide_is_one_request():
    notes: list[str] = []
    out = _walk(_steps([1000, 3, 3]), load_registry(None), notes, 1)
    assert out[0]["batch"] == 1 and out[0]["seq"] == 1000 and "taken as one request" in notes[0]
    assert [r["kv_len"] for r in out[1:]] == [None, None]  # batch 3 never prefilled
