"""Print DataFrames and dicts as a rich table, CSV or JSON: one renderer for every command."""

from __future__ import annotations

import enum
import json
import math
import sys
from dataclasses import dataclass
from typing import Any

from align.lazy import loaded, pd

from align.errors import AlignError
from align.rows import Rows


class Format(str, enum.Enum):
    table = "table"
    csv = "csv"
    json = "json"


class LazyConsole:
    """A rich Console made at first use: an answer in CSV or JSON never imports rich (~30 ms)."""

    def __init__(self, **options) -> None:
        self._options = options
        self._console = None

    def __getattr__(self, name: str):
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return getattr(self._console, name)


stdout = LazyConsole(highlight=False, soft_wrap=False)


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
    twice = sorted({c for c in picked or () if picked.count(c) > 1})
    if twice:  # a table has one column of a name
        raise AlignError(f"--columns {columns!r} names {', '.join(twice)} twice", "name each column once")
    VIEW.wide, VIEW.columns = wide, picked


def pick(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with only the --columns asked for (all of them when none were)."""
    return _select(df, None)[0] if VIEW.columns else df


def _select(df, csv_frame):
    """The --columns of ``df`` (and the same positions of its CSV twin), or one line naming the choices;
    each a DataFrame or :class:`Rows`."""
    unknown = [c for c in VIEW.columns if c not in list(df.columns)]
    if unknown:
        raise AlignError(f"--columns: no column {', '.join(map(repr, unknown))} in this table",
                         f"choose from {', '.join(map(str, df.columns))}")
    positions = [list(df.columns).index(c) for c in VIEW.columns]
    if isinstance(df, Rows):
        return df.take(positions), csv_frame.take(positions) if csv_frame is not None else None
    twin = csv_frame.iloc[:, positions] if csv_frame is not None else None
    return df[VIEW.columns], twin


def _jsonable(value: Any) -> Any:
    if value is None or (loaded("pandas") and value is pd.NA):
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        return _jsonable(value.item())
    return value


def records(df) -> list[dict]:
    """JSON-ready rows of a DataFrame or :class:`Rows`."""
    rows = df.records() if isinstance(df, Rows) else df.to_dict(orient="records")
    return [{k: _jsonable(v) for k, v in row.items()} for row in rows]


def _values(df) -> dict[str, list]:
    if isinstance(df, Rows):
        return {c: df.column(c) for c in df.columns}
    return {c: list(df[c]) for c in df.columns}


def _numeric(df, values: dict[str, list]) -> dict[str, bool]:
    """Right-aligned, never-wrapped columns: numbers (not booleans)."""
    if not isinstance(df, Rows):
        return {c: pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns}
    return {c: any(v is not None for v in vs) and all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
                                                      for v in vs) for c, vs in values.items()}


def _write_csv(df) -> None:
    """CSV as pandas' ``to_csv(index=False)`` writes it: a missing value is an empty field."""
    if not isinstance(df, Rows):
        df.to_csv(sys.stdout, index=False)
        return
    import csv

    w = csv.writer(sys.stdout, lineterminator="\n")
    w.writerow(df.columns)
    for r in df.rows:
        w.writerow(["" if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in r])


def _cell(value: Any) -> str:
    value = _jsonable(value)
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 or value == 0 else f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def print_frame(df, fmt: Format, title: str | None = None, csv_frame=None,
                max_width: int | None = None, optional: list[str] | None = None, main: bool = True) -> None:
    """A DataFrame or :class:`Rows` as the format asks.
    ``csv_frame`` lets a command write a differently-headed frame for CSV (nsys-compatible headers);
    ``optional``: columns a narrow terminal's table leaves out first; ``main``: the command's main
    table, the one ``--columns`` picks from."""
    if VIEW.columns and main:
        df, csv_frame = _select(df, csv_frame)
    if fmt == Format.csv:
        _write_csv(csv_frame if csv_frame is not None else df)
    elif fmt == Format.json:
        sys.stdout.write(json.dumps(records(df), indent=2) + "\n")
    else:
        values = _values(df)
        cells = {c: [shorten(_cell(v)) for v in vs] for c, vs in values.items()}
        numeric = _numeric(df, values)
        wide = VIEW.wide
        picked = bool(VIEW.columns and main)  # the columns asked for are all shown, names folded to fit
        shown = list(df.columns) if wide or picked else fit_columns(list(df.columns), cells, numeric, stdout.width,
                                                                    optional or [])
        if not wide:
            # a name longer than about four lines of its column is cut in the middle (whole with --wide, csv, json)
            texts = [c for c in shown if not numeric[c]]
            room = stdout.width - 1 - sum(3 + max([len(str(c))] + [len(x) for x in cells[c]])
                                          for c in shown if numeric[c]) - 3 * len(texts)
            each = min(max_width or room, max(room // max(len(texts), 1), MIN_FOLDED))
            cap = max(4 * each, MIN_TEXT)
            cells = {c: (v if numeric[c] else [shorten(x, cap) for x in v]) for c, v in cells.items()}
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table(title=title, title_justify="left", show_lines=False, header_style="bold")
        tight = not wide and sum(max([len(str(c))] + [len(x) for x in cells[c]]) + 3 for c in shown) + 1 > stdout.width
        for col in shown:
            # a number is never split across lines; long names fold (unless --wide), and headers at "_"
            head = str(col).replace("_", "_\n") if tight and numeric[col] else str(col)
            table.add_column(head, justify="right" if numeric[col] else "left", no_wrap=numeric[col] or wide,
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
MIN_TEXT = 24  # a name column is not squeezed below this while optional columns can go
MIN_FOLDED = 12  # nor below this before a number column goes


def fit_columns(columns: list, cells: dict, numeric: dict, width: int, optional: list) -> list:
    """The columns that fit ``width``: numbers whole on one line, names at least MIN_TEXT wide;
    empty columns are left out first, then the ``optional`` ones; then names fold down to
    MIN_FOLDED before any number goes (numbers from the right: the first ones carry the main figures)."""
    def need(c, least) -> int:
        # once names fold, headers do too (``latency_ratio`` on two lines): the words give way first
        head = max(len(w) for w in str(c).split("_")) if least == MIN_FOLDED else len(str(c))
        widest = max([head] + [len(x) for x in cells[c]])
        return widest if numeric[c] else min(widest, least)

    shown = list(columns)
    empty = [c for c in columns if not any(cells[c])]
    least = MIN_TEXT
    while sum(need(c, least) + 3 for c in shown) + 1 > width:
        droppable = [c for c in reversed(empty) if c in shown] or [c for c in reversed(optional) if c in shown]
        if not droppable and least > MIN_FOLDED:
            least = MIN_FOLDED  # keep the numbers, fold the words
            continue
        droppable = droppable or [c for c in shown if numeric[c]][1:][-1:]
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
        _write_csv(Rows(["key", "value"], [(k, json.dumps(v, default=str) if isinstance(v, (dict, list)) else v)
                                           for k, v in data.items()]))
    else:
        from rich.table import Table
        from rich.text import Text

        table = Table(title=title, title_justify="left", show_header=False)
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        for k, v in data.items():
            table.add_row(Text(str(k)), Text(json.dumps(v, default=str) if isinstance(v, (dict, list)) else _cell(v)))
        stdout.print(table)
