"""Settings of a top-k trace: the folder layout's constants, and TopkTraceConfig from arguments or ALIGN_TOPK_TRACE_* variables."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


SCHEMA = "align.topk_trace/1"
ENV_PREFIX = "ALIGN_TOPK_TRACE"
OFFSET_BINS = 4
SHARD_GLOB = "topk_shard_*.jsonl"
RECORD_COLUMNS = ["request_id", "layer", "step", "position", "n_selected", "topk", "scores", "blocks",
                  "tokens_per_block", "n_blocks", "offset_hist", "offset_mean", "n_masked", "t_ns", "step_ns",
                  "write_ns"]
# ``names = "seed"``: seed 003's field names for the record fields it names (its main line
# request_id / step_idx / layer_id / selected_token_pos, and logical_block_id); the rest keep align's
SEED_NAMES = {"layer": "layer_id", "step": "step_idx", "topk": "selected_token_pos", "blocks": "logical_block_id",
              "position": "token_pos"}
NAMINGS = ("align", "seed")
# what the summary reads of each record, with its type
REQUIRED = {"request_id": int, "layer": int, "step": int, "position": int, "n_selected": int, "n_blocks": int,
            "offset_hist": list}


def shard_name(shard: int) -> str:
    return f"topk_shard_{shard:05d}.jsonl"


# ---- configuration -------------------------------------------------------------------------------
@dataclass
class TopkTraceConfig:
    """What to trace and where. ``shard_size`` requests share one shard file (``request_id //
    shard_size``), so a request is never split across files however batches interleave."""

    out_dir: Path | None = None
    enabled: bool = True
    block_size: int = 64
    shard_size: int = 16
    record_scores: bool = False
    max_records: int | None = None
    sample_every: int = 1
    layers: tuple[int, ...] | None = None
    queue_size: int = 65536
    summary_interval_s: float = 1.0
    names: str = "align"

    def __post_init__(self) -> None:
        if self.names not in NAMINGS:
            raise ValueError(f"TopkTraceConfig.names must be one of {', '.join(NAMINGS)}, got {self.names!r}")
        if self.out_dir is not None:
            self.out_dir = Path(self.out_dir)
        if self.layers is not None:
            self.layers = tuple(sorted({int(x) for x in self.layers}))
        if self.max_records is not None and self.max_records <= 0:
            self.max_records = None
        for name in ("block_size", "shard_size", "sample_every", "queue_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TopkTraceConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.summary_interval_s < 0:
            raise ValueError(f"summary_interval_s must be >= 0, got {self.summary_interval_s}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **explicit: Any) -> TopkTraceConfig:
        """Defaults, then ``ALIGN_TOPK_TRACE_*`` variables, then ``explicit`` arguments that are not None.

        Tracing is enabled when an output folder is known, unless ``ALIGN_TOPK_TRACE=0`` (or
        ``enabled=False``) says otherwise."""
        env = os.environ if env is None else env
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(explicit) - names
        if unknown:
            raise TypeError(f"unknown TopkTraceConfig fields {sorted(unknown)}")
        values: dict[str, Any] = {}
        parsers: dict[str, tuple[str, Any]] = {
            "out_dir": ("_DIR", Path), "enabled": ("", _parse_bool), "block_size": ("_BLOCK_SIZE", int),
            "shard_size": ("_SHARD_SIZE", int), "record_scores": ("_SCORES", _parse_bool),
            "max_records": ("_MAX_RECORDS", int), "sample_every": ("_EVERY", int),
            "layers": ("_LAYERS", _parse_layers), "queue_size": ("_QUEUE", int),
            "summary_interval_s": ("_SUMMARY_S", float), "names": ("_NAMES", str),
        }
        for name, (suffix, parse) in parsers.items():
            raw = env.get(ENV_PREFIX + suffix)
            if raw not in (None, ""):
                try:
                    values[name] = parse(raw)
                except ValueError as exc:
                    raise ValueError(f"{ENV_PREFIX + suffix}={raw!r}: {exc}") from None
        values.update({k: v for k, v in explicit.items() if v is not None})
        values.setdefault("enabled", values.get("out_dir") is not None)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["out_dir"] = None if self.out_dir is None else str(self.out_dir)
        data["layers"] = None if self.layers is None else list(self.layers)
        return data


def _parse_bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected 0/1, true/false, yes/no or on/off")


def _parse_layers(raw: str) -> tuple[int, ...]:
    return tuple(int(x) for x in raw.replace(" ", "").split(",") if x)
