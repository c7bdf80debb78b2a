"""pandas and numpy, loaded on first use: a command that answers from SQLite alone (``align kernels``
or ``align info`` on a small export, ``align --help``) never pays their ~0.5 s import."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_module(name: str) -> ModuleType:
    """``name`` as a module whose code runs at its first attribute access (importlib's LazyLoader);
    already imported, it is returned as it is."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(f"No module named {name!r}")
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


def loaded(name: str) -> bool:
    """Whether ``name``'s code has run (a lazy module that nobody touched has not)."""
    module = sys.modules.get(name)
    # any attribute access would load it: a lazy module is told apart by its class alone
    return module is not None and type(module) is ModuleType


pd = lazy_module("pandas")
np = lazy_module("numpy")
