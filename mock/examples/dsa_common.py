"""Shared pieces of dsa_mock.py and dsa_e2e.py: making align and align_mock importable from a bare
checkout, their common options (so the mock and its E2E reference describe the same op), and the
device and dtype they run in. Importing this module does the import set-up.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import torch

try:
    import align  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
try:
    import align_mock  # noqa: F401
except ImportError:  # a checkout where mock/ is not installed: load it under its package name
    _root = Path(__file__).resolve().parents[1]
    _spec = importlib.util.spec_from_file_location("align_mock", _root / "__init__.py",
                                                   submodule_search_locations=[str(_root)])
    sys.modules["align_mock"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["align_mock"])

from align_mock.config import CONFIGS  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def parser(doc: str, defaults: dict, small: dict, seq_help: str) -> argparse.ArgumentParser:
    """The options both scripts take; each adds its own after these."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--small", action="store_true", help=f"CPU-sized run: {small} unless given explicitly")
    p.add_argument("--config", choices=sorted(CONFIGS), help=f"model dimensions (default {defaults['config']})")
    p.add_argument("--attention", choices=("dsa", "mla"), default="dsa", help="DSA (V3.2) or plain MLA (V3)")
    p.add_argument("--tp", type=int, default=1, help="simulated tensor-parallel degree: heads // tp on this GPU")
    p.add_argument("--batch", type=int, help=f"requests (B), default {defaults['batch']}")
    p.add_argument("--seq", type=int, help=f"{seq_help} (S), default {defaults['seq']}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profiler-api", action="store_true", help="cudaProfilerStart/Stop around the measured parts")
    p.add_argument("--dtype", choices=sorted(DTYPES), help="default: bf16 on GPU, fp32 on CPU")
    return p


def parse(p: argparse.ArgumentParser, defaults: dict, small: dict) -> argparse.Namespace:
    """Parse, then fill what was not given from ``small`` (with --small) or ``defaults``."""
    args = p.parse_args()
    for key, value in (small if args.small else defaults).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def device_and_dtype(args: argparse.Namespace) -> tuple[torch.device, torch.dtype]:
    """The GPU in bf16 (as an engine runs), else the CPU in fp32; ``--dtype`` overrides."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = DTYPES[args.dtype] if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    return device, dtype
