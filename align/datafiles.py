"""The data files users extend: the op registry (ops), verdict thresholds (verdict), collection grids
(collect) and server presets (serve). One reader and one override rule for all of them.

The rule: the built-in ``align/data/<name>.toml`` first; then one user file, the first of the file
passed (``--ops-file``, ``--config``), the file an environment variable names where there is one
(``$ALIGN_OPS_FILE``), and ``./align-<name>.toml`` in the working folder. A user file extends the
built-in one and wins where both define something; how each kind merges (ops by name, rules in
front, tables key by key) is said where it is loaded.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

from align import regexes
from align.errors import AlignError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


def builtin(name: str) -> dict:
    """The built-in ``align/data/<name>.toml``."""
    return tomllib.loads(resources.files("align").joinpath(f"data/{name}.toml").read_text())


def local_name(name: str) -> str:
    """The user file looked for in the working folder: ``align-<name>.toml``."""
    return f"align-{name}.toml"


def user_file(name: str, given: str | os.PathLike | None = None, env: str | None = None) -> Path | None:
    """The user file of kind ``name`` by the rule above, or None."""
    chosen = given or (os.environ.get(env) if env else None)
    if chosen:
        return Path(chosen)
    local = Path(local_name(name))
    return local if local.exists() else None


def read_user(path: str | os.PathLike, what: str, hint: str, schema: "Table | None" = None) -> dict:
    """A user's TOML file; unreadable, not UTF-8 or not TOML, it is one line naming it (TOML errors
    say the line); with ``schema``, checked against it (:func:`validate`)."""
    try:
        text = Path(path).read_text()
        data = tomllib.loads(text)
    except (OSError, ValueError) as exc:  # ValueError: TOML syntax, or not UTF-8
        where = f" (the file ends at line {len(text.splitlines())})" if "end of document" in str(exc) else ""
        raise AlignError(f"cannot read {what} {path}: {exc}{where}", hint) from None
    if schema is not None:
        validate(data, schema, f"{what} {path}")
    return data


# ---- schemas: the keys and values each kind of file may hold ----------------------------------------
# One validator for every user file: a schema says which keys a table knows and what each value must
# be, so a misspelt key, a value of the wrong type or out of range, or a regex that would hang is one
# line naming the file and the key before anything runs.


@dataclass(frozen=True)
class Num:
    """A finite number (``integer``: a whole one) in [low, high]; ``low_open``: low itself is out."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    integer: bool = False

    def span(self) -> str:
        parts = [f"{'>' if self.low_open else '>='} {self.low:g}"] if self.low is not None else []
        parts += [f"<= {self.high:g}"] if self.high is not None else []
        return " and ".join(parts) or "any finite number"


@dataclass(frozen=True)
class Str:
    """A string; ``choices``: one of them; ``valid``/``expect``: a test it must pass and what it says."""

    choices: tuple[str, ...] = ()
    valid: Callable[[str], bool] | None = None
    expect: str = ""


@dataclass(frozen=True)
class Bool:
    pass


@dataclass(frozen=True)
class Regex:
    """A regex string (``single``: or a list of them, when ``many``); compiled with ``flags``."""

    flags: int = 0
    many: bool = False
    single: bool = False


@dataclass(frozen=True)
class Table:
    """A table of known ``keys`` (``required`` among them); ``other``: the value of any other key (a
    table keyed by names: ops, families); ``check(table, where)``: a rule between its values."""

    keys: dict = field(default_factory=dict)
    required: tuple[str, ...] = ()
    other: object = None
    check: Callable[[dict, str], None] | None = None


@dataclass(frozen=True)
class Tables:
    """An array of tables; ``label``/``name_key``: each named ``label 'NAME'`` by its key, which must
    pass ``valid`` and occur once in the file."""

    table: Table
    label: str = ""
    name_key: str = ""
    valid: Callable[[object], bool] | None = None
    expect: str = ""


@dataclass(frozen=True)
class Where:
    """Where a value sits, worded as TOML: ``[verdict] names_share``, ``op 'x' kernels.pytorch``."""

    tables: tuple[str, ...] = ()
    label: str = ""
    keys: tuple[str, ...] = ()

    def key(self, k: str) -> "Where":
        return Where(self.tables, self.label, self.keys + (k,))

    def table(self, k: str) -> "Where":
        return self.key(k) if self.label or self.keys else Where(self.tables + (k,))

    def entry(self, k: str, label: str) -> "Where":
        return Where(label=label or f"[[{'.'.join(self.tables + self.keys + (k,))}]]")

    def __str__(self) -> str:
        head = self.label or (f"[{'.'.join(self.tables)}]" if self.tables else "")
        return " ".join(p for p in (head, ".".join(self.keys)) if p)


def _kind(value) -> str:
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return "array of tables"
    return "key"


def _shown(k: str, value) -> str:
    kind = _kind(value)
    return f"[{k}]" if kind == "table" else f"[[{k}]]" if kind == "array of tables" else repr(k)


