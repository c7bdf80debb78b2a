"""Attach a TopkTracer to an engine we did not write: forward hooks on its DSA indexer modules,
described as data (align/data/topk_hooks.toml), so another engine is one entry plus its tests.

The hook sees what the indexer returns (the top-k token indices) and its inputs; it hands decode
calls (query length 1) to the tracer with the module's layer index and the step's position. The
engine's code is untouched and never imported here: modules are matched by their class's module
path and name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from align import datafiles
from align.datafiles import Num, Str, Table, Tables
from align.errors import AlignError
from align.trace.topk.tracer import TopkTracer

FIELDS = ("name", "class", "output", "layer_attr", "query_arg", "position_arg", "indices_are", "source")


@dataclass(frozen=True)
class EngineHook:
    name: str
    cls: str
    output: str
    layer_attr: str
    query_arg: int
    position_arg: int
    indices_are: str
    source: str
    mask_arg: int | None = None

    def position(self, args: tuple, kwargs: dict) -> Any:
        """The step's positions [B]: the position argument, or where the engine passes None there, the
        last one its mask ``[B, S, T]`` can see (T - 1: a contiguous cache holding the step's key)."""
        positions = args[self.position_arg] if len(args) > self.position_arg else kwargs.get("position_ids")
        if positions is not None:
            return positions[:, -1]
        mask = args[self.mask_arg] if self.mask_arg is not None and len(args) > self.mask_arg else None
        if mask is None:
            raise AlignError(f"{self.name}: the indexer got no positions", "give its entry a mask_arg "
                             "(align/data/topk_hooks.toml)")
        return mask.shape[-1] - 1

    def matches(self, module: Any) -> bool:
        return _class_path(module) == self.cls


_ARG = Num(0, integer=True)  # a positional argument's index
# what a user's hooks file may hold ([[researched]] is read from the built-in file only)
SCHEMA = Table({"engines": Tables(
    Table({"name": Str(), "class": Str(), "output": Str(choices=("indices",)), "layer_attr": Str(), "query_arg": _ARG,
           "position_arg": _ARG, "mask_arg": _ARG, "indices_are": Str(choices=("positions",)), "source": Str()},
          required=FIELDS),
    label="engine", name_key="name", valid=lambda n: isinstance(n, str) and bool(n.strip()), expect="a non-empty string")})


def load_hooks(path: str | None = None) -> dict[str, EngineHook]:
    """Built-in entries, then a user file's (same shape) replacing or adding by name."""
    entries = list(datafiles.builtin("topk_hooks").get("engines", []))
    chosen = datafiles.user_file("topk_hooks", path)
    if chosen:
        entries += datafiles.read_user(chosen, "top-k hooks file", "write [[engines]] tables shaped like "
                                       "align/data/topk_hooks.toml", SCHEMA).get("engines", [])
    out = {}
    for e in entries:
        missing = [f for f in FIELDS if f not in e]
        if missing or e.get("output") != "indices" or e.get("indices_are") != "positions":
            raise AlignError(f"top-k hook entry {e.get('name', '?')!r} is incomplete or unsupported "
                             f"({', '.join(missing) or 'output must be indices, indices_are positions'})",
                             "see the fields documented in align/data/topk_hooks.toml")
        out[e["name"]] = EngineHook(name=e["name"], cls=e["class"], output=e["output"], layer_attr=e["layer_attr"],
                                    query_arg=int(e["query_arg"]), position_arg=int(e["position_arg"]),
                                    indices_are=e["indices_are"], source=e["source"],
                                    mask_arg=None if e.get("mask_arg") is None else int(e["mask_arg"]))
    return out


RESEARCHED_FIELDS = ("name", "engine", "hook_class", "topk_from", "indices_are", "decode", "request_ids", "blocks",
                     "eager", "source")


def researched() -> dict[str, dict[str, str]]:
    """Hook points of engines that cannot run here (vLLM, SGLang), researched but not attachable:
    ``[[researched]]`` of align/data/topk_hooks.toml, by class."""
    out = {}
    for e in datafiles.builtin("topk_hooks").get("researched", []):
        missing = [f for f in RESEARCHED_FIELDS if not e.get(f)]
        if missing:
            raise AlignError(f"researched hook entry {e.get('name', '?')!r} lacks {', '.join(missing)}",
                             "complete it in align/data/topk_hooks.toml")
        out[e["hook_class"]] = e
    return out


def _class_path(module: Any) -> str:
    return f"{type(module).__module__}.{type(module).__qualname__}"


def find_indexers(model: Any, hooks: dict[str, EngineHook]) -> tuple[EngineHook, list[Any]]:
    """The engine entry whose indexer class occurs in ``model``, and those modules in model order."""
    for hook in hooks.values():
        found = [m for m in model.modules() if hook.matches(m)]
        if found:
            return hook, found
    known = researched()
    for m in model.modules():
        entry = known.get(_class_path(m))
        if entry is not None:
            raise AlignError(f"{entry['engine']}'s indexer ({entry['name']}) is researched but not attachable yet: "
                             f"its top-k is {entry['indices_are'].split(';')[0]}",
                             "see its [[researched]] entry in align/data/topk_hooks.toml for where to hook")
    classes = ", ".join(h.cls.rsplit(".", 1)[-1] for h in hooks.values())
    raise AlignError(f"no DSA indexer module of a known engine in {type(model).__name__} (looked for {classes})",
                     "add an [[engines]] entry for its indexer class (align/data/topk_hooks.toml)")


@contextlib.contextmanager
def attach_engine(tracer: TopkTracer, model: Any, hooks: dict[str, EngineHook] | None = None
                  ) -> Iterator[EngineHook]:
    """Forward hooks on every indexer of ``model`` feeding ``tracer`` its decode steps; removed on exit."""
    hook, modules = find_indexers(model, hooks or load_hooks())

    def on_forward(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        query = args[hook.query_arg] if len(args) > hook.query_arg else None
        if query is None or query.shape[1] != 1:
            return  # a prefill (or a chunk of one): decode steps only
        tracer(getattr(module, hook.layer_attr, None), hook.position(args, kwargs), output, None)

    handles = [m.register_forward_hook(on_forward, with_kwargs=True) for m in modules]
    try:
        yield hook
    finally:
        for h in handles:
            h.remove()
