"""Request lengths (and arrival times) shaped as public serving workloads: ShareGPT, LongBench v2,
RULER and BurstGPT, from their published statistics (align/data/workloads.toml cites each number).
No data set is read: a seeded generator draws lengths from the published distributions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from align import datafiles

DATASETS = ("sharegpt", "longbench_v2", "ruler", "burstgpt")


@dataclass
class Drawn:
    kind: str
    prompt: int
    output: int
    gap_s: float | None  # time since the previous request's arrival (None: an offline evaluation)


def stats(name: str) -> dict:
    data = datafiles.builtin("workloads")
    if name not in data:
        raise ValueError(f"unknown dataset {name!r}: use {', '.join(DATASETS)} (or mixed)")
    return data[name]


def _from_percentiles(rng: np.random.Generator, percentiles: list[float], values: list[float]) -> int:
    """Inverse CDF through the published percentiles (linear between them)."""
    return int(round(np.interp(rng.uniform(0, 100), percentiles, values)))


def draw(name: str, rng: np.random.Generator, rate: float = 1.0) -> Drawn:
    """One request of data set ``name``; ``rate``: mean requests per second of its arrival process."""
    s = stats(name)
    if name == "sharegpt":
        while True:  # vLLM's filter: resample what it would drop
            prompt = _from_percentiles(rng, s["percentiles"], s["prompt"])
            output = _from_percentiles(rng, s["percentiles"], s["output"])
            if prompt + output <= s["max_total"]:
                return Drawn("sharegpt", prompt, output, float(rng.exponential(1.0 / rate)))
    if name == "longbench_v2":
        edges, counts = s["word_bins"], np.asarray(s["bin_counts"], float)
        b = int(rng.choice(len(counts), p=counts / counts.sum()))
        words = np.exp(rng.uniform(np.log(edges[b]), np.log(edges[b + 1])))  # uniform within a doubling bin
        prompt = min(int(words * s["tokens_per_word"]), s["max_input_tokens"])
        return Drawn("longbench_v2", prompt, int(s["output"]), None)
    if name == "ruler":
        length = int(rng.choice(s["lengths"]))
        output = int(rng.choice(s["task_outputs"]))
        return Drawn("ruler", length - output, output, None)
    if name == "burstgpt":
        request = int(rng.zipf(s["zipf_a"]))
        while request > s["max_tokens"]:  # a truncated Zipf: what the demo cuts is drawn again
            request = int(rng.zipf(s["zipf_a"]))
        mean = s["response_base"] + s["response_per_request_token"] * request
        response = int(np.clip(round(rng.lognormal(np.log(mean), s["response_sigma"])), 1, s["max_tokens"]))
        shape = s["gamma_shape"]
        return Drawn("burstgpt", max(request, 1), response, float(rng.gamma(shape, 1.0 / (rate * shape))))
    raise ValueError(f"unknown dataset {name!r}: use {', '.join(DATASETS)} (or mixed)")
