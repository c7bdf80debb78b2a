"""The framework-adapter interface (seed 000, way A): build a framework's own module for one op
standalone, with the framework's own cache objects and masks, as a zero-argument call on fixed inputs.

An adapter answers two questions for a :class:`Case` (op, phase, shapes, simulated TP):

- :meth:`Adapter.build`: the op's module built alone (the mock layer of way A);
- :meth:`Adapter.build_pair`: that module inside a real decoder layer of the framework, and the
  standalone one loaded with the same weights, each with its own cache holding the same contents,
  fed the same inputs (what ``align bench --framework`` compares).

Calls are idempotent: ``reset`` puts the cache back where it was before the call (it runs before
every timed call, inside a CUDA graph too), so a call can be repeated, timed and captured.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

OPS = ("dsa", "mla", "moe")
PHASES = ("context", "generation")
CACHES = ("static", "dynamic")
# name -> "module:Class"; an entry per framework that has an adapter (TensorRT-LLM, vLLM and SGLang
# cannot run on this project's machines: none is listed rather than one that was never run)
FRAMEWORKS = {"transformers": "align_mock.frameworks.hf:TransformersAdapter"}


@dataclass(frozen=True)
class Case:
    """One op call: ``context`` runs ``seq`` new tokens per request after ``kv_len`` cached ones,
    ``generation`` one token after ``kv_len`` cached ones. ``tp`` simulates tensor parallelism on one
    GPU (local heads = heads / tp, as aiconfigurator's collector does). ``cache``: ``static`` (capturable
    in a CUDA graph) or ``dynamic`` (the framework's default, eager); None picks static for generation
    and dynamic for context, as a serving decode loop and a plain prefill do."""

    op: str
    phase: str
    batch: int = 1
    seq: int = 1
    kv_len: int = 0
    tp: int = 1
    config: str = "v32"
    dtype: str = "bfloat16"
    device: str = "cuda"
    cache: str | None = None
    seed: int = 0
    overrides: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"unknown op {self.op!r}; use one of {', '.join(OPS)}")
        if self.phase not in PHASES:
            raise ValueError(f"unknown phase {self.phase!r}; use context or generation")
        if self.batch < 1 or self.seq < 1 or self.kv_len < 0 or self.tp < 1:
            raise ValueError("batch, seq and tp must be >= 1 and kv_len >= 0")
        if self.phase == "generation" and self.seq != 1:
            raise ValueError(f"generation runs one token per request: seq must be 1, got {self.seq}")
        if self.phase == "generation" and self.kv_len < 1 and self.op != "moe":
            raise ValueError("generation reads a KV cache: kv_len must be >= 1")
        if self.cache is not None and self.cache not in CACHES:
            raise ValueError(f"unknown cache {self.cache!r}; use static or dynamic")

    @property
    def cache_kind(self) -> str:
        return self.cache or ("static" if self.phase == "generation" else "dynamic")

    @property
    def new_tokens(self) -> int:
        return self.seq if self.phase == "context" else 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["overrides"] = dict(self.overrides)
        d["cache"] = self.cache_kind
        return d


@dataclass
class Built:
    """A framework module ready to run: ``call()`` returns its output tensor; ``reset()`` (or None)
    restores its cache first; ``graphable``: whether the framework's cache allows CUDA-graph capture."""

    framework: str
    version: str
    where: str  # "standalone" or "decoder layer"
    module: Any
    call: Callable[[], Any]
    reset: Callable[[], None] | None
    graphable: bool
    shape: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)  # shapes, dtypes and strides of the call's tensors


class Adapter(ABC):
    """What every framework adapter implements (see the module docstring)."""

    name: str
    ops: tuple[str, ...] = OPS

    @abstractmethod
    def version(self) -> str:
        """The framework's version string (recorded with every result)."""

    @abstractmethod
    def build(self, case: Case, config: Any = None) -> Built:
        """The op's module of this framework, built standalone; ``config``: the framework's own model
        config to build from (default: one made from ``case``)."""

    @abstractmethod
    def build_pair(self, case: Case, config: Any = None) -> tuple[Built, Built]:
        """(the module inside a real decoder layer, the standalone one): same weights, same inputs,
        caches with the same contents."""


def get_adapter(name: str) -> Adapter:
    """The adapter of framework ``name``; ValueError names the ones there are."""
    if name not in FRAMEWORKS:
        raise ValueError(f"no adapter for framework {name!r}; adapters: {', '.join(FRAMEWORKS)}")
    module, cls = FRAMEWORKS[name].split(":")
    return getattr(importlib.import_module(module), cls)()
