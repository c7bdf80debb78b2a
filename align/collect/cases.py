"""Test-case grids: positional argument lists in the order of the op's run function (seed 001),
with the caps that keep a grid sane and memory estimates that skip cases the GPU cannot hold.
Skipped cases are reported with their reason, never dropped silently.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from align import datafiles
from align.errors import AlignError, arg



@dataclass
class PhaseSpec:
    op: str
    phase: str
    op_name: str
    perf_file: str
    fields: list[str]
    values: dict[str, list]
    max_tokens: int | None


@dataclass
class OpSpec:
    name: str
    builder: str
    family: str
    framework: str
    kernel_source: str
    implementation: str = ""
    gated: bool = True
    frameworks: dict[str, str] = field(default_factory=dict)
    phases: dict[str, PhaseSpec] = field(default_factory=dict)
    token_kernels: list[str] = field(default_factory=list)   # [from_e2e]: kernels whose grid x is the query tokens
    mocks: dict[str, list[str]] = field(default_factory=dict)  # framework -> regexes of the mock commands it times

    @property
    def mock_patterns(self) -> list[str]:
        """Regexes of the commands of the mock profiles this builder times (``[ops.<op>.mocks]``)."""
        return self.mocks.get(self.framework if self.framework in self.mocks else "align", [])

    def for_framework(self, name: str | None) -> "OpSpec":
        """This op timed in framework ``name``'s own module (its builder from ``[ops.<op>.frameworks]``),
        or as it is (``None``/``align``)."""
        if name in (None, "align"):
            return self
        if name not in self.frameworks:
            raise AlignError(f"op {self.name} has no collector for framework {name!r}",
                             f"frameworks of {self.name}: align{''.join(', ' + f for f in self.frameworks)}")
        return dataclasses.replace(self, builder=self.frameworks[name], framework=name, kernel_source=name,
                                   implementation=name, frameworks={},
                                   mocks={name: self.mocks.get(name, [])})

    def module(self):
        try:
            return importlib.import_module(self.builder)
        except ImportError as exc:
            raise AlignError(f"cannot import {self.builder} for op {self.name} ({exc})",
                             "install align with its mock layers and torch: pip install -e '.[mock]'") from None


@dataclass(frozen=True)
class Case:
    op: str
    phase: str
    args: tuple

    @property
    def id(self) -> str:
        return f"{self.op}:{self.phase}:{json.dumps(list(self.args))}"


def load_ops() -> dict[str, OpSpec]:
    data = datafiles.builtin("collect")
    ops = {}
    for name, entry in data["ops"].items():
        spec = OpSpec(name=name, builder=entry["builder"], family=entry["family"], framework=entry["framework"],
                      kernel_source=entry["kernel_source"], implementation=entry.get("implementation", name),
                      gated=bool(entry.get("gated", True)), frameworks=dict(entry.get("frameworks", {})),
                      token_kernels=list(entry.get("from_e2e", {}).get("token_kernels", [])),
                      mocks={k: list(v) for k, v in entry.get("mocks", {}).items()})
        for phase, p in entry.items():  # every other sub-table is a phase (context, generation; moe: all)
            if isinstance(p, dict) and phase not in ("frameworks", "from_e2e", "mocks"):
                spec.phases[phase] = PhaseSpec(op=name, phase=phase, op_name=p["op_name"], perf_file=p["perf_file"],
                                               fields=list(p["fields"]), values={f: list(p[f]) for f in p["fields"]},
                                               max_tokens=p.get("max_tokens"))
        ops[name] = spec
    return ops


def op_spec(name: str) -> OpSpec:
    ops = load_ops()
    if name not in ops:
        raise AlignError(f"no collector for op {name!r}", f"collectable ops: {', '.join(ops)}")
    return ops[name]


def _tokens(spec: PhaseSpec, args: dict) -> int:
    per_request = args.get("seq", args.get("tokens", args.get("kv_len", 1)))
    return int(args.get("batch", 1)) * int(per_request)


def grid(spec: PhaseSpec, memory_bytes: int | None = None, estimate=None, subset: dict | None = None
         ) -> tuple[list[Case], list[tuple[Case, str]]]:
    """(cases to run, [(case, why skipped)]) for one phase. ``subset`` restricts a field to some
    values (``--cases seq=1024,4096 tp=8``); ``estimate(phase, *args)`` gives bytes a case needs."""
    values = {f: (subset or {}).get(f, spec.values[f]) for f in spec.fields}
    run, skipped = [], []
    for combo in itertools.product(*(values[f] for f in spec.fields)):
        args = dict(zip(spec.fields, combo))
        case = Case(spec.op, spec.phase, tuple(combo))
        if spec.max_tokens and _tokens(spec, args) > spec.max_tokens:
            continue  # outside the op's grid by definition (the seed's b*s caps), not a skip
        if memory_bytes is not None and estimate is not None:
            need = estimate(spec.phase, *combo)
            if need > memory_bytes:
                skipped.append((case, f"needs about {need / 2**30:.1f} GiB, {memory_bytes / 2**30:.1f} GiB free"))
                continue
        run.append(case)
    return run, skipped


def check_subset(op: OpSpec, phases: list[str], subset: dict | None) -> None:
    """Every --cases field must belong to one of the phases collected (each phase uses its own)."""
    known = {f for p in phases if p in op.phases for f in op.phases[p].fields}
    unknown = set(subset or {}) - known
    if unknown:
        raise AlignError(f"{arg('subset')} names unknown field(s) {', '.join(sorted(unknown))}",
                         f"fields of {op.name} {'/'.join(phases)}: {', '.join(sorted(known))}")
    for p in phases:
        for f, grid_values in (op.phases[p].values.items() if p in op.phases else ()):
            names = [v for v in grid_values if isinstance(v, str)]
            wrong = [v for v in (subset or {}).get(f, []) if names and v not in names]
            if wrong:  # a named value (a distribution) off the grid is a typo, not a new point
                raise AlignError(f"{arg('subset', f + '=' + ','.join(map(str, wrong)))}: not a value of {op.name}'s grid",
                                 f"choose from {', '.join(names)}")


def parse_subset(items: list[str]) -> dict[str, list[Any]]:
    """``["seq=1024,4096", "tp=8", "distribution=balanced"]`` -> {"seq": [1024, 4096], "tp": [8],
    "distribution": ["balanced"]}: integers where they parse, names otherwise."""
    out: dict[str, list[Any]] = {}
    for item in items:
        if "=" not in item:
            raise AlignError(f"bad {arg('subset')} item {item!r}", "write FIELD=V1,V2 (e.g. tp=1,8)")
        k, v = item.split("=", 1)
        values = [x.strip() for x in v.split(",") if x.strip()]
        if not values:
            raise AlignError(f"bad {arg('subset')} item {item!r}: no values", "write FIELD=V1,V2 (e.g. tp=1,8)")
        out[k.strip()] = [int(x) if x.lstrip("-").isdigit() else x for x in values]
    return out
