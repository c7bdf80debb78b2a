"""The op registry: which NVTX ranges and kernel names make up an operator, and kernel families.

Data lives in ``align/data/ops.toml``; a user file of the same shape (``--ops-file``,
``$ALIGN_OPS_FILE`` or ``align-ops.toml`` in the working folder) replaces ops of the same name,
adds new ones (tried first), and puts its family rules before the built-in ones.
"""

from __future__ import annotations

import os
import re
import string
from dataclasses import dataclass, field
from functools import lru_cache

from align import datafiles, regexes
from align.datafiles import Bool, Regex, Str, Table, Tables
from align.errors import AlignError, arg

# names are matched on their first MAX_NAME characters: real demangled names stay far below it, and a
# pathological one (megabytes) must not make a search pattern backtrack for minutes
MAX_NAME = 2048


@dataclass
class OpSpec:
    name: str
    description: str = ""
    nvtx: list[str] = field(default_factory=list)
    kernels: dict[str, list[str]] = field(default_factory=dict)
    shared: bool = False
    # module ranges that hold the whole op where its own range sits inside one (DSA's indexer in
    # self_attn): such a range around one of the op's ranges is the op's range
    scope: list[str] = field(default_factory=list)
    source: str = "the built-in registry"

    def __post_init__(self) -> None:
        self._range_re = _guarded(alternation(self.nvtx, f"op {self.name} nvtx"), f"op {self.name} nvtx", self.source)
        self._scope_re = _guarded(alternation(self.scope, f"op {self.name} scope"), f"op {self.name} scope", self.source)
        kernels = alternation([p for ps in self.kernels.values() for p in ps], f"op {self.name} kernels")
        self._kernel_re = _guarded(kernels, f"op {self.name} kernels", self.source)

    def matches_range(self, text: str) -> bool:
        return bool(self._range_re and self._range_re.search(text))

    def matches_scope(self, text: str) -> bool:
        return bool(self._scope_re and self._scope_re.search(text))

    def matches_kernel(self, name: str) -> bool:
        return bool(self._kernel_re and self._kernel_re.search(name))


@dataclass
class FamilyRule:
    match: str
    family: str
    source: str = "the built-in registry"

    def __post_init__(self) -> None:
        self._re = _guarded(_compile(self.match, "family rule"), f"the rule of family {self.family!r}", self.source)


