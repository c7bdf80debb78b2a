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
    allowed: dict[str, dict] = field(default_factory=dict)  # field -> {min, max, divides, why} (collect.toml)


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


RULE_KEYS = ("min", "max", "divides", "why")


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
                allowed = {f: dict(rule) for f, rule in p.get("allowed", {}).items()}
                for f, rule in allowed.items():
                    unknown = set(rule) - set(RULE_KEYS)
                    if f not in p["fields"] or unknown:
                        raise AlignError(f"collect.toml [ops.{name}.{phase}.allowed] {f}: not a field, or unknown "
                                         f"key(s) {', '.join(sorted(unknown))}", f"rules: {', '.join(RULE_KEYS)}")
                spec.phases[phase] = PhaseSpec(op=name, phase=phase, op_name=p["op_name"], perf_file=p["perf_file"],
                                               fields=list(p["fields"]), values={f: list(p[f]) for f in p["fields"]},
                                               max_tokens=p.get("max_tokens"), allowed=allowed)
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
    # each value once: a value named twice would time (and write) its cases twice
    values = {f: list(dict.fromkeys((subset or {}).get(f, spec.values[f]))) for f in spec.fields}
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
            rule = op.phases[p].allowed.get(f) if p in op.phases else None
            bad = [v for v in (subset or {}).get(f, []) if rule and not _allowed(v, rule)]
            if bad:  # a number off the grid is a new point, but only one the op can take
                raise AlignError(f"{arg('subset', f'{f}={bad[0]}')}: {op.name} {p} takes {_rule_text(f, rule)}",
                                 f"the grid's {f} values: {', '.join(map(str, grid_values))}")
    for p in phases:
        if p in op.phases and subset:
            _check_cap(op.name, op.phases[p], subset)


def _allowed(value: Any, rule: dict) -> bool:
    """Whether ``value`` keeps a rule of ``[ops.<op>.<phase>.allowed]``."""
    if not isinstance(value, int):
        return False
    n = rule.get("divides")
    return (rule.get("min", 1 if n else value) <= value <= rule.get("max", value)
            and (not n or (value >= 1 and n % value == 0)))


def _rule_text(name: str, rule: dict) -> str:
    """The values a rule allows, in words: "integer tp values dividing 8 (1, 2, 4, 8; num_heads = 8 / tp)"."""
    lo, hi, n = rule.get("min"), rule.get("max"), rule.get("divides")
    parts, notes = [], [rule["why"]] if rule.get("why") else []
    if n:
        parts.append(f"dividing {n}")
        notes.insert(0, ", ".join(str(d) for d in range(1, n + 1) if n % d == 0))
    if lo is not None and hi is not None:
        parts.append(f"from {lo} to {hi}")
    elif lo is not None:
        parts.append(f"of {lo} or more")
    elif hi is not None:
        parts.append(f"of {hi} or less")
    return f"integer {name} values {' and '.join(parts)}" + (f" ({'; '.join(notes)})" if notes else "")


def _check_cap(op: str, spec: PhaseSpec, subset: dict) -> None:
    """A ``--cases`` restriction whose every case is over the phase's ``max_tokens`` would collect
    nothing, which is never what was asked."""
    if grid(spec, subset=subset)[0] or not spec.max_tokens:
        return
    values = {f: subset.get(f, spec.values[f]) for f in spec.fields}
    combos = [dict(zip(spec.fields, c)) for c in itertools.product(*(values[f] for f in spec.fields))]
    size = next((f for f in ("seq", "tokens", "kv_len") if f in spec.fields), "tokens")
    asked = " ".join(f"{f}={','.join(map(str, subset[f]))}" for f in spec.fields if f in subset)
    raise AlignError(f"{arg('subset', asked)} leaves {op} {spec.phase} no case: all {len(combos)} case(s) are over "
                     f"its cap of {spec.max_tokens} tokens (batch x {size}; the smallest asks "
                     f"{min(_tokens(spec, c) for c in combos)})",
                     f"choose smaller values, or raise max_tokens of [ops.{op}.{spec.phase}] in "
                     "align/data/collect.toml")


def parse_subset(items: list[str]) -> dict[str, list[Any]]:
    """``["seq=1024,4096", "tp=8", "distribution=balanced"]`` -> {"seq": [1024, 4096], "tp": [8],
    "distribution": ["balanced"]}: integers where they parse, names otherwise. A field given twice
    adds its values (``tp=1``, ``tp=8``: both); a value named twice is refused (its rows would be
    written twice, or the user meant another value)."""
    out: dict[str, list[Any]] = {}
    for item in items:
        if "=" not in item:
            raise AlignError(f"bad {arg('subset')} item {item!r}", "write FIELD=V1,V2 (e.g. tp=1,8)")
        k, v = item.split("=", 1)
        values = [x.strip() for x in v.split(",") if x.strip()]
        if not values:
            raise AlignError(f"bad {arg('subset')} item {item!r}: no values", "write FIELD=V1,V2 (e.g. tp=1,8)")
        key = k.strip()
        merged = out.setdefault(key, [])
        for x in (int(x) if x.lstrip("-").isdigit() else x for x in values):
            if x in merged:
                raise AlignError(f"{arg('subset')} names {key}={x} more than once",
                                 "name each value once (a field given twice adds its values: tp=1 and tp=8 ask "
                                 "for both)")
            merged.append(x)
    return out
