"""Read collected DSA tables back through aiconfigurator 0.12.0's own perf-database code.

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
  builds; ``engine.EngineHandle.for_database(db).evaluate_ops_json(engine.build_ops_json([op]), ...)``
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


def build_systems_root(collected_dir: Path, out: Path, system: str = "h200_sxm", backend: str = "trtllm",
                       version: str = "align") -> Path:
    """A systems root holding aiconfigurator's own ``<system>.yaml`` and only our DSA tables.

    ``collected_dir`` is the collector's ``--out`` (``<system>/sparse_attention/<backend>/<version>``
    below it). Only the parquet tables and ``collection_meta.yaml`` are copied: in strict mode every
    other file in a version folder (perf txt, locks) would need a ``tables`` entry. No other table
    is needed, and ``query_versions.yaml`` is left out on purpose: with it, a version named outside
    aiconfigurator's release slots ('align') is refused."""
    import yaml

    src = Path(collected_dir) / system / FAMILY / backend / version
    tables = [src / f"{t}.parquet" for t in TABLES.values() if (src / f"{t}.parquet").is_file()]
    if not tables:
        raise FileNotFoundError(f"no dsa_*_module_perf.parquet in {src}")
    if not (src / META).is_file():
        raise FileNotFoundError(f"{src / META} is missing; aiconfigurator's strict loader refuses tables without it")
    spec = _packaged_systems() / f"{system}.yaml"
    data_dir = yaml.safe_load(spec.read_text())["data_dir"]
    out = Path(out)
    dest = out / data_dir / FAMILY / backend / version
    shutil.rmtree(dest, ignore_errors=True)  # a rebuild must not keep a table dropped since
    dest.mkdir(parents=True)
    shutil.copy2(spec, out / spec.name)
    for f in [*tables, src / META]:
        shutil.copy2(f, dest / f.name)
    # aiconfigurator caches loaded databases and engine tables per process; drop them so a rebuilt
    # root is read from disk again.
    from aiconfigurator.sdk import perf_database

    perf_database.unload_database(system, backend, version)
    return out


def query_dsa_latency(systems_root: Path, phase: str, *, num_heads: int, batch: int, isl: int, step: int,
                      system: str = "h200_sxm", backend: str = "trtllm", version: str = "align",
                      mla_dtype: str = "bfloat16", kv_cache_dtype: str = "bfloat16", gemm_type: str = "bfloat16",
                      architecture: str = ARCHITECTURE) -> float:
    """One DSA module latency (ms, one layer) for a table key, evaluated by aiconfigurator.

    The dtype arguments select the table slice by the ``mla_dtype`` / ``kv_cache_dtype`` /
    ``gemm_type`` columns. Generation ops carry no attention dtype (aiconfigurator evaluates them as
    bfloat16), so generation rows must have ``mla_dtype == 'bfloat16'``."""
    from aiconfigurator.sdk import common, perf_database
    from aiconfigurator.sdk.engine import EngineHandle, build_ops_json
    from aiconfigurator.sdk.operations.dsa import ContextDSAModule, GenerationDSAModule

    if phase not in TABLES:
        raise ValueError(f"phase must be one of {sorted(TABLES)}, got {phase!r}")
    root = str(Path(systems_root))
    db = perf_database.get_database(system, backend, version, systems_paths=[root], shared_layer=False,
                                    strict_provenance=True)
    if db is None:
        raise LookupError(f"aiconfigurator found no {system}/{backend}/{version} database under {root}")
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
    handle = EngineHandle.for_database(db, systems_path=root)
    [(_, latency, _, _)] = handle.evaluate_ops_json(build_ops_json([op]), **call)  # one op in, one out
    return float(latency)