@dataclass
class Registry:
    ops: list[OpSpec]
    families: list[FamilyRule]
    phases: dict[str, str]
    iterations: dict[str, str]
    sources: list[str]
    variants: list[FamilyRule] = field(default_factory=list)
    # kernel names a compiler generated (ops.toml [compiled]): a side whose op runs them is compiled
    compiled: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.compiled_re = _guarded(alternation(self.compiled, "[compiled] kernels"), "[compiled] kernels")
        self._phase_re = {k: _guarded(_compile(v, f"phase {k}"), f"[phases] {k}") for k, v in self.phases.items()}
        self._steps = [_guarded(rx, f"[iterations] {k}") for k, rx in
                       ((k, _compile(v, f"iteration {k}")) for k, v in self.iterations.items())
                       if {"ctx", "gen"} <= set(rx.groupindex)]
        self._variant = lru_cache(maxsize=None)(self._variant_uncached)
        self._family = lru_cache(maxsize=None)(self._family_uncached)
        self._kernel_op = lru_cache(maxsize=None)(self._kernel_op_uncached)

    def names(self) -> list[str]:
        return [o.name for o in self.ops]

    def op(self, name: str) -> OpSpec:
        for o in self.ops:
            if o.name == name:
                return o
        raise AlignError(f"unknown op {name!r}", f"known ops: {', '.join(self.names())} (or add it with {arg('ops_file', 'FILE')})")

    def kernel_op(self, kernel_name: str) -> str | None:
        """The first op (registry order) whose kernel patterns match the name."""
        return self._kernel_op(kernel_name[:MAX_NAME])

    def _kernel_op_uncached(self, kernel_name: str) -> str | None:
        with regexes.budget(f"matching {kernel_name[:60]!r} to an op"):
            for o in self.ops:
                if o.matches_kernel(kernel_name):
                    return o.name
        return None

    def range_ops(self, text: str) -> list[str]:
        return [o.name for o in self.ops if o.matches_range(text)]

    def family(self, kernel_name: str) -> str:
        """A key shared by the same kernel with other template arguments, tiles or knobs, and with
        the other launch variants PyTorch picks from the data ([[variants]]): what the checks compare."""
        return self._family(kernel_name[:MAX_NAME])

    def variant(self, kernel_name: str) -> str:
        """The family before launch variants are folded (``vectorized_elementwise_kernel:MulFunctor``)."""
        return self._variant(kernel_name[:MAX_NAME])

    def _variant_uncached(self, kernel_name: str) -> str:
        with regexes.budget(f"the family of {kernel_name[:60]!r}"):
            return _first_rule(self.families, kernel_name) or function_name(kernel_name)

    def _family_uncached(self, kernel_name: str) -> str:
        with regexes.budget(f"the family of {kernel_name[:60]!r}"):
            variant = self._variant(kernel_name)
            return _first_rule(self.variants, variant) or variant

    def step_phase(self, text: str) -> str | None:
        """The phase of an engine step range that counts its requests (``[Executor] _forward_step 3:
        2 ctx reqs, 0 gen reqs``): context or generation when only one kind runs, mixed when both,
        None when ``text`` is no such range or the step runs nothing."""
        counts = self.step_requests(text)
        if counts is None:
            return None
        ctx, gen = counts
        return "mixed" if ctx and gen else "context" if ctx else "generation" if gen else None

    def step_requests(self, text: str) -> tuple[int, int] | None:
        """(context requests, generation requests) an engine step range counts, or None."""
        for rx in self._steps:
            m = rx.search(text)
            if m:
                return int(m.group("ctx") or 0), int(m.group("gen") or 0)
        return None

    @property
    def phase_patterns(self) -> dict:
        """Phase name -> compiled regex of the phase words (``[phases]`` of the ops file)."""
        return dict(self._phase_re)

    def is_step(self, text: str) -> bool:
        return any(rx.search(text) for rx in self._steps)

    def phase(self, texts: list[str]) -> str | None:
        """'context' or 'generation' from the names of the enclosing ranges; None if neither or both."""
        found = {p for p, rx in self._phase_re.items() for t in texts if rx.search(t)}
        return found.pop() if len(found) == 1 else None

    def iteration_pattern(self, spec: str) -> str:
        """A preset name from [iterations] or a regex given as is."""
        return self.iterations.get(spec, spec)


def _first_rule(rules: list[FamilyRule], text: str) -> str | None:
    """The family of the first rule matching ``text``, its named groups filled in."""
    for rule in rules:
        m = rule._re.search(text)
        if m:
            groups = {k: v for k, v in m.groupdict().items() if v is not None}
            try:
                return rule.family.format(**groups)
            except (KeyError, IndexError):
                return rule.family
    return None


def function_name(kernel_name: str) -> str:
    """``void ns::kern<int, (int)4>(T1 *, int)`` -> ``ns::kern``: template arguments and parameters removed."""
    s = kernel_name.strip()
    if s.startswith("void "):
        s = s[5:]
    s = s.replace("<unnamed>", "{anonymous}")
    prev = None
    while prev != s:
        prev = s
        s = re.sub(r"<[^<>]*>", "", s)
    cut = s.find("(")
    if cut > 0:
        s = s[:cut]
    return s.strip().replace("{anonymous}", "<unnamed>") or kernel_name


def _compile(pattern: str, what: str, fix: str = "fix the ops file") -> re.Pattern:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise AlignError(f"bad regex in {what}: {pattern!r} ({exc})", fix) from None


def _guarded(rx: re.Pattern | None, what: str, source: str = "the op registry") -> regexes.Guarded | None:
    """The registry's regexes search under a time budget (align.regexes): a user's file was checked
    for backtracking shapes on load, and this stops the ones no shape test sees."""
    return None if rx is None else regexes.Guarded(rx, what, source)


def alternation(patterns: list[str], what: str, fix: str = "fix the ops file") -> re.Pattern | None:
    """One case-insensitive regex matching any of ``patterns`` (None for none); a bad one is named."""
    if not patterns:
        return None
    for p in patterns:
        _compile(p, what, fix)
    return _compile("|".join(f"(?:{p})" for p in patterns), what, fix)


