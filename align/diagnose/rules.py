"""The diagnosis rules of align/data/causes.toml, with a user's file in front (align.datafiles):
dtype tokens, attention implementations, sub-modules, input-preparation kernels and the wording."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from align import datafiles
from align.datafiles import Num, Regex, Str, Table, Tables
from align.errors import AlignError

LISTS = ("dtype.tokens", "implementations", "batch_grids", "subops", "prep")
WORDS = ("says", "fix", "source")


@dataclass
class DtypeToken:
    dtype: str
    width: int
    pattern: re.Pattern


@dataclass
class Implementation:
    of: str  # the part of the op it implements: attention, experts
    name: str
    api: str
    kernels: re.Pattern


@dataclass
class BatchGrid:
    kernels: re.Pattern
    dim: str  # gridX, gridY or gridZ


@dataclass
class SubOp:
    name: str
    modules: re.Pattern | None
    kernels: re.Pattern | None


@dataclass
class Rules:
    compute: re.Pattern
    min_share: float
    dtype_tokens: list[DtypeToken]
    torch: dict[str, str]
    implementations: list[Implementation]
    batch_grids: list[BatchGrid]
    subops: list[SubOp]
    prep: re.Pattern | None
    words: dict[str, dict[str, str]]
    tokens: dict[str, dict[str, str]] = field(default_factory=dict)
    source: str = "align/data/causes.toml"
    _dtype_cache: dict = field(default_factory=dict, repr=False)

    def dtype_of(self, name: str) -> DtypeToken | None:
        """The first dtype token a kernel name carries (None: it names none)."""
        if name not in self._dtype_cache:
            self._dtype_cache[name] = next((t for t in self.dtype_tokens if t.pattern.search(name)), None)
        return self._dtype_cache[name]

    def implementation(self, name: str) -> Implementation | None:
        return next((i for i in self.implementations if i.kernels.search(name)), None)

    def token_words(self, op: str | None) -> dict[str, str]:
        """What an op's token grids count, and the knobs that set them ([tokens.OP], else default)."""
        return self.tokens.get(op or "", self.tokens.get("default", {"what": "tokens per forward",
                                                                      "knobs": "batch and sequence"}))

    def say(self, kind: str, **fields) -> tuple[str, str, str]:
        """(says, fix, source) of a cause kind, its fields filled in."""
        w = self.words[kind]
        try:
            return tuple(w[k].format(**fields) for k in WORDS)
        except (KeyError, IndexError, ValueError) as exc:
            raise AlignError(f"[words.{kind}] of {self.source} names a field it is not given: {exc}",
                             f"use the fields of align/data/causes.toml's [words.{kind}]") from None


def _regex(patterns, where: str, source: str) -> re.Pattern | None:
    if isinstance(patterns, str):
        patterns = [patterns]
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise AlignError(f"{where} in {source} must be a list of regexes", "e.g. kernels = ['softmax_warp_forward']")
    if not patterns:
        return None
    try:
        return re.compile("|".join(f"(?:{p})" for p in patterns))
    except re.error as exc:
        raise AlignError(f"bad regex in {where} of {source}: {exc}", "fix the pattern") from None


def _get(d: dict, dotted: str) -> list:
    for k in dotted.split("."):
        d = d.get(k, {}) if isinstance(d, dict) else {}
    return d if isinstance(d, list) else []


def _some_match(subop: dict, where: str) -> None:
    if not subop.get("modules") and not subop.get("kernels"):
        raise AlignError(f"sub-module {subop['name']!r} in {where} names no modules and no kernels",
                         "give it modules = ['REGEX'] (its module range) or kernels = ['REGEX'], or both")


_RX = Regex(many=True, single=True)  # a regex, or a list of them