def _unknown(k: str, value, spec: Table, at: Where, where: str) -> AlignError:
    """An unknown key, with the known key it is closest to, or the table it belongs in."""
    known = list(spec.keys)
    close = difflib.get_close_matches(k, known, n=1, cutoff=0.6)
    homes = [t for t, s in spec.keys.items() if isinstance(s, Table) and k in s.keys]
    tip = f" (did you mean {close[0]!r}?)" if close else f" (it belongs in [{homes[0]}])" if homes else ""
    place = f"in {at} of {where}" if str(at) else f"in {where}"
    return AlignError(f"unknown {_kind(value)} {_shown(k, value)} {place}{tip}",
                      f"known keys: {', '.join(known) or 'none'}")


def validate(data: dict, spec: Table, where: str) -> None:
    """``data`` (a file read as TOML) against ``spec``; ``where`` names the file. The first problem
    is one :class:`AlignError` line naming the key; nothing is returned or changed."""
    if not data:
        raise AlignError(f"{where} is empty: it sets nothing", f"known keys: {', '.join(spec.keys)}")
    _table(data, spec, Where(), where)


def _table(data, spec: Table, at: Where, where: str) -> None:
    if not isinstance(data, dict):
        raise AlignError(f"{at} = {data!r:.60} in {where} is not a table", "write it as a [table] of keys")
    for k, v in data.items():  # a misspelt key first: it explains a required one missing
        if k not in spec.keys and spec.other is None:
            raise _unknown(k, v, spec, at, where)
    for k in spec.required:
        if k not in data:
            raise AlignError(f"{at or 'the file'} in {where} lacks {k}", f"keys there: {', '.join(spec.keys)}")
    for k, v in data.items():
        _value(v, spec.keys.get(k, spec.other), at, k, where)
    if spec.check is not None:
        spec.check(data, f"{at} of {where}" if str(at) else where)


def _value(v, spec, at: Where, k: str, where: str) -> None:
    here = at.key(k)
    if isinstance(spec, Table):
        _table(v, spec, at.table(k), where)
    elif isinstance(spec, Tables):
        _tables(v, spec, at, k, where)
    elif isinstance(spec, Num):
        _number(v, spec, here, where)
    elif isinstance(spec, Bool):
        if not isinstance(v, bool):
            raise AlignError(f"{here} = {v!r:.60} in {where} is not true or false", f"write {k} = true or {k} = false")
    elif isinstance(spec, Str):
        if not isinstance(v, str):
            raise AlignError(f"{here} = {v!r:.60} in {where} is not a string", "write it in quotes")
        if spec.choices and v not in spec.choices:
            raise AlignError(f"{here} = {v!r} in {where} is not one of {', '.join(spec.choices)}",
                             f"e.g. {k} = {spec.choices[0]!r}")
        if spec.valid is not None and not spec.valid(v):
            raise AlignError(f"{here} = {v!r:.60} in {where} is not {spec.expect}", "fix the value")
    elif isinstance(spec, Regex):
        patterns = [v] if isinstance(v, str) and (spec.single or not spec.many) else v
        if spec.many and (not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns)):
            raise AlignError(f"{here} = {v!r:.60} in {where} is not a list of strings", "write it as ['regex', ...]")
        for p in patterns if spec.many else [v]:
            regexes.compile_checked(p, str(here), where, spec.flags)


def _tables(v, spec: Tables, at: Where, k: str, where: str) -> None:
    if not isinstance(v, list) or not all(isinstance(e, dict) for e in v):
        raise AlignError(f"[[{k}]] in {where} is not an array of tables", f"write each entry as a [[{k}]] table")
    seen = set()
    for e in v:
        label = ""
        if spec.name_key:
            name = e.get(spec.name_key)
            if spec.valid is not None and not spec.valid(name):
                raise AlignError(f"an [[{k}]] entry in {where} has no usable {spec.name_key} ({name!r:.60})",
                                 f'{spec.name_key} = "...": {spec.expect}')
            if name in seen:
                raise AlignError(f"{spec.label or k} {name!r} is defined twice in {where}",
                                 f"give each [[{k}]] entry its own {spec.name_key}, or drop one")
            seen.add(name)
            label = f"{spec.label or k} {name!r}"
        _table(e, spec.table, at.entry(k, label), where)


def _number(v, spec: Num, at: Where, where: str) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (spec.integer and not isinstance(v, int)):
        whole = " whole" if spec.integer else ""
        raise AlignError(f"{at} = {v!r:.60} in {where} is not a{whole} number", f"write a plain{whole} number")
    if v != v or v in (float("inf"), float("-inf")):
        # nan compares false with every bound and inf passes every ratio: either would turn a check off
        raise AlignError(f"{at} = {v!r} in {where} is not a finite number",
                         "write a finite number (a check is turned off only where its key says so, e.g. graph = false)")
    low_out = spec.low is not None and (v <= spec.low if spec.low_open else v < spec.low)
    if low_out or (spec.high is not None and v > spec.high):
        raise AlignError(f"{at} = {v!r} in {where} is out of range", f"use a value {spec.span()}")
