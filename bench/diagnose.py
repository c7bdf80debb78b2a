#!/usr/bin/env python3
"""What the diagnosis costs: the verdict of each shipped planted pair judged with and without it
(align.compare.verdict.judge(diagnosis=...)), on one comparison read once, best of --repeat, in the
same process; the figure is the ratio to the checklist alone, as Markdown.

    python bench/diagnose.py [--repeat 5] > bench/results/diagnose_cpu.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from align.compare.diff import compare
from align.compare.verdict import judge
from align.diagnose import load_rules

EX = Path(__file__).resolve().parents[1] / "profiles" / "examples"
PAIRS = [("hf_dsa_mock_fp32", "hf_dsa_e2e", "dsa"), ("hf_dsa_mock_batch", "hf_dsa_e2e", "dsa"),
         ("hf_dsa_mock_missing", "hf_dsa_e2e", "dsa"), ("hf_llama_mock_eager", "hf_llama_e2e", "attention"),
         ("attn_mock_slow", "llama_e2e", "attention"), ("attn_mock", "llama_e2e_eager", "attention")]


def best(fn, repeat: int) -> float:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return min(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    rules = load_rules()
    print("| mock | E2E | kernels (both sides) | checklist s | with diagnosis s | ratio | causes |\n|---|---|---|---|---|---|---|")
    for mock, e2e, op in PAIRS:
        cmp = compare(EX / mock, EX / e2e, op=op)
        n = len(cmp.mock.items) + len(cmp.e2e.items)
        judge(cmp, causes_rules=rules)  # warm: the shapes and launch tables are read once per comparison

        def plain():
            return judge(cmp, diagnosis=False)

        def full():
            return judge(cmp, causes_rules=rules)

        tp, tf = best(plain, a.repeat), best(full, a.repeat)
        kinds = ", ".join(c.label for c in full().causes)
        print(f"| {mock} | {e2e} | {n:,} | {tp:.3f} | {tf:.3f} | {tf / tp:.2f}x | {kinds} |")


if __name__ == "__main__":
    main()