def schema() -> Table:
    """What a user's causes file may hold: the sections of align/data/causes.toml, and a [words.KIND]
    table for each kind of cause the built-in file words."""
    kinds = datafiles.builtin("causes")["words"]
    return Table({
        "dtype": Table({"compute": _RX, "min_share": Num(0, 1, low_open=True),
                        "tokens": Tables(Table({"dtype": Str(), "width": Num(1, integer=True), "pattern": _RX},
                                               required=("dtype", "width", "pattern"))),
                        "torch": Table(other=Str())}),
        "implementations": Tables(Table({"of": Str(), "name": Str(), "api": Str(), "kernels": _RX},
                                        required=("of", "name", "api", "kernels"))),
        "batch_grids": Tables(Table({"kernels": _RX, "dim": Str(choices=("x", "y", "z"))}, required=("kernels", "dim"))),
        "tokens": Table(other=Table({"what": Str(), "knobs": Str()}, required=("what", "knobs"))),
        "subops": Tables(Table({"name": Str(), "modules": _RX, "kernels": _RX}, required=("name",), check=_some_match)),
        "prep": Regex(many=True),
        "words": Table({kind: Table({w: Str() for w in WORDS}) for kind in kinds}),
    })


def _merge(base: dict, user: dict, source: str) -> dict:
    """A user's lists in front of the built-in ones; its tables key by key (``user`` is checked
    against :func:`schema`)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for dotted in LISTS:
        head, _, tail = dotted.partition(".")
        mine = _get(user, dotted)
        if not mine:
            continue
        if tail:
            out[head][tail] = mine + _get(base, dotted)
        else:
            out[head] = mine + _get(base, dotted)
    for key in ("compute", "min_share"):
        if key in user.get("dtype", {}):
            out["dtype"][key] = user["dtype"][key]
    out["dtype"]["torch"] = {**base["dtype"]["torch"], **user.get("dtype", {}).get("torch", {})}
    words = {k: dict(v) for k, v in base["words"].items()}
    for kind, table in user.get("words", {}).items():
        words[kind].update(table)
    out["words"] = words
    out["tokens"] = {**base.get("tokens", {}), **user.get("tokens", {})}
    return out


def load_rules(path: str | os.PathLike | None = None) -> Rules:
    """The built-in rules, extended by ``path``, $ALIGN_CAUSES_FILE or ./align-causes.toml."""
    data = datafiles.builtin("causes")
    chosen = datafiles.user_file("causes", path, "ALIGN_CAUSES_FILE")
    source = str(chosen) if chosen else "align/data/causes.toml"
    if chosen:
        data = _merge(data, datafiles.read_user(chosen, "causes file", "pass a TOML file shaped like "
                                                "align/data/causes.toml", schema()), source)
    try:
        dt = data["dtype"]
        tokens = [DtypeToken(str(t["dtype"]), int(t["width"]), _regex(t["pattern"], "[[dtype.tokens]] pattern", source))
                  for t in dt["tokens"]]
        impls = [Implementation(str(a["of"]), str(a["name"]), str(a["api"]),
                                _regex(a["kernels"], "[[implementations]] kernels", source))
                 for a in data["implementations"]]
        subops = [SubOp(str(s["name"]), _regex(s.get("modules", []), "[[subops]] modules", source),
                        _regex(s.get("kernels", []), "[[subops]] kernels", source)) for s in data["subops"]]
        share = float(dt["min_share"])
        grids = []
        for g in data.get("batch_grids", []):
            if g.get("dim") not in ("x", "y", "z"):
                raise AlignError(f"[[batch_grids]] dim = {g.get('dim')!r} in {source} is not x, y or z", 'e.g. dim = "z"')
            grids.append(BatchGrid(_regex(g["kernels"], "[[batch_grids]] kernels", source), "grid" + g["dim"].upper()))
    except (KeyError, TypeError, ValueError) as exc:
        raise AlignError(f"{source} lacks or mistypes {exc}", "shape it like align/data/causes.toml") from None
    if not 0 < share <= 1:
        raise AlignError(f"[dtype] min_share = {share} in {source} is not in (0, 1]", "e.g. min_share = 0.5")
    return Rules(compute=_regex(dt["compute"], "[dtype] compute", source), min_share=share, dtype_tokens=tokens,
                 torch={str(k): str(v) for k, v in dt["torch"].items()}, implementations=impls, batch_grids=grids,
                 subops=subops,
                 prep=_regex(data.get("prep", []), "prep", source), words=data["words"],
                 tokens={str(k): dict(v) for k, v in data.get("tokens", {}).items()}, source=source)
