"""Known differences: a family accepted with a reason leaves the checks, is listed with its reason in
every output and the store's record, and never hides a difference nobody accepted (real H100 pairs
with planted faults)."""

from __future__ import annotations

import json
from html import escape

from align.compare.verdict import verdict

from .conftest import ROOT, run_align

EX = ROOT / "profiles" / "examples"
E2E = EX / "llama_e2e"
GELU = "elementwise_kernel:GeluCUDAKernelImpl"
WHY = "GELU on the mock's inputs: input preparation inside its range"


def failed(v) -> set[str]:
    return set(v.checks.loc[~v.checks["passed"], "name"])


def test_an_accepted_extra_kernel_passes_and_is_listed_with_its_reason():
    before = verdict(EX / "attn_mock_extra", E2E, op="attention", record_in_store=False)
    assert failed(before) == {"counts", "extra"}
    v = verdict(EX / "attn_mock_extra", E2E, op="attention", record_in_store=False, accept={GELU: WHY})
    assert v.passed and failed(v) == set()
    rows = v.to_dict()["accepted"]
    assert {(r["phase"], r["family"], r["reason"], r["found"]) for r in rows} == {
        ("context", GELU, WHY, True), ("generation", GELU, WHY, True)}
    assert all(r["difference"] == "extra (mock 1 / E2E 0 per forward)" for r in rows)
    assert "**Accepted differences**" in v.to_markdown() and WHY in v.to_markdown()


def test_accepting_one_difference_never_hides_another():
    base = verdict(EX / "attn_mock_missing", E2E, op="attention", record_in_store=False)
    assert "missing" in failed(base)
    v = verdict(EX / "attn_mock_missing", E2E, op="attention", record_in_store=False,
                accept={"elementwise_kernel:neg_kernel_cuda": "rotary done elsewhere"})
    assert "missing" in failed(v)
    why = v.checks.set_index("name").loc["missing", "reason"]
    assert "CatArrayBatchedCopy" in why and "neg_kernel_cuda" not in why


def test_an_entry_that_matches_nothing_is_said_and_changes_nothing():
    v = verdict(EX / "attn_mock_extra", E2E, op="attention", record_in_store=False, accept={"no_such_family": "x"})
    assert failed(v) == {"counts", "extra"}
    assert v.to_dict()["accepted"] == [{"phase": None, "family": "no_such_family",
                                        "difference": "not found in this comparison", "reason": "x", "found": False}]


def test_config_file_cli_json_report_and_store_record(tmp_path):
    cfg = tmp_path / "v.toml"
    cfg.write_text(f'[accept]\n"generation:{GELU}" = "{WHY}"\n')
    args = ["verdict", "--op", "attention", "--mock", str(EX / "attn_mock_extra"), "--e2e", str(E2E),
            "--store", str(tmp_path / "s"), "--config", str(cfg), "-f", "json"]
    r = run_align(*args)
    out = json.loads(r.stdout)
    assert r.returncode == 1  # only generation is accepted: context still has the extra kernel
    assert [(a["phase"], a["reason"]) for a in out["accepted"]] == [("generation", WHY)]
    assert any("context:" + GELU in k for c in out["checks"] for k in c["kernels"])
    r = run_align(*args[:-4], "--accept", GELU, "--reason", WHY, "-f", "json")
    assert r.returncode == 0, r.stderr
    records = [json.loads(p.read_text()) for p in (tmp_path / "s" / "verdicts" / "attention").glob("*.json")]
    passed = [r for r in records if r.get("passed")]
    assert len(passed) == 1 and {a["reason"] for a in passed[0]["accepted"]} == {WHY}
    html = tmp_path / "r.html"
    r = run_align("report", str(EX / "attn_mock_extra"), str(E2E), "--op", "attention", "-o", str(html),
                  "--accept", GELU, "--reason", WHY)
    page = html.read_text()
    assert r.returncode == 0 and "Accepted differences" in page and escape(WHY) in page


def test_bad_accepts_are_one_line_errors(tmp_path):
    cfg = tmp_path / "v.toml"
    cfg.write_text('[accept]\n"x" = ""\n')
    base = ["verdict", "--op", "attention", "--mock", str(EX / "attn_mock_extra"), "--e2e", str(E2E),
            "--store", str(tmp_path / "s")]
    for extra, says in ((["--config", str(cfg)], "has no reason"), (["--accept", GELU], "--accept needs --reason"),
                        (["--reason", "why"], "--reason explains --accept")):
        r = run_align(*base, *extra)
        assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, r.stderr
