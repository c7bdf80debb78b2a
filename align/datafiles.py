"""The data files users extend: the op registry (ops), verdict thresholds (verdict), collection grids
(collect) and server presets (serve). One reader and one override rule for all of them.

The rule: the built-in ``align/data/<name>.toml`` first; then one user file, the first of the file
passed (``--ops-file``, ``--config``), the file an environment variable names where there is one
(``$ALIGN_OPS_FILE``), and ``./align-<name>.toml`` in the working folder. A user file extends the
built-in one and wins where both define something; how each kind merges (ops by name, rules in
front, tables key by key) is said where it is loaded.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from align.errors import AlignError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


def builtin(name: str) -> dict:
    """The built-in ``align/data/<name>.toml``."""
    return tomllib.loads(resources.files("align").joinpath(f"data/{name}.toml").read_text())


def local_name(name: str) -> str:
    """The user file looked for in the working folder: ``align-<name>.toml``."""
    return f"align-{name}.toml"


def user_file(name: str, given: str | os.PathLike | None = None, env: str | None = None) -> Path | None:
    """The user file of kind ``name`` by the rule above, or None."""
    chosen = given or (os.environ.get(env) if env else None)
    if chosen:
        return Path(chosen)
    local = Path(local_name(name))
    return local if local.exists() else None


def read_user(path: str | os.PathLike, what: str, hint: str) -> dict:
    """A user's TOML file; unreadable, not UTF-8 or not TOML, it is one line naming it."""
    try:
        return tomllib.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:  # ValueError: TOML syntax, or not UTF-8
        raise AlignError(f"cannot read {what} {path}: {exc}", hint) from None
