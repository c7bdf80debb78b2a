"""User-facing errors: one line saying what went wrong and what to do next."""

from __future__ import annotations

import re
from typing import Callable

# parameters named in an error's text are marked, so each face words them its own way
_MARK = "\x1f"
_MARKED = re.compile(f"{_MARK}([A-Za-z_][A-Za-z0-9_]*){_MARK}([^{_MARK}]*){_MARK}")


def arg(name: str, value: str = "") -> str:
    """A parameter named in an error: ``name=VALUE`` to a Python caller, ``--name VALUE`` once the CLI
    renders it (:meth:`AlignError.render`), so library code never spells CLI flags."""
    return f"{_MARK}{name}{_MARK}{value}{_MARK}"


def render(text: str, flag: Callable[[str, str], str | None] | None = None) -> str:
    """``text`` with its marked parameters as ``flag(name, value)`` words them (a CLI flag), else as
    Python keywords."""
    def one(m: re.Match) -> str:
        name, value = m.group(1), m.group(2)
        return (flag(name, value) if flag else None) or (f"{name}={value}" if value else name)

    return _MARKED.sub(one, text)


class AlignError(Exception):
    """A problem the user can fix (bad input, missing tool). The CLI prints it and exits with ``exit_code``."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.render()

    def __reduce__(self):
        # raised in a Dask worker and re-raised in the client: keep the class and the hint
        return type(self), (self.message, self.hint)

    def render(self, flag: Callable[[str, str], str | None] | None = None) -> str:
        """The one line; ``flag`` words a marked parameter (name, value) as the CLI flag that sets it."""
        text = f"{self.message}: {self.hint}" if self.hint else self.message
        return render(text, flag)


class NsysNotFound(AlignError):
    """No usable nsys binary."""


class NsysFailed(AlignError):
    """nsys ran but did not produce what was asked."""

    exit_code = 1


class ServeFailed(AlignError):
    """A served program that never became ready or went away: not bad input, so exit 1."""

    exit_code = 1


class Interrupted(AlignError):
    """Stopped by Ctrl-C, SIGTERM or SIGHUP, with what was done kept (the message says where): exit 130,
    128 + SIGINT, as a shell reports a program Ctrl-C ended."""

    exit_code = 130


class ClusterLost(AlignError):
    """The Dask scheduler went away mid-run: not bad input, so exit 1."""

    exit_code = 1


class ProfileError(AlignError):
    """A file that is not a readable nsys SQLite export."""


# distributions whose import name differs from their own
IMPORT_NAMES = {"nvidia-ml-py": "pynvml", "sqlite-utils": "sqlite_utils"}


def missing_module(exc: ModuleNotFoundError) -> AlignError:
    """A missing optional dependency as one line naming the extra that installs it (from align's own
    package metadata: the extras of pyproject.toml), or the package where no extra has it."""
    import importlib.metadata as md
    import re

    top = (exc.name or "").split(".")[0]
    extra = None
    try:
        requires = md.metadata("align").get_all("Requires-Dist") or []
    except md.PackageNotFoundError:
        requires = []
    for req in requires:
        m = re.match(r"\s*([A-Za-z0-9_.\-]+).*?extra\s*==\s*['\"]([\w\-]+)['\"]", req)
        if m and m.group(2) != "dev" and IMPORT_NAMES.get(m.group(1), m.group(1).replace("-", "_")) == top:
            extra = m.group(2)
            break
    if extra:
        return AlignError(f"this needs {top}, which is not installed", f"pip install 'align[{extra}]'")
    return AlignError(f"this needs the Python module {top}, which is not installed", f"pip install {top}")
