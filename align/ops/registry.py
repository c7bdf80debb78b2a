"""The op registry: which NVTX ranges and kernel names make up an operator, and kernel families.

Data lives in ``align/data/ops.toml``; a user file of the same shape (``--ops-file``,
``$ALIGN_OPS_FILE`` or ``align-ops.toml`` in the working folder) replaces ops of the same name,
adds new ones (tried first), and puts its family rules before the built-in ones.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache

from align import datafiles
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

    def __post_init__(self) -> None:
        self._range_re = alternation(self.nvtx, f"op {self.name} nvtx")
        self._scope_re = alternation(self.scope, f"op {self.name} scope")
        self._kernel_re = alternation([p for ps in self.kernels.values() for p in ps], f"op {self.name} kernels")

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

    def __post_init__(self) -> None:
        self._re = _compile(self.match, "family rule")


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
        self.compiled_re = alternation(self.compiled, "[compiled] kernels")
        self._phase_re = {k: _compile(v, f"phase {k}") for k, v in self.phases.items()}
        self._steps = [rx for rx in (_compile(v, f"iteration {k}") for k, v in self.iterations.items())
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
        return _first_rule(self.families, kernel_name) or function_name(kernel_name)

    def _family_uncached(self, kernel_name: str) -> str:
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


def _strings(value, what: str, where: str) -> list[str]:
    """A list of strings, or a clear error: a bare string would be split into characters."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AlignError(f"{what} in {where} must be a list of strings, not {value!r:.60}",
                         "write it as ['regex', ...]")
    return value


def _ops(data: dict, where: str) -> list[OpSpec]:
    entries = data.get("ops", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise AlignError(f"[[ops]] in {where} must be an array of tables", "write each op as an [[ops]] table")
    out = []
    for entry in entries:
        name = entry.get("name")
        if not valid_op_name(name):
            raise AlignError(f"an [[ops]] entry in {where} has no usable name ({name!r})",
                             "name = \"...\": letters, digits, '_', '.', '-' (it names files, e.g. verdict records)")
        kernels = entry.get("kernels", {})
        if not isinstance(kernels, dict):
            raise AlignError(f"op {name} in {where}: kernels must be a table of pattern lists",
                             "write [ops.kernels] family = ['regex', ...]")
        if not isinstance(entry.get("description", ""), str) or not isinstance(entry.get("shared", False), bool):
            raise AlignError(f"op {name} in {where}: description must be a string and shared true or false",
                             "fix the ops file")
        out.append(OpSpec(name=name, description=entry.get("description", ""),
                          nvtx=list(_strings(entry.get("nvtx", []), f"op {name}: nvtx", where)),
                          kernels={k: list(_strings(v, f"op {name}: kernels.{k}", where)) for k, v in kernels.items()},
                          shared=entry.get("shared", False),
                          scope=list(_strings(entry.get("scope", []), f"op {name}: scope", where))))
    return out


def _rules(data: dict, key: str, where: str) -> list[FamilyRule]:
    rules = data.get(key, [])
    ok = isinstance(rules, list) and all(isinstance(r, dict) and set(r) == {"match", "family"}
                                         and all(isinstance(v, str) for v in r.values()) for r in rules)
    if not ok:
        raise AlignError(f"[[{key}]] in {where} must be tables of match = 'regex', family = 'name'",
                         f"see align/data/ops.toml's [[{key}]]")
    return [FamilyRule(**r) for r in rules]


def _table(data: dict, key: str, where: str) -> dict[str, str]:
    table = data.get(key, {})
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise AlignError(f"[{key}] in {where} must map names to regex strings", f"see align/data/ops.toml's [{key}]")
    return dict(table)


def load_registry(user_file: str | os.PathLike | None = None) -> Registry:
    """Built-in registry, overridden by ``user_file`` (or ``$ALIGN_OPS_FILE``, or ./align-ops.toml;
    align.datafiles): a user op replaces the built-in one of its name, new ops come first, user
    rules go in front of the built-in ones, tables merge key by key."""
    base = datafiles.builtin("ops")
    ops = _ops(base, "the built-in registry")
    families = _rules(base, "families", "the built-in registry")
    variants = _rules(base, "variants", "the built-in registry")
    phases = _table(base, "phases", "the built-in registry")
    iterations = _table(base, "iterations", "the built-in registry")
    sources = ["built-in"]
    path = datafiles.user_file("ops", user_file, "ALIGN_OPS_FILE")
    if path is not None:
        if not path.exists():
            raise AlignError(f"ops file {path} not found", f"pass an existing TOML file as {arg('ops_file')}")
        user = datafiles.read_user(path, "ops file", "check the TOML syntax")
        user_ops = _ops(user, str(path))
        replaced = {o.name for o in user_ops}
        new = [o for o in user_ops if o.name not in {b.name for b in ops}]
        ops = new + [next((u for u in user_ops if u.name == o.name), o) if o.name in replaced else o for o in ops]
        families = _rules(user, "families", str(path)) + families
        variants = _rules(user, "variants", str(path)) + variants
        phases.update(_table(user, "phases", str(path)))
        iterations.update(_table(user, "iterations", str(path)))
        sources.append(str(path))
    compiled = list(_strings(base.get("compiled", {}).get("kernels", []), "[compiled] kernels", "the built-in registry"))
    if path is not None:
        compiled = list(_strings(user.get("compiled", {}).get("kernels", []), "[compiled] kernels", str(path))) + compiled
    return Registry(ops=ops, families=families, phases=phases, iterations=iterations, sources=sources,
                    variants=variants, compiled=compiled)
