"""User-facing errors: one line saying what went wrong and what to do next."""

from __future__ import annotations


class AlignError(Exception):
    """A problem the user can fix (bad input, missing tool). The CLI prints it and exits with ``exit_code``."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}: {self.hint}" if self.hint else self.message


class NsysNotFound(AlignError):
    """No usable nsys binary."""


class NsysFailed(AlignError):
    """nsys ran but did not produce what was asked."""

    exit_code = 1


class ServeFailed(AlignError):
    """A served program that never became ready or went away: not bad input, so exit 1."""

    exit_code = 1


class ProfileError(AlignError):
    """A file that is not a readable nsys SQLite export."""
