"""Reading a trace back: every record of every shard (a damaged line costs one record), its metadata, and the prefix analysis."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from align.trace.topk.config import OFFSET_BINS, RECORD_COLUMNS, REQUIRED, SHARD_GLOB
from align.trace.topk.records import recompute_summary


# ---- reader --------------------------------------------------------------------------------------
def read_jsonl(path: Path, bad: list[str] | None = None, required: Mapping[str, type] | None = None,
               rename: Mapping[str, str] | None = None,
               check: Callable[[dict[str, Any]], str | None] | None = None) -> tuple[list[dict[str, Any]], int]:
    """Complete lines of a JSONL file and the number of torn trailing pieces (0 or 1) left out.

    A line without its newline can only be the last one, torn by a kill inside a write. Any other
    line that is not a JSON object with the ``required`` keys (of their types), or that ``check``
    finds a problem in, is corruption: it raises, or, given a ``bad`` list, is left out and its
    ``file:line (why)`` appended there, so one damaged line costs one record, not the trace."""
    data = Path(path).read_bytes()
    parts = data.split(b"\n")
    torn = 1 if parts[-1] else 0
    out = []
    for i, raw in enumerate(parts[:-1], 1):
        if not raw:
            continue
        try:
            rec = json.loads(raw)
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
            if rename:
                rec = {rename.get(k, k): v for k, v in rec.items()}
            wrong = [k for k, t in (required or {}).items()
                     if not isinstance(rec.get(k), t) or isinstance(rec.get(k), bool)]
            if wrong:
                raise ValueError(f"missing or mistyped {', '.join(wrong)}")
            problem = check(rec) if check else None
            if problem:
                raise ValueError(problem)
        except (ValueError, UnicodeDecodeError) as exc:
            if bad is None:
                raise ValueError(f"{path}:{i}: not a record ({exc})") from None
            bad.append(f"{path}:{i} ({str(exc)[:120]})")
            continue
        out.append(rec)
    return out, torn


def load_trace(directory: str | Path) -> pd.DataFrame:
    """Every record of every shard, one row per (request, layer, step), NOT exploded: ``topk``,
    ``blocks``, ``tokens_per_block``, ``offset_hist`` (and ``scores``) hold lists; use
    ``df.explode("topk")`` for one row per selected token. Rows keep file order (shards in order,
    production order inside); column ``shard`` names the file; ``df.attrs["torn_lines"]`` counts
    torn trailing lines that were ignored, ``df.attrs["bad_lines"]`` lists (``file:line``) the
    damaged lines left out."""
    directory = Path(directory)
    rows: list[dict[str, Any]] = []
    torn, bad = 0, []
    # a trace written with the seed's field names (run_meta.json record_names) reads back as align's
    meta_path = directory / "run_meta.json"
    try:
        written = json.loads(meta_path.read_text()).get("record_names") if meta_path.exists() else None
    except (ValueError, OSError, AttributeError):
        written = None
    back = {v: k for k, v in written.items()} if isinstance(written, dict) and written else None
    shards = sorted(directory.glob(SHARD_GLOB))
    if not shards:
        _refuse_packed(directory)
    for path in shards:
        shard = int(path.stem.rsplit("_", 1)[1])
        recs, cut = read_jsonl(path, bad, REQUIRED, back, record_problem)
        torn += cut
        rows.extend({**r, "shard": shard} for r in recs)
    if bad and not rows:  # every line damaged: a trace of zero records would be a silent zero
        from align.errors import AlignError

        raise AlignError(f"{directory}: none of its records is readable ({len(bad)} damaged line(s), the first at "
                         f"{bad[0]})", "it is not a trace align trace topk run wrote; run that again")
    columns = RECORD_COLUMNS + ["shard"]
    df = pd.DataFrame(rows)
    for col in columns:
        if col not in df.columns:
            df[col] = pd.Series(dtype="object")
    df = df[columns + [c for c in df.columns if c not in columns]]
    df.attrs["torn_lines"] = torn
    df.attrs["bad_lines"] = bad
    return df


def record_problem(rec: Mapping[str, Any]) -> str | None:
    """What makes a record (its REQUIRED keys already typed) unfit to count, or None: its lists of
    positions, blocks and counts must be lists of integers as long as its counts say, as
    :func:`~align.trace.topk.records.build_record` writes them; ``scores``, where present, one number
    (or null) per position."""
    lengths = {"topk": rec["n_selected"], "blocks": rec["n_blocks"], "tokens_per_block": rec["n_blocks"],
               "offset_hist": OFFSET_BINS}
    for name, n in lengths.items():
        value = rec.get(name)
        if not isinstance(value, list) or not all(type(x) is int for x in value):
            return f"{name} is {_json_kind(value)}, not a list of integers"
        if len(value) != n:
            return f"{name} holds {len(value)} entries where the record counts {n}"
    if sum(rec["tokens_per_block"]) != rec["n_selected"] or sum(rec["offset_hist"]) != rec["n_selected"]:
        return f"tokens_per_block or offset_hist does not add up to n_selected {rec['n_selected']}"
    scores = rec.get("scores")
    if scores is not None and not (isinstance(scores, list) and len(scores) == rec["n_selected"] and all(
            x is None or (isinstance(x, (int, float)) and not isinstance(x, bool)) for x in scores)):
        return f"scores is not one number per position ({rec['n_selected']})"
    return None


def _json_kind(value: Any) -> str:
    """A value's JSON kind, as a record's reader names it."""
    if isinstance(value, list):
        return "a list holding other values"
    return {type(None): "null", str: "a string", bool: "a boolean", int: "a number", float: "a number",
            dict: "an object"}.get(type(value), type(value).__name__)


def _refuse_packed(directory: Path) -> None:
    """A folder without shards whose records are elsewhere (packed in a tarball, or counted by its
    summary.json) is refused: reading it as an empty trace would be a silent zero."""
    import fnmatch
    import tarfile

    from align.errors import AlignError

    pattern = Path(SHARD_GLOB).name
    for tar in sorted(directory.glob("*.tar.gz")) + sorted(directory.glob("*.tgz")):
        try:
            with tarfile.open(tar) as t:
                members = [m.name for m in t.getmembers() if fnmatch.fnmatch(Path(m.name).name, pattern)]
        except (OSError, tarfile.TarError):
            continue
        if members:
            inner = Path(members[0]).parent
            raise AlignError(f"{directory} holds its trace packed in {tar.name} ({len(members)} shard(s)), not as files",
                             f"unpack it: mkdir -p DIR && tar xzf {tar} -C DIR, then give DIR/{inner}")
    summary = directory / "summary.json"
    try:
        counted = json.loads(summary.read_text()).get("stats", {}).get("records") if summary.exists() else None
    except (OSError, ValueError, AttributeError):
        counted = None
    if isinstance(counted, int) and counted > 0:
        raise AlignError(f"{directory} has no shard files, but its summary.json counts {counted:,} records",
                         "give the folder the shards were written to (topk_shard_*.jsonl)")


def load_requests(directory: str | Path) -> pd.DataFrame:
    """``requests.jsonl`` as a frame (empty when the run registered no requests)."""
    path = Path(directory) / "requests.jsonl"
    recs = read_jsonl(path, [], {"request_id": int})[0] if path.exists() else []
    return pd.DataFrame(recs, columns=None if recs else ["request_id"])


def load_meta(directory: str | Path) -> dict[str, Any]:
    """``run_meta.json``; damaged or without a block size it is one line, not a traceback."""
    from align.errors import AlignError

    path = Path(directory) / "run_meta.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AlignError(f"cannot read {path}: {str(exc).splitlines()[0][:200]}",
                         "it is written at the start of align trace topk run; run it again") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("block_size"), int) or meta["block_size"] < 1:
        raise AlignError(f"{path} is not a trace's run_meta.json (no positive integer block_size)",
                         "give a folder written by align trace topk run")
    return meta


def load_summary(directory: str | Path) -> dict[str, Any]:
    return json.loads((Path(directory) / "summary.json").read_text())



# ---- prefix analysis -----------------------------------------------------------------------------
def block_hashes(tokens: Sequence[int] | np.ndarray, block_size: int) -> list[bytes]:
    """Chained hashes of the complete blocks of a token sequence: block i's hash covers tokens
    ``[0, (i + 1) * block_size)``, as a paged prefix cache keys its blocks."""
    arr = np.asarray(tokens, dtype=np.int64)
    out, prev = [], b""
    for i in range(arr.size // block_size):
        prev = hashlib.blake2b(prev + arr[i * block_size:(i + 1) * block_size].tobytes(), digest_size=16).digest()
        out.append(prev)
    return out


@dataclass
class PrefixIndex:
    """Which leading blocks of a new request an earlier request already holds (complete blocks
    only: a prefix cache shares whole KV blocks, so a shared tail shorter than a block is not reused)."""

    block_size: int
    _seen: set[bytes] = field(default_factory=set, repr=False)

    def add(self, tokens: Sequence[int] | np.ndarray) -> int:
        """Shared leading blocks of ``tokens`` with the requests added before; then remember its blocks."""
        hashes = block_hashes(tokens, self.block_size)
        shared = 0
        while shared < len(hashes) and hashes[shared] in self._seen:
            shared += 1
        self._seen.update(hashes)
        return shared


def prefix_overlap(df: pd.DataFrame, shared_prefix_tokens: Mapping[int, int], block_size: int, *,
                   by_layer: bool = False) -> pd.DataFrame:
    """Per request (and layer, with ``by_layer``): how much of what its decode reads lies in the
    prefix it shares with earlier requests.

    ``shared_prefix_tokens[r]``: tokens of request r shared with earlier requests; its shared
    blocks are the complete ones, ``[0, P_r // block_size)``. Columns: ``shared_blocks``,
    ``touched_blocks`` (distinct blocks read over all its records), ``touched_shared`` (those in
    the shared prefix), ``frac_touched_shared`` = touched_shared / touched_blocks,
    ``frac_shared_read`` = touched_shared / shared_blocks (NaN without a shared prefix), and
    per-record means ``mean_frac_blocks_shared`` (share of a step's blocks in the prefix) and
    ``mean_frac_tokens_shared`` (share of a step's selected tokens in the prefix)."""
    keys = ["request_id", "layer"] if by_layer else ["request_id"]
    columns = keys + ["records", "shared_prefix_tokens", "shared_blocks", "touched_blocks", "touched_shared",
                      "frac_touched_shared", "frac_shared_read", "mean_frac_blocks_shared",
                      "mean_frac_tokens_shared"]
    rows = []
    if not df.empty:
        for key, g in df.groupby(keys, sort=True):
            key = key if isinstance(key, tuple) else (key,)
            rid = int(key[0])
            prefix = int(shared_prefix_tokens.get(rid, 0))
            shared = prefix // block_size
            touched = set().union(*(set(b) for b in g["blocks"]))
            hit = sum(1 for b in touched if b < shared)
            frac_blocks = [sum(1 for b in bl if b < shared) / len(bl) if bl else 0.0 for bl in g["blocks"]]
            frac_tokens = [sum(1 for t in tk if t < shared * block_size) / len(tk) if tk else 0.0 for tk in g["topk"]]
            rows.append([*(int(k) for k in key), len(g), prefix, shared, len(touched), hit,
                         hit / len(touched) if touched else 0.0, hit / shared if shared else float("nan"),
                         float(np.mean(frac_blocks)), float(np.mean(frac_tokens))])
    return pd.DataFrame(rows, columns=columns)


def shared_prefix_map(requests: pd.DataFrame) -> dict[int, int]:
    """``request_id -> shared_prefix_tokens`` from ``load_requests`` (0 where unknown)."""
    if requests.empty or "shared_prefix_tokens" not in requests.columns:
        return {}
    return {int(r): int(p) for r, p in zip(requests["request_id"], requests["shared_prefix_tokens"].fillna(0))}


def summary_tables(directory: str | Path) -> dict[str, pd.DataFrame]:
    """The tables ``align trace topk summary`` prints: ``layers`` (block statistics per layer),
    ``requests`` (per request, joined with its prefix overlap) and ``overall``."""
    directory = Path(directory)
    df = load_trace(directory)
    meta = load_meta(directory)
    block_size = int(meta["block_size"])
    stats = recompute_summary(df)
    layers = pd.DataFrame([{"layer": int(k), **{c: v[c] for c in ("records", "selected", "unique_blocks",
                                                                   "mean_unique_blocks", "max_unique_blocks",
                                                                   "mean_tokens_per_block")},
                            **{f"offset_q{i}": v["offset_hist"][i] for i in range(OFFSET_BINS)}}
                           for k, v in stats["per_layer"].items()])
    reqs = load_requests(directory)
    per_req = pd.DataFrame([{"request_id": int(k), **{c: v[c] for c in ("records", "first_step", "last_step",
                                                                         "max_position", "mean_unique_blocks")}}
                            for k, v in stats["per_request"].items()])
    overlap = prefix_overlap(df, shared_prefix_map(reqs), block_size)
    if not per_req.empty:
        per_req = per_req.merge(overlap.drop(columns=["records"]), on="request_id", how="left")
        keep = [c for c in ("request_id", "kind", "prompt_len", "output_len") if c in reqs.columns]
        if len(keep) > 1:
            per_req = reqs[keep].merge(per_req, on="request_id", how="right")
    with_prefix = overlap[overlap["shared_blocks"] > 0] if not overlap.empty else overlap
    try:
        written = load_summary(directory).get("writer") or {}
    except (OSError, ValueError, AttributeError):
        written = {}  # the writer's own counters are optional: the records are the trace
    overall = pd.DataFrame([{
        "records": stats["records"], "requests": stats["requests"], "layers": len(stats["per_layer"]),
        "block_size": block_size, "top_k": meta.get("model", {}).get("index_topk"),
        "mean_unique_blocks": stats["mean_unique_blocks"], "mean_tokens_per_block": stats["mean_tokens_per_block"],
        "requests_with_prefix": len(with_prefix),
        "mean_frac_touched_shared": float(with_prefix["frac_touched_shared"].mean()) if len(with_prefix) else None,
        "mean_frac_shared_read": float(with_prefix["frac_shared_read"].mean()) if len(with_prefix) else None,
        "dropped": written.get("dropped"), "torn_lines": df.attrs.get("torn_lines", 0),
        "bad_lines": len(df.attrs.get("bad_lines", [])),
    }])
    overall.attrs["bad_lines"] = df.attrs.get("bad_lines", [])
    return {"overall": overall, "layers": layers, "requests": per_req}
