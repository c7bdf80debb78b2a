"""One side of a comparison as the user names it: which profile, which ranges hold the op, how its
ranges map to phases, which process. diff, verdict and report take two of these."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from align.errors import AlignError, arg


@dataclass(frozen=True)
class ProfileSide:
    """``profile``: a path, a store name or an opened :class:`align.Profile`; ``range``: an NVTX regex
    around the op (default: the registry's patterns or verdict.toml's conventions); ``phase_map``:
    (range regex, phase) pairs; ``select``: {pid, device, rank} keeping one process."""

    profile: object
    range: str | None = None
    phase_map: tuple[tuple[str, str], ...] | None = None
    select: dict | None = None
    label: str = ""


def as_side(given, label: str, range: str | None = None, phase_map=None, select: dict | None = None
            ) -> ProfileSide:
    """``given`` (a reference or a :class:`ProfileSide`) with the per-side keyword shorthands folded in;
    a setting given both ways is an error rather than a silent pick."""
    loose = {"range": range, "phase_map": tuple(map(tuple, phase_map)) if phase_map else None,
             "select": {k: v for k, v in (select or {}).items() if v is not None} or None}
    if isinstance(given, ProfileSide):
        both = [k for k, v in loose.items() if v is not None and getattr(given, k) is not None]
        if both:
            names = ", ".join(arg(f"{label}_{k}" if k != "select" else f"{label}_select") for k in both)
            raise AlignError(f"the {label} side sets {', '.join(both)} itself and again through {names}",
                             "set it in one place")
        chosen = {k: v for k, v in loose.items() if v is not None}
        return replace(given, label=label, **chosen)
    if given is None:
        raise AlignError(f"no {label} profile given", f"pass {arg(label, 'PROFILE')}")
    if not isinstance(given, (str, os.PathLike)) and type(given).__name__ != "Profile":
        raise AlignError(f"the {label} side is a {type(given).__name__}",
                         "pass a path, a store name, an align.Profile or an align.ProfileSide")
    return ProfileSide(profile=given, label=label, **loose)
