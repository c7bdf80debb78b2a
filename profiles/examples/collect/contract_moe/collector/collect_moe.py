"""aiconfigurator collector module for moe (align_mock), written by `align collect --export-module` (align 0.1.0).

Drop it into aiconfigurator's collector/<backend>/ and register it in collect.py's `collections`
(below); align and its mock layers must be importable there (pip install align[mock]). The cases and
the row written for each come from align's collect.toml and align.collect.contract.run_case, the
same code `align collect --op moe` runs. A case is [*args, phase, perf_filename], the args
all: tokens, tp, ep, distribution; the device comes as collect.py passes it (a keyword, or positionally after the case).

Register:
    {"name": "trtllm", "type": "moe", "module": "collector.trtllm.collect_moe", "get_func": "get_all_moe_test_cases", "run_func": "run_moe"},
"""

from align.collect import contract

OP = 'moe'
FRAMEWORK = None

def get_all_moe_test_cases():
    """[tokens, tp, ep, distribution, 'all', 'moe_perf.txt'] per case."""
    return contract.phase_cases(OP, 'all', framework=FRAMEWORK)


def run_moe(*case, device=None):
    """One case: build the op, time it, append its row to the case's perf file (cuda:0 by default)."""
    return contract.run(OP, case, device=device, framework=FRAMEWORK)
