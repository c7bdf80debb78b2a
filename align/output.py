"""Print DataFrames and dicts as a rich table, CSV or JSON: one renderer for every command."""

from __future__ import annotations

import enum
import json
import math
import sys
from dataclasses import dataclass
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table
from rich.text import Text

from align.errors import AlignError


class Format(str, enum.Enum):
    table = "table"
    csv = "csv"
    json = "json"


stdout = Console(highlight=False, soft_wrap=False)


@dataclass
class View:
    """How the command line asked tables to be shown: ``wide`` keeps every column and whole names
    (lines may run past the terminal: pipe to ``less -S``); ``columns`` picks and orders the columns
    of the command's main table, in every format."""

    wide: bool = False
    columns: list[str] | None = None


VIEW = View()


def set_view(wide: bool = False, columns: str | None = None) -> None:
    """Set :data:`VIEW` from ``--wide`` and ``--columns a,b,c``."""
    picked = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    if columns is not None and not picked:
        raise AlignError(f"--columns {columns!r} names no column", "e.g. --columns name,instances,total_ns")
    VIEW.wide, VIEW.columns = wide, picked


def pick(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with only the --columns asked for (all of them when none were)."""
    return _select(df, None)[0] if VIEW.columns else df


def _select(df: pd.DataFrame, csv_frame: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The --columns of ``df`` (and the same positions of its CSV twin), or one line naming the choices."""
    unknown = [c for c in VIEW.columns if c not in df.columns]
    if unknown:
        raise AlignError(f"--columns: no column {', '.join(map(repr, unknown))} in this table",
                         f"choose from {', '.join(map(str, df.columns))}")
    positions = [list(df.columns).index(c) for c in VIEW.columns]
    twin = csv_frame.iloc[:, positions] if csv_frame is not None else None
    return df[VIEW.columns], twin


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
                max_width: int | None = None, optional: list[str] | None = None, main: bool = True) -> None:
    """``csv_frame`` lets a command write a differently-headed frame for CSV (nsys-compatible headers);
    ``optional``: columns a narrow terminal's table leaves out first; ``main``: the command's main
    table, the one ``--columns`` picks from."""
    if VIEW.columns and main:
        df, csv_frame = _select(df, csv_frame)
    if fmt == Format.csv:
        (csv_frame if csv_frame is not None else df).to_csv(sys.stdout, index=False)
    elif fmt == Format.json:
        sys.stdout.write(json.dumps(records(df), indent=2) + "\n")
    else:
        cells = {c: [shorten(_cell(v)) for v in df[c]] for c in df.columns}
        numeric = {c: pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
                   for c in df.columns}
        wide = VIEW.wide
        picked = bool(VIEW.columns and main)  # the columns asked for are all shown, names folded to fit
        shown = list(df.columns) if wide or picked else fit_columns(list(df.columns), cells, numeric, stdout.width,
                                                                    optional or [])
        table = Table(title=title, title_justify="left", show_lines=False, header_style="bold")
        for col in shown:
            # a number is never split across lines; long names fold (unless --wide)
            table.add_column(str(col), justify="right" if numeric[col] else "left", no_wrap=numeric[col] or wide,
                             overflow="fold", max_width=None if numeric[col] or wide else max_width)
        for i in range(len(df)):
            table.add_row(*(Text(cells[c][i]) for c in shown))  # Text: names like "[lambda(int)]" are not markup
        if VIEW.wide:
            needed = sum(max([len(str(c))] + [len(x) for x in cells[c]]) + 3 for c in shown) + 1
            Console(highlight=False, soft_wrap=False, width=max(stdout.width, needed)).print(table)
        else:
            stdout.print(table)
        hidden = [str(c) for c in df.columns if c not in shown]
        if hidden:
            Console(stderr=True, highlight=False).print(
                f"[dim]{len(hidden)} column(s) left out to fit {stdout.width} columns: {', '.join(hidden)} "
                f"(--wide or -f csv|json show all; --columns picks)[/]")


MAX_CELL = 2000
MIN_TEXT = 24  # a name column is never squeezed below this


def fit_columns(columns: list, cells: dict, numeric: dict, width: int, optional: list) -> list:
    """The columns that fit ``width``: numbers whole on one line, names at least MIN_TEXT wide;
    empty columns are left out first, then the ``optional`` ones, then numeric columns from the right
    (the first ones carry the main figures)."""
    def need(c) -> int:
        widest = max([len(str(c))] + [len(x) for x in cells[c]])
        return widest if numeric[c] else min(widest, MIN_TEXT)

    shown = list(columns)
    empty = [c for c in columns if not any(cells[c])]
    while sum(need(c) + 3 for c in shown) + 1 > width:
        droppable = ([c for c in reversed(empty) if c in shown] or [c for c in reversed(optional) if c in shown]
                     or [c for c in shown if numeric[c]][1:][-1:])
        if not droppable:
            break
        shown.remove(droppable[0])
    return shown


def shorten(text: str, limit: int = MAX_CELL) -> str:
    """A table cell of at most ``limit`` characters, cut in the middle (``-f csv|json`` keep it whole):
    the start and the end of a kernel name tell it apart, and a megabyte-long one must not stall the table."""
    if len(text) <= limit:
        return text
    keep = (limit - 3) // 2
    return f"{text[:keep]}...{text[-keep:]}"


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
