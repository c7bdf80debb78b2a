"""aiconfigurator collector module for mla (align_mock), written by `align collect --export-module` (align 0.1.0).

Drop it into aiconfigurator's collector/<backend>/ and register it in collect.py's `collections`
(below); align and its mock layers must be importable there (pip install align[mock]). The cases and
the row written for each come from align's collect.toml and align.collect.contract.run_case, the
same code `align collect --op mla` runs. A case is [*args, phase, perf_filename], the args
context: seq, batch, tp; generation: kv_len, batch, tp; the device comes as collect.py passes it (a keyword, or positionally after the case).

Register:
    {"name": "trtllm", "type": "mla_context_module", "module": "collector.trtllm.collect_mla", "get_func": "get_context_mla_test_cases", "run_func": "run_mla"},
    {"name": "trtllm", "type": "mla_generation_module", "module": "collector.trtllm.collect_mla", "get_func": "get_generation_mla_test_cases", "run_func": "run_mla"},
"""

from align.collect import contract

OP = 'mla'
FRAMEWORK = None

def get_context_mla_test_cases():
    """[seq, batch, tp, 'context', 'mla_context_module_perf.txt'] per case."""
    return contract.phase_cases(OP, 'context', framework=FRAMEWORK)


def get_generation_mla_test_cases():
    """[kv_len, batch, tp, 'generation', 'mla_generation_module_perf.txt'] per case."""
    return contract.phase_cases(OP, 'generation', framework=FRAMEWORK)


def run_mla(*case, device=None):
    """One case: build the op, time it, append its row to the case's perf file (cuda:0 by default)."""
    return contract.run(OP, case, device=device, framework=FRAMEWORK)
