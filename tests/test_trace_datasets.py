"""Request lengths shaped as public workloads (align/trace/datasets.py): each generator reproduces
the published statistics it cites (align/data/workloads.toml), seeded; and the trace runner takes them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from align.trace.datasets import stats
from align.trace.workload import WorkloadSpec, make_requests

from .conftest import run_align

N = 4000


def lengths(dataset: str, **kw):
    reqs = make_requests(WorkloadSpec(requests=N, dataset=dataset, **kw), 1000, 10**7, 64)
    return (np.array([r.prompt_len for r in reqs]), np.array([r.output_len for r in reqs]),
            [r.arrival_s for r in reqs], reqs)


def test_sharegpt_follows_the_published_percentiles():
    s = stats("sharegpt")
    prompt, output, arrival, _ = lengths("sharegpt")
    for values, table in ((prompt, s["prompt"]), (output, s["output"])):
        for q in (50, 90):
            want = table[s["percentiles"].index(q)]
            assert abs(np.percentile(values, q) - want) <= 0.15 * want, (q, np.percentile(values, q), want)
    assert prompt.min() >= 4 and prompt.max() <= 1024 and (prompt + output).max() <= s["max_total"]
    gaps = np.diff(arrival)
    assert (gaps >= 0).all() and abs(gaps.mean() - 1.0) < 0.1  # Poisson at 1 request/s


def test_longbench_v2_contexts_follow_the_histogram_and_answers_are_short():
    s = stats("longbench_v2")
    prompt, output, arrival, _ = lengths("longbench_v2")
    assert (output == s["output"]).all() and prompt.max() <= s["max_input_tokens"] and arrival[0] is None
    words = prompt / s["tokens_per_word"]
    counts = np.asarray(s["bin_counts"], float)
    below_32k = (words < 32000).mean()
    assert abs(below_32k - counts[:2].sum() / counts.sum()) < 0.03  # 180 of 503 are short


def test_ruler_lengths_are_input_plus_output():
    s = stats("ruler")
    prompt, output, _, _ = lengths("ruler")
    assert set(prompt + output) <= set(s["lengths"]) and set(output) <= set(s["task_outputs"])


def test_burstgpt_arrivals_are_bursty_gamma_and_requests_zipf():
    s = stats("burstgpt")
    prompt, output, arrival, _ = lengths("burstgpt", rate=2.0)
    gaps = np.diff(arrival)
    assert abs(gaps.mean() - 0.5) < 0.05  # 2 requests/s
    assert abs(gaps.std() / gaps.mean() - 1 / np.sqrt(s["gamma_shape"])) < 0.15  # burstier than Poisson (CV 1)
    # Zipf: most requests are a token or two (the runner's prompts have 2 tokens at least)
    assert prompt.min() >= 2 and prompt.max() <= s["max_tokens"] and (prompt == 2).mean() > 0.2
    # responses grow with the request (README Fig. 4)
    assert np.median(output[prompt > 500]) > np.median(output[prompt < 10])


def test_the_runner_takes_a_dataset_and_bad_names_are_one_line(tmp_path):
    out = tmp_path / "t"
    r = run_align("trace", "topk", "run", "--out", str(out), "--requests", "4", "--dataset", "sharegpt",
                  "--length-scale", "0.1", "-f", "json")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in (out / "requests.jsonl").read_text().splitlines()]
    assert {x["kind"] for x in lines} == {"sharegpt"} and all("arrival_s" in x for x in lines)
    assert json.loads((out / "run_meta.json").read_text())["workload"]["dataset"] == "sharegpt"
    bad = run_align("trace", "topk", "run", "--out", str(tmp_path / "u"), "--dataset", "alpaca")
    assert bad.returncode == 2 and "unknown dataset 'alpaca'" in bad.stderr and "Traceback" not in bad.stderr
    with pytest.raises(ValueError, match="rate must be > 0"):
        WorkloadSpec(dataset="sharegpt", rate=0)
