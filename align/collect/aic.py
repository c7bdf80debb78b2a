"""Read collected tables (DSA, MLA, MoE) back through aiconfigurator 0.12.0's own perf-database code.

Why: the collector's only consumer is aiconfigurator, so the proof that a collection is usable is
that aiconfigurator's loader accepts the folder and its op evaluation returns our numbers. Nothing
here re-implements its lookup; every latency comes out of its compiled engine.

The path used (all public names of ``aiconfigurator.sdk``, 0.12.0):

* ``perf_database.get_database(system, backend, version, systems_paths=[root], shared_layer=False,
  strict_provenance=True)`` loads ``<root>/<system>.yaml`` and the tables under its ``data_dir``.
  ``shared_layer=False`` keeps older versions from filling gaps, so a miss is a miss;
  ``strict_provenance=True`` makes a missing or incomplete ``collection_meta.yaml`` an error, as
  aiconfigurator's own data CI does.
* ``operations.dsa.ContextDSAModule`` / ``GenerationDSAModule`` are the ops DeepSeek-V3.2's model
  builds, ``operations.MLAModule`` and ``operations.MoE`` those of DeepSeek-V3's;
  ``engine.EngineHandle.for_database(db).evaluate_ops_json(engine.build_ops_json([op]), ...)``
  is the documented replacement of the removed per-op ``query()``.

Coordinates: context rows are looked up at ``(num_heads, prefix=step, seq=isl, batch)``; generation
rows are keyed by ``seq = isl + step`` (the loader adds them), so a generation query passes
``s = isl + step``. Off-grid points are interpolated, beyond the grid extrapolated from the SOL.
"""

from __future__ import annotations

import shutil
from importlib import metadata
from pathlib import Path

AIC_VERSION = "0.12.0"
FAMILY = "sparse_attention"
FAMILIES = ("sparse_attention", "mla", "moe")
META = "collection_meta.yaml"
TABLES = {"context": "dsa_context_module_perf", "generation": "dsa_generation_module_perf"}
ARCHITECTURE = "DeepseekV32ForCausalLM"


def aiconfigurator_available() -> bool:
    """True when aiconfigurator ``AIC_VERSION`` is installed: the loader API used here is that
    release's, so another version is reported as unavailable rather than half-working."""
    try:
        import aiconfigurator.sdk.perf_database  # noqa: F401
    except ImportError:
        return False
    try:
        return metadata.version("aiconfigurator") == AIC_VERSION
    except metadata.PackageNotFoundError:
        return False


def _packaged_systems() -> Path:
    from importlib.resources import files

    return Path(str(files("aiconfigurator_core") / "systems"))


