"""aiconfigurator's collector contract (seed 001) for align's collectable ops.

``collect.py`` imports a module by path and, per op and phase, calls ``get_<phase>_<op>_test_cases()``
for positional cases and ``run_<op>(*case, device)`` for each in one worker process per GPU, the perf
file named inside the case. Here a case is ``[*grid args in the order of collect.toml's fields, phase,
perf_filename]``. :func:`run_case` is the one path that builds, times and appends a row: ``align
collect``'s workers call it, and so does the module ``align collect --export-module`` writes
(:func:`export_module`), so both produce the same rows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from align.collect import writers
from align.collect.benchmark import Result, benchmark
from align.collect.cases import OpSpec, grid, op_spec
from align.errors import AlignError


def spec_for(op: str, framework: str | None = None) -> OpSpec:
    return op_spec(op).for_framework(framework)


def phase_cases(op: str, phase: str, framework: str | None = None, perf_filename: str | None = None) -> list[list]:
    """The phase's grid as collect.py wants it: positional lists, perf file last (the seed's caps
    applied; cases a GPU cannot hold are found when they run and fail like any other)."""
    spec = spec_for(op, framework)
    if phase not in spec.phases:
        raise AlignError(f"op {op} has no {phase} phase", f"phases: {', '.join(spec.phases)}")
    ps = spec.phases[phase]
    return [[*c.args, phase, perf_filename or ps.perf_file] for c in grid(ps)[0]]


def split_case(spec: OpSpec, case: tuple) -> tuple[str, tuple, str, str | None]:
    """(phase, grid args, perf file, device) of ``[*args, phase, perf_filename]``; a device passed
    positionally after them (collect.py 0.7 calls ``func(*task, device)``) is taken too."""
    items = list(case)
    device = None
    phases = set(spec.phases)
    if len(items) >= 3 and items[-3] in phases:  # [..., phase, perf_filename, device]
        device = items.pop()
    if len(items) < 2 or items[-2] not in phases:
        raise AlignError(f"{case!r} is not a case of {spec.name}",
                         f"a case is [*args, phase, perf_filename] with phase one of {', '.join(spec.phases)}")
    perf, phase = items.pop(), items.pop()
    want = len(spec.phases[phase].fields)
    if len(items) != want:
        raise AlignError(f"{case!r}: {spec.name} {phase} takes {want} arguments ({', '.join(spec.phases[phase].fields)})",
                         "pass the cases get_<phase>_<op>_test_cases() returns")
    return phase, tuple(items), str(perf), device


def measure_case(spec: OpSpec, module, phase: str, args: tuple, *, device: str, dtype, gpu: str,
                 warmups: int, runs: int, use_graph: bool, measure_power: bool, version: str
                 ) -> tuple[Result, tuple[dict, dict, tuple[float, float] | None]]:
    """Build the op for one case and time it: the timing, and the row's parts for
    :func:`align.collect.writers.append_row` (aiconfigurator's row: framework, version, device,
    op_name, kernel_source, the builder's describe() fields, latency in ms, power and its limit when
    measured)."""
    call = module.build(phase, *args, device=device, dtype=dtype)
    res = benchmark(call, device=device, warmups=warmups, runs=runs, use_graph=use_graph,
                    min_duration_s=1.0 if measure_power else 0.0)
    items = dict(module.describe(phase, *args))
    items["latency"] = res.latency
    base = {"framework": framework_label(spec, module), "version": version, "device": gpu,
            "op_name": spec.phases[phase].op_name, "kernel_source": spec.kernel_source}
    power = (res.power, res.power_limit) if measure_power and res.power is not None else None
    return res, (base, items, power)


def run_case(spec: OpSpec, module, phase: str, args: tuple, path: Path, *, device: str, dtype, gpu: str,
             warmups: int, runs: int, use_graph: bool, measure_power: bool, version: str,
             before_write: Callable[[], None] | None = None,
             record: Callable[[Result], None] | None = None) -> Result:
    """:func:`measure_case`, then append its row to ``path``; ``record(result)`` is called just
    before the row is written (align collect's case log: a row always has its record)."""
    res, row = measure_case(spec, module, phase, args, device=device, dtype=dtype, gpu=gpu, warmups=warmups,
                            runs=runs, use_graph=use_graph, measure_power=measure_power, version=version)
    if before_write is not None:
        before_write()
    if record is not None:
        record(res)
    try:
        writers.append_row(path, *row)
    except OSError as exc:
        raise RowNotWritten(f"cannot write {path}: {exc.strerror or exc}") from exc
    return res


class RowNotWritten(Exception):
    """The perf file, not the case, failed: a collector stops (and resumes) rather than record the case."""


def framework_label(spec: OpSpec, module) -> str:
    """What the rows and collection_meta.yaml name as timed: the builder's own label (a framework
    and its version) where it has one, else the op's ``framework`` from collect.toml."""
    label = getattr(module, "framework_label", None)
    return label() if label is not None else spec.framework


def use_device(device: str, dtype_name: str):
    """(torch dtype, GPU name) for a worker on ``device``, made the current CUDA device; (None, 'cpu')
    without torch."""
    try:
        import torch
    except ImportError:
        return None, "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            from align.errors import AlignError

            raise AlignError(f"{device} asked for, but this machine has no CUDA device (torch.cuda.is_available() "
                             "is False)", "run it on a GPU machine, or on the CPU: device='cpu' (without a device, "
                             "a machine without CUDA runs the case on its CPU)")
        torch.cuda.set_device(torch.device(device))
        return getattr(torch, dtype_name), torch.cuda.get_device_name(torch.device(device))
    return getattr(torch, dtype_name), "cpu"


def _default_device() -> str:
    """cuda:0 where CUDA is, else the CPU: as align collect picks its workers."""
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda:0" if torch.cuda.is_available() else "cpu"


def run(op: str, case, device: str | None = None, framework: str | None = None) -> dict:
    """``run_<op>(*case, device=...)`` of an exported module: one case, its row appended to the case's
    perf file (relative to the working folder, as collect.py expects). Timing as align collect's
    defaults; ``COLLECTOR_MEASURE_POWER=1`` (collect.py --measure_power) samples power,
    ``ALIGN_COLLECT_RUNS``/``ALIGN_COLLECT_WARMUPS``/``ALIGN_COLLECT_EAGER=1`` change the rest."""
    from align.collect.runner import Settings

    spec = spec_for(op, framework)
    phase, args, perf, positional_device = split_case(spec, tuple(case))
    device = device or positional_device or _default_device()
    s = Settings()
    env = os.environ
    dtype, gpu = use_device(device, s.dtype)
    res = run_case(spec, spec.module(), phase, args, Path(perf), device=device, dtype=dtype, gpu=gpu,
                   warmups=int(env.get("ALIGN_COLLECT_WARMUPS", s.warmups)), runs=int(env.get("ALIGN_COLLECT_RUNS", s.runs)),
                   use_graph=env.get("ALIGN_COLLECT_EAGER") != "1",
                   measure_power=env.get("COLLECTOR_MEASURE_POWER", "").lower() in ("1", "true"),
                   version=env.get("ALIGN_COLLECT_VERSION", s.version))
    return res.to_dict()


TEMPLATE = '''"""aiconfigurator collector module for {what}, written by `align collect --export-module` ({version}).

Drop it into aiconfigurator's collector/<backend>/ and register it in collect.py's `collections`
(below); align and its mock layers must be importable there (pip install align[mock]). The cases and
the row written for each come from align's collect.toml and align.collect.contract.run_case, the
same code `align collect --op {op}` runs. A case is [*args, phase, perf_filename], the args
{fields_doc}; the device comes as collect.py passes it (a keyword, or positionally after the case).

Register:
{registration}
"""

from align.collect import contract

OP = {op!r}
FRAMEWORK = {framework!r}

{getters}

def run_{op}(*case, device=None):
    """One case: build the op, time it, append its row to the case's perf file (cuda:0 by default)."""
    return contract.run(OP, case, device=device, framework=FRAMEWORK)
'''


def registration(op: str, phases: list[str], spec: OpSpec, backend: str) -> str:
    """The dicts to add to collect.py's ``collections`` list, one per phase."""
    lines = []
    for phase in phases:
        lines.append(f'    {{"name": "{backend}", "type": "{spec.phases[phase].op_name}", '
                     f'"module": "collector.{backend}.collect_{op}", '
                     f'"get_func": "get_{phase}_{op}_test_cases", "run_func": "run_{op}"}},')
    return "\n".join(lines)


def export_module(op: str, folder: Path, framework: str | None = None, backend: str = "trtllm") -> tuple[Path, str]:
    """Write ``collect_<op>.py`` into ``folder``; returns its path and the registration snippet."""
    import align
    from align.files import write_text

    spec = spec_for(op, framework)
    phases = list(spec.phases)
    getters = "\n".join(
        f"def get_{phase}_{op}_test_cases():\n"
        f"    \"\"\"[{', '.join(spec.phases[phase].fields)}, {phase!r}, {spec.phases[phase].perf_file!r}] per case.\"\"\"\n"
        f"    return contract.phase_cases(OP, {phase!r}, framework=FRAMEWORK)\n\n"
        for phase in phases)
    snippet = registration(op, phases, spec, backend)
    fields = "; ".join(f"{p}: {', '.join(spec.phases[p].fields)}" for p in phases)
    text = TEMPLATE.format(what=f"{op} ({spec.implementation})", version=f"align {align.__version__}", op=op,
                           framework=framework if framework not in (None, "align") else None,
                           fields_doc=fields, registration=snippet, getters=getters.rstrip() + "\n")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"collect_{op}.py"
    write_text(path, text, "the collector module")
    return path, snippet
