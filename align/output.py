"""Print DataFrames and dicts as a rich table, CSV or JSON: one renderer for every command."""

from __future__ import annotations

import enum
import json
import math
import sys
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table
from rich.text import Text


class Format(str, enum.Enum):
    table = "table"
    csv = "csv"
    json = "json"


stdout = Console(highlight=False, soft_wrap=False)


def _jsonable(value: Any) -> Any:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        return _jsonable(value.item())
    return value


def records(df: pd.DataFrame) -> list[dict]:
    return [{k: _jsonable(v) for k, v in row.items()} for row in df.to_dict(orient="records")]


def _cell(value: Any) -> str:
    value = _jsonable(value)
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 or value == 0 else f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def print_frame(df: pd.DataFrame, fmt: Format, title: str | None = None, csv_frame: pd.DataFrame | None = None,
                max_width: int | None = None) -> None:
    """``csv_frame`` lets a command write a differently-headed frame for CSV (nsys-compatible headers)."""
    if fmt == Format.csv:
        (csv_frame if csv_frame is not None else df).to_csv(sys.stdout, index=False)
    elif fmt == Format.json:
        sys.stdout.write(json.dumps(records(df), indent=2) + "\n")
    else:
        table = Table(title=title, title_justify="left", show_lines=False, header_style="bold")
        for col in df.columns:
            numeric = pd.api.types.is_numeric_dtype(df[col]) and not pd.api.types.is_bool_dtype(df[col])
            table.add_column(str(col), justify="right" if numeric else "left",
                             overflow="fold", max_width=max_width if not numeric else None)
        for row in df.itertuples(index=False):
            table.add_row(*(Text(_cell(v)) for v in row))  # Text: names like "[lambda(int)]" are not markup
        stdout.print(table)


def print_dict(data: dict, fmt: Format, title: str | None = None) -> None:
    if fmt == Format.json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    elif fmt == Format.csv:
        flat = pd.DataFrame([{"key": k, "value": json.dumps(v, default=str) if isinstance(v, (dict, list)) else v}
                             for k, v in data.items()])
        flat.to_csv(sys.stdout, index=False)
    else:
        table = Table(title=title, title_justify="left", show_header=False)
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        for k, v in data.items():
            table.add_row(Text(str(k)), Text(json.dumps(v, default=str) if isinstance(v, (dict, list)) else _cell(v)))
        stdout.print(table)
