"""DSA top-k decode traces: which cached tokens (and KV blocks) each decode step of each layer reads.

Pipeline: ``Indexer.trace_hook`` (mock/dsa.py, decode only) -> ``TopkTracer`` (maps batch rows to
request ids and positions to decode steps, copies the top-k to the host) -> ``TopkTraceWriter``
(bounded queue; a background thread builds the records, appends JSON lines to per-request-range
shards and keeps ``summary.json`` up to date) -> ``load_trace`` / ``recompute_summary`` /
``prefix_overlap`` for analysis.

Output folder::

    run_meta.json             constant metadata, written once (config, model dims, top-k, versions)
    topk_shard_{k:05d}.jsonl  one record per (request, layer, decode step); k = request_id // shard_size
    requests.jsonl            one line per request (lengths, shared prefix), as the runner registers them
    summary.json              {"stats": ..., "writer": ...}, rewritten atomically while the run goes on

Record fields (one JSON object per line): ``request_id``, ``layer``, ``step`` (0 = first decode
step), ``position`` (the decoded token's position), ``topk`` (sorted selected token positions the
attention actually reads: top-k entries beyond ``position``, which exist only while fewer than
``index_topk`` tokens are visible and which attention masks, are dropped and counted in
``n_masked``), ``n_selected``, optional ``scores`` (indexer scores aligned with ``topk``),
``blocks`` (sorted unique KV block ids ``pos // block_size``), ``tokens_per_block`` (aligned with
``blocks``), ``n_blocks``, ``offset_hist`` (selected tokens per quarter of their block, by
``pos % block_size``), ``offset_mean``, ``t_ns`` (wall clock when the hook captured the step) and
``write_ns`` (when the writer serialized it: the difference is the queue lag).

Environment (explicit ``TopkTraceConfig.from_env`` arguments win): ``ALIGN_TOPK_TRACE_DIR`` (output
folder; setting it enables tracing), ``ALIGN_TOPK_TRACE`` (0/1, enable), ``ALIGN_TOPK_TRACE_BLOCK_SIZE``,
``ALIGN_TOPK_TRACE_SHARD_SIZE``, ``ALIGN_TOPK_TRACE_SCORES`` (0/1), ``ALIGN_TOPK_TRACE_MAX_RECORDS``
(0 = unlimited), ``ALIGN_TOPK_TRACE_EVERY`` (record every k-th decode step), ``ALIGN_TOPK_TRACE_LAYERS``
(comma-separated layer indices), ``ALIGN_TOPK_TRACE_QUEUE`` (queue capacity, records),
``ALIGN_TOPK_TRACE_SUMMARY_S`` (seconds between summary rewrites).

Modules, by job: ``config`` (settings, folder layout), ``records`` (a record, and the statistics of
many), ``writer`` (the writer thread and the files), ``tracer`` (the hook the indexer calls),
``reader`` (reading a trace back, prefix analysis).
"""

from align.trace.topk.config import (ENV_PREFIX, OFFSET_BINS, RECORD_COLUMNS, REQUIRED, SCHEMA, SHARD_GLOB,
                                     TopkTraceConfig, shard_name)
from align.trace.topk.reader import (PrefixIndex, block_hashes, load_meta, load_requests, load_summary, load_trace,
                                     prefix_overlap, read_jsonl, shared_prefix_map, summary_tables)
from align.trace.topk.records import RunningStats, build_record, recompute_summary
from align.trace.topk.tracer import TopkTracer
from align.trace.topk.writer import TopkTraceWriter, atomic_write_json

__all__ = ["ENV_PREFIX", "OFFSET_BINS", "RECORD_COLUMNS", "REQUIRED", "SCHEMA", "SHARD_GLOB", "PrefixIndex",
           "RunningStats", "TopkTraceConfig", "TopkTraceWriter", "TopkTracer", "atomic_write_json", "block_hashes",
           "build_record", "load_meta", "load_requests", "load_summary", "load_trace", "prefix_overlap",
           "read_jsonl", "recompute_summary", "shard_name", "shared_prefix_map", "summary_tables"]
