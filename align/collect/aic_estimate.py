"""aiconfigurator's own whole-model estimate on a collected folder (seed 001, step 4: "run
aiconfigurator cli default to confirm it runs end to end").

``aiconfigurator cli default`` (0.12.0) cannot be used for DeepSeek-V3.2: its checkpoint is
``fp8_block``, from which ``default`` infers fp8 attention and KV cache, and no flag changes that,
while aiconfigurator's own trtllm DSA tables (and ours) are bfloat16 only ("Unsupported
dsa_context_module quant mode 'fp8'"). ``aiconfigurator cli estimate`` is the closest public entry
point that estimates the whole model: one operating point, with the attention, KV-cache and GEMM
modes given (all bfloat16 here, so no table is relabelled).

The systems root passed to it (``--systems-paths``) is aiconfigurator's own, with the op's tables
replaced by ours: every other file is a symbolic link to the installed one, so only the op
differs. ``scale`` multiplies our latencies, which proves the estimate reads them. MLA is estimated
on DeepSeek-V3, whose attention aiconfigurator models with the same ``mla_*_module`` tables.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from align.errors import AlignError

# op -> (the model whose estimate uses it, the family folder, the perf tables)
MODELS = {"dsa": ("deepseek-ai/DeepSeek-V3.2", "sparse_attention",
                  ("dsa_context_module_perf.parquet", "dsa_generation_module_perf.parquet")),
          "mla": ("deepseek-ai/DeepSeek-V3", "mla",
                  ("mla_context_module_perf.parquet", "mla_generation_module_perf.parquet"))}
LINES = {"ttft_ms": r"TTFT:\s+([\d.]+) ms", "tpot_ms": r"TPOT:\s+([\d.]+) ms",
         "request_latency_ms": r"Request Latency:\s+([\d.]+) ms"}


def overlay_root(tables: Path, out: Path, op: str, system: str = "h200_sxm", backend: str = "trtllm",
                 version: str | None = None, scale: float = 1.0) -> tuple[Path, str]:
    """aiconfigurator's systems tree under ``out``, linked file by file, with the op's tables of
    ``system/<family>/backend/version`` (version: the newest one it ships) replaced by ours from
    ``tables``. Returns (root, version)."""
    import pandas as pd

    from align.collect.aic import _packaged_systems

    _, family, files = MODELS[op]
    shipped = _packaged_systems()
    versions_dir = shipped / "data" / system / family / backend
    versions = sorted(p.name for p in versions_dir.iterdir() if (p / files[0]).exists()) if versions_dir.is_dir() else []
    version = version or (versions[-1] if versions else None)
    if version is None:
        raise AlignError(f"aiconfigurator ships no {system}/{family}/{backend} tables to stand beside ours",
                         "pick a system and backend it ships")
    target = Path("data") / system / family / backend / version
    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)
    _link_tree(shipped, out, target)
    for name in files:
        df = pd.read_parquet(Path(tables) / name)
        df["latency"] = df["latency"].astype(float) * scale
        dest = out / target / name
        dest.unlink(missing_ok=True)
        df.to_parquet(dest, index=False)
    return out, version


def _link_tree(src: Path, dst: Path, keep: Path) -> None:
    """``dst`` mirrors ``src`` with links, except along ``keep`` (relative), which is made of real
    folders so files in it can be replaced."""
    dst.mkdir(parents=True)
    head = keep.parts[0] if keep.parts else None
    for item in src.iterdir():
        if item.name == head and item.is_dir():
            _link_tree(item, dst / item.name, Path(*keep.parts[1:]))
        else:
            (dst / item.name).symlink_to(item)


def estimate(tables: Path, op: str, work: Path, *, system: str = "h200_sxm", backend: str = "trtllm",
             isl: int = 4096, osl: int = 512, tp: int = 8, ep: int = 8, batch: int = 1, scale: float = 1.0,
             timeout: float = 600) -> dict:
    """Run ``aiconfigurator cli estimate`` for the op's model on our tables; returns the command,
    the latencies it printed and where its log is."""
    if op not in MODELS:
        raise AlignError(f"no whole-model estimate for op {op!r}", f"ops with one: {', '.join(MODELS)}")
    model = MODELS[op][0]
    root, version = overlay_root(tables, Path(work) / "systems", op, system, backend, scale=scale)
    exe = shutil.which("aiconfigurator") or str(Path(sys.executable).with_name("aiconfigurator"))
    cmd = [exe, "cli", "estimate", "--systems-paths", str(root), "--model-path", model, "--system", system,
           "--backend", backend, "--perf-db-version", version, "--isl", str(isl), "--osl", str(osl),
           "--tp-size", str(tp), "--moe-ep-size", str(ep), "--batch-size", str(batch),
           "--fmha-quant-mode", "bfloat16", "--kvcache-quant-mode", "bfloat16", "--gemm-quant-mode", "bfloat16",
           "--estimate-mode", "static"]
    log = Path(work) / "aiconfigurator.log"
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise AlignError("aiconfigurator is not installed", "pip install aiconfigurator==0.12.0") from None
    log.write_text(r.stdout + r.stderr)
    found = {k: float(m.group(1)) for k, rx in LINES.items() if (m := re.search(rx, r.stdout + r.stderr))}
    if r.returncode != 0 or len(found) != len(LINES):
        last = [x for x in (r.stdout + r.stderr).splitlines() if "Error" in x or "error" in x][-1:]
        raise AlignError(f"aiconfigurator cli estimate failed (exit {r.returncode}): {last[0] if last else 'no latency printed'}",
                         f"see {log}")
    return {"command": cmd, "model": model, "system": system, "backend": backend, "version": version,
            "isl": isl, "osl": osl, "tp": tp, "ep": ep, "batch": batch, "scale": scale, "log": str(log), **found}
