"""A small result table without pandas: what a command prints when nobody asked for a DataFrame.

Summaries of a profile are small (one row per kernel name, per process, per stored profile) even
when the profile is not; building them as plain rows lets ``align kernels`` answer before pandas
could have been imported. :meth:`Rows.to_frame` gives the DataFrame a notebook wants.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable


@dataclass
class Rows:
    columns: list[str]
    rows: list[tuple] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> list:
        i = self.columns.index(name)
        return [r[i] for r in self.rows]

    def head(self, n: int) -> "Rows":
        return Rows(list(self.columns), self.rows[:n])

    def select(self, names: Iterable[str]) -> "Rows":
        """Only ``names``, in that order."""
        return self.take([self.columns.index(c) for c in names])

    def take(self, positions: list[int]) -> "Rows":
        """The columns at ``positions``, in that order."""
        return Rows([self.columns[i] for i in positions], [tuple(r[i] for i in positions) for r in self.rows])

    def rename(self, mapping: dict[str, str]) -> "Rows":
        return Rows([mapping.get(c, c) for c in self.columns], self.rows)

    def sort(self, keys: list[tuple[str, bool]], none_first: bool = False) -> "Rows":
        """Rows ordered by (column, ascending) keys, first key first, stable, with None last (or
        first): pandas' ``sort_values(kind="stable", na_position=...)``."""
        out = list(self.rows)
        for name, ascending in reversed(keys):
            i = self.columns.index(name)
            present = sorted((r for r in out if r[i] is not None), key=lambda r: r[i], reverse=not ascending)
            missing = [r for r in out if r[i] is None]
            out = missing + present if none_first else present + missing
        return Rows(list(self.columns), out)

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r)) for r in self.rows]

    def to_frame(self, dtypes: dict[str, str] | None = None):
        """A pandas DataFrame of these rows; ``dtypes`` fixes the columns' types (an empty table keeps them)."""
        import pandas as pd

        df = pd.DataFrame.from_records(self.rows, columns=self.columns)
        return df.astype(dtypes) if dtypes else df