def build_systems_root(collected_dir: Path, out: Path, system: str = "h200_sxm", backend: str = "align_mock",
                       version: str = "align", as_backend: str = "trtllm") -> Path:
    """A systems root holding aiconfigurator's own ``<system>.yaml`` and only our tables.

    ``collected_dir`` is the collector's ``--out`` (``<system>/<family>/<backend>/<version>`` below
    it, family sparse_attention, mla or moe; ``backend`` the implementation timed, by default).
    The tables are placed where aiconfigurator looks for backend ``as_backend`` (it knows trtllm,
    vllm and sglang only): loading a collection as another backend's is this explicit step, and the
    collection's own ``collection_meta.yaml`` still says what was timed. Only the parquet tables and ``collection_meta.yaml``
    are copied: in strict mode every other file in a version folder (perf txt, locks) would need a
    ``tables`` entry. ``query_versions.yaml`` is left out on purpose: with it, a version named
    outside aiconfigurator's release slots ('align') is refused."""
    import yaml

    found = []
    for family in FAMILIES:
        src = Path(collected_dir) / system / family / backend / version
        tables = sorted(src.glob("*_perf.parquet"))
        if not tables:
            continue
        if not (src / META).is_file():
            raise FileNotFoundError(f"{src / META} is missing; aiconfigurator's strict loader refuses tables without it")
        found.append((family, src, tables))
    if not found:
        raise FileNotFoundError(f"no *_perf.parquet under {Path(collected_dir) / system}/{{{','.join(FAMILIES)}}}"
                                f"/{backend}/{version}")
    spec = _packaged_systems() / f"{system}.yaml"
    data_dir = yaml.safe_load(spec.read_text())["data_dir"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(spec, out / spec.name)
    for family, src, tables in found:
        dest = out / data_dir / family / as_backend / version
        shutil.rmtree(dest, ignore_errors=True)  # a rebuild must not keep a table dropped since
        dest.mkdir(parents=True)
        for f in [*tables, src / META]:
            shutil.copy2(f, dest / f.name)
    # aiconfigurator caches loaded databases and engine tables per process; drop them so a rebuilt
    # root is read from disk again.
    from aiconfigurator.sdk import perf_database

    perf_database.unload_database(system, as_backend, version)
    return out


def _engine(systems_root: Path, system: str, backend: str, version: str):
    from aiconfigurator.sdk import perf_database
    from aiconfigurator.sdk.engine import EngineHandle

    root = str(Path(systems_root))
    db = perf_database.get_database(system, backend, version, systems_paths=[root], shared_layer=False,
                                    strict_provenance=True)
    if db is None:
        raise LookupError(f"aiconfigurator found no {system}/{backend}/{version} database under {root}")
    return EngineHandle.for_database(db, systems_path=root)


def _evaluate(handle, op, **call) -> float:
    from aiconfigurator.sdk.engine import build_ops_json

    [(_, latency, _, _)] = handle.evaluate_ops_json(build_ops_json([op]), **call)  # one op in, one out
    return float(latency)


def query_mla_latency(systems_root: Path, phase: str, *, num_heads: int, batch: int, isl: int, step: int,
                      system: str = "h200_sxm", backend: str = "trtllm", version: str = "align",
                      mla_dtype: str = "bfloat16", kv_cache_dtype: str = "bfloat16",
                      gemm_type: str = "bfloat16") -> float:
    """One MLA module latency (ms, one layer) for a row's key, evaluated by aiconfigurator's
    ``MLAModule`` (context at ``s = isl``; generation at ``s = isl + step``, as its loader keys)."""
    from aiconfigurator.sdk import common, operations

    if phase not in ("context", "generation"):
        raise ValueError(f"phase must be context or generation, got {phase!r}")
    context = phase == "context"
    op = operations.MLAModule(f"{phase}_mla_module", 1.0, context, num_heads, common.KVCacheQuantMode[kv_cache_dtype],
                              common.FMHAQuantMode[mla_dtype], common.GEMMQuantMode[gemm_type],
                              native_num_heads=num_heads)
    return _evaluate(_engine(systems_root, system, backend, version), op, is_context=context, batch_size=batch,
                     s=isl if context else isl + step)


def query_moe_latency(systems_root: Path, *, num_tokens: int, hidden_size: int, inter_size: int, topk: int,
                      num_experts: int, moe_tp_size: int, moe_ep_size: int, distribution: str,
                      moe_dtype: str = "bfloat16", system: str = "h200_sxm", backend: str = "trtllm",
                      version: str = "align") -> float:
    """One MoE latency (ms, one layer) for a row's key, evaluated by aiconfigurator's ``MoE`` op
    (tokens passed as the batch of one-token sequences; attention DP 1)."""
    from aiconfigurator.sdk import common, operations

    op = operations.MoE("moe", 1.0, hidden_size, inter_size, topk, num_experts, moe_tp_size, moe_ep_size,
                        common.MoEQuantMode[moe_dtype], distribution, 1)
    return _evaluate(_engine(systems_root, system, backend, version), op, is_context=True, batch_size=num_tokens, s=1)


def query_dsa_latency(systems_root: Path, phase: str, *, num_heads: int, batch: int, isl: int, step: int,
                      system: str = "h200_sxm", backend: str = "trtllm", version: str = "align",
                      mla_dtype: str = "bfloat16", kv_cache_dtype: str = "bfloat16", gemm_type: str = "bfloat16",
                      architecture: str = ARCHITECTURE) -> float:
    """One DSA module latency (ms, one layer) for a table key, evaluated by aiconfigurator.

    The dtype arguments select the table slice by the ``mla_dtype`` / ``kv_cache_dtype`` /
    ``gemm_type`` columns. Generation ops carry no attention dtype (aiconfigurator evaluates them as
    bfloat16), so generation rows must have ``mla_dtype == 'bfloat16'``."""
    from aiconfigurator.sdk import common
    from aiconfigurator.sdk.operations.dsa import ContextDSAModule, GenerationDSAModule

    if phase not in TABLES:
        raise ValueError(f"phase must be one of {sorted(TABLES)}, got {phase!r}")
    kv = common.KVCacheQuantMode[kv_cache_dtype]
    gemm = common.GEMMQuantMode[gemm_type]
    if phase == "context":
        op = ContextDSAModule("dsa", 1.0, num_heads, kv, common.FMHAQuantMode[mla_dtype], gemm,
                              architecture=architecture)
        call = {"is_context": True, "batch_size": batch, "s": isl, "prefix": step}
    else:
        if mla_dtype != "bfloat16":
            raise ValueError("aiconfigurator evaluates generation DSA with mla_dtype bfloat16 only")
        op = GenerationDSAModule("dsa", 1.0, num_heads, kv, gemm, architecture=architecture)
        call = {"is_context": False, "batch_size": batch, "s": isl + step}
    return _evaluate(_engine(systems_root, system, backend, version), op, **call)