OP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def valid_op_name(name: object) -> bool:
    """An op name also names files (verdict records): letters, digits, '_', '.', '-', never '..'."""
    return isinstance(name, str) and bool(OP_NAME.match(name)) and ".." not in name


def _placeholders(rule: dict, where: str) -> None:
    """A family names only groups its match captures: ``{kind}`` of no group would name every kernel
    the rule matches by the same literal text."""
    groups = set(re.compile(rule["match"]).groupindex)
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(rule["family"]) if f is not None]
    except ValueError as exc:
        raise AlignError(f"family {rule['family']!r} in {where} is not a format ({exc})",
                         "write {group} for a named group of match, {{ and }} for a brace") from None
    for f in fields:
        if f not in groups:
            raise AlignError(f"family {rule['family']!r} in {where} names {{{f}}}, which match {rule['match']!r} "
                             "does not capture", f"named groups there: {', '.join(sorted(groups)) or 'none'} "
                             f"(capture it with (?P<{f or 'name'}>...) in match)")


_PATTERN = Regex(flags=re.IGNORECASE)
_PATTERNS = Regex(flags=re.IGNORECASE, many=True)
_RULES = Tables(Table({"match": _PATTERN, "family": Str()}, required=("match", "family"), check=_placeholders))
# what a user's ops file may hold ([markers] is read from the built-in file only)
SCHEMA = Table({
    "ops": Tables(Table({"name": Str(), "description": Str(), "nvtx": _PATTERNS, "kernels": Table(other=_PATTERNS),
                         "shared": Bool(), "scope": _PATTERNS}, required=("name",)),
                  label="op", name_key="name", valid=valid_op_name,
                  expect="letters, digits, '_', '.', '-' (it names files, e.g. verdict records)"),
    "families": _RULES,
    "variants": _RULES,
    "compiled": Table({"kernels": _PATTERNS}),
    "phases": Table({"context": _PATTERN, "generation": _PATTERN}),
    "iterations": Table(other=_PATTERN),
})


def _ops(data: dict, source: str) -> list[OpSpec]:
    return [OpSpec(name=e["name"], description=e.get("description", ""), nvtx=list(e.get("nvtx", [])),
                   kernels={k: list(v) for k, v in e.get("kernels", {}).items()}, shared=e.get("shared", False),
                   scope=list(e.get("scope", [])), source=source) for e in data.get("ops", [])]


def _rules(data: dict, key: str, source: str) -> list[FamilyRule]:
    return [FamilyRule(**r, source=source) for r in data.get(key, [])]


def load_registry(user_file: str | os.PathLike | None = None) -> Registry:
    """Built-in registry, overridden by ``user_file`` (or ``$ALIGN_OPS_FILE``, or ./align-ops.toml;
    align.datafiles): a user op replaces the built-in one of its name, new ops come first, user
    rules go in front of the built-in ones, tables merge key by key."""
    base = datafiles.builtin("ops")
    ops = _ops(base, "the built-in registry")
    families = _rules(base, "families", "the built-in registry")
    variants = _rules(base, "variants", "the built-in registry")
    phases = dict(base.get("phases", {}))
    iterations = dict(base.get("iterations", {}))
    sources = ["built-in"]
    compiled = list(base.get("compiled", {}).get("kernels", []))
    path = datafiles.user_file("ops", user_file, "ALIGN_OPS_FILE")
    if path is not None:
        if not path.exists():
            raise AlignError(f"ops file {path} not found", f"pass an existing TOML file as {arg('ops_file')}")
        user = datafiles.read_user(path, "ops file", "check the TOML syntax", SCHEMA)
        user_ops = _ops(user, f"ops file {path}")
        replaced = {o.name for o in user_ops}
        new = [o for o in user_ops if o.name not in {b.name for b in ops}]
        ops = new + [next((u for u in user_ops if u.name == o.name), o) if o.name in replaced else o for o in ops]
        families = _rules(user, "families", f"ops file {path}") + families
        variants = _rules(user, "variants", f"ops file {path}") + variants
        phases.update(user.get("phases", {}))
        iterations.update(user.get("iterations", {}))
        sources.append(str(path))
        compiled = list(user.get("compiled", {}).get("kernels", [])) + compiled
    return Registry(ops=ops, families=families, phases=phases, iterations=iterations, sources=sources,
                    variants=variants, compiled=compiled)
