"""align: is a mock layer faithful to the end-to-end run? Nsight Systems profiles, read and compared.

Notebook entry points; the ``align`` CLI is a thin layer over these.
"""

from __future__ import annotations

__version__ = "0.1.0"

from align.errors import AlignError
from align.nsys.discover import discover as find_nsys
from align.profile.load import export, load
from align.profile.reader import Profile
from align.profile.store import Store
from align.stats.kernels import kernel_summary

__all__ = ["AlignError", "Profile", "Store", "export", "find_nsys", "kernel_summary", "load", "profile"]


def profile(cmd: list[str], kind: str = "mock", **kwargs):
    """Run ``cmd`` under nsys into the profile store (see :func:`align.nsys.launch.profile`)."""
    from align.nsys.launch import profile as _profile

    return _profile(cmd, kind=kind, **kwargs)
