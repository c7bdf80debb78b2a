"""Layer-wise NVTX markers: the per-module ranges the engines' own switches write.

TensorRT-LLM (``enable_layerwise_nvtx_marker``), vLLM (``--enable-layerwise-nvtx-tracing``) and SGLang
(``--enable-layerwise-nvtx-marker``) hook every ``named_modules()`` entry and push a range whose text
is a Python dict string: ``{'Module': 'top.model.layers.3.self_attn', 'TrainableParams': {...},
'Inputs': [[2, 1, 7168]], ...}``; vLLM and SGLang push an empty ``{'Module': ..., 'Outputs': [...]}``
range after each module (research notes §1.4, §2.6). Every call's text carries its shapes, so the
same module has many texts; what names the range is its module path. Here a text is read once into
what the rest of align matches and shows (:class:`Marker`), and its input shapes into a phase.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import lru_cache

from align import datafiles

_HEAD = re.compile(r"""^\{'Module': (['"])(.*?)\1[,}]""", re.S)
# a marker's fields are read from texts up to this long; a longer one (no engine writes one) is
# known by its module path alone, so a pathological text costs no parse
MAX_FIELDS = 1 << 16


@dataclass(frozen=True)
class Marker:
    """One marker text: the module path (its prefix included), whether it is an output marker, and
    the tokens per sequence of the call's activation (None where its shapes do not say)."""

    module: str
    output: bool
    tokens: int | None


@lru_cache(maxsize=1)
def _rules() -> tuple[tuple[str, int, int], ...]:
    """(key, rank, dim): where a call's tokens per sequence are read, first match wins (ops.toml [markers])."""
    table = datafiles.builtin("ops").get("markers", {})
    return tuple((r["key"], int(r["rank"]), int(r["dim"])) for r in table.get("tokens", []))


@lru_cache(maxsize=1 << 16)
def parse(text: object) -> Marker | None:
    """The marker a range text is, or None for any other text."""
    if not isinstance(text, str):
        return None
    head = _HEAD.match(text)
    if head is None:
        return None
    try:
        fields = ast.literal_eval(text) if len(text) <= MAX_FIELDS else None
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        fields = None
    if not isinstance(fields, dict):
        return Marker(module=head.group(2), output=False, tokens=None)
    return Marker(module=str(fields.get("Module", head.group(2))), output="Outputs" in fields,
                  tokens=_tokens(fields, _rules()))


def _tokens(fields: dict, rules: tuple) -> int | None:
    for key, rank, dim in rules:
        value = fields.get(key)
        if isinstance(value, list) and value and isinstance(value[0], list):
            shape = value[0]
            if len(shape) == rank and all(isinstance(d, int) for d in shape):
                return shape[dim]
    return None


def label(text: object) -> object:
    """What op and range patterns are matched against: a marker's module path (None for an output
    marker: it holds no work and is never an op's range), any other text as it is."""
    m = parse(text)
    if m is None:
        return text
    return None if m.output else m.module


def shown(text: object) -> object:
    """How a range is named in tables: a marker by its module path (``PATH [output]`` for an output
    marker), any other text as it is."""
    m = parse(text)
    if m is None:
        return text
    return f"{m.module} [output]" if m.output else m.module


def range_name(domain: str, text: str, raw: bool = False) -> str:
    """A range's name in tables, ``domain:text``: a marker by its module path unless ``raw``."""
    return f"{domain}:{text if raw else shown(text)}"


def phase(text: object) -> str | None:
    """context or generation from a marker's input shapes (tokens per sequence above one, or one),
    None where the text is no marker or its shapes do not say."""
    m = parse(text)
    if m is None or m.output or m.tokens is None or m.tokens < 1:
        return None
    return "generation" if m.tokens == 1 else "context"
