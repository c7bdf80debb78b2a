"""align: is a mock layer faithful to the end-to-end run? Nsight Systems profiles, read and compared.

Notebook entry points; the ``align`` CLI is a thin layer over these. Imports are lazy so that
``align.annotate`` works in a profiled script on a machine with only PyTorch installed.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "AlignError": "align.errors",
    "Profile": "align.profile.reader",
    "Store": "align.store",
    "export": "align.loader",
    "load": "align.loader",
    "kernel_summary": "align.stats.kernels",
    "Projection": "align.attribute.projection",
    "OpView": "align.attribute.ops",
    "ProfileSide": "align.compare.side",
    "diff": "align.compare.diff",
    "verdict": "align.compare.verdict",
    # several reports as Dask tasks (align.scale): the same questions, each report's answer and ALL
    "kernels_many": "align.scale.analyses",
    "nvtx_many": "align.scale.analyses",
    "ops_many": "align.scale.analyses",
    "diff_many": "align.scale.verdicts",
    "verdict_many": "align.scale.verdicts",
    # `align.profile` is the subpackage; the capture function is exported as `capture`.
    "capture": ("align.capture.launch", "profile"),
    "find_nsys": ("align.capture.discover", "discover"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'align' has no attribute {name!r}")
    module, attr = target if isinstance(target, tuple) else (target, name)
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
