"""Regexes from users' files, made safe to search kernel names with.

Python's ``re`` backtracks: a repeat around something that repeats and can match the same text
(``(a+)+$``, ``(x+x+)+y``, ``(\\w+\\s?)+$``) takes exponential time on a name it almost matches, and
``align ops`` would hang for hours on one kernel name. Two guards: :func:`backtracks` finds that
shape when a file is loaded (a repeat whose body holds an inner repeat that can be followed by a
character the inner one also matches, so the same text splits many ways), and :class:`Guarded`
searches under a time budget, for what the shape test cannot see (``(a|a)+``, many adjacent repeats).
"""

from __future__ import annotations

import contextlib
import re
import signal
import threading
from collections.abc import Iterator

from align.errors import AlignError

try:  # Python 3.11+
    from re import _compiler as _sre_compile, _constants as _c, _parser as _sre_parse
except ImportError:  # Python 3.10
    import sre_compile as _sre_compile
    import sre_constants as _c
    import sre_parse as _sre_parse

# one search of one name may take this long: a sane pattern takes microseconds on any kernel name
BUDGET_S = 2.0
FIX = ("rewrite it so no text matches it in two ways: no repeat inside a repeat ((a+)+ -> a+, (\\w+\\s?)+ -> "
       "[\\w\\s]+), no overlapping alternatives under a repeat ((\\w|\\d)+ -> \\w+); or make the inner part "
       "possessive (a++) or atomic (?>...)")

_REPEATS = {_c.MAX_REPEAT, _c.MIN_REPEAT}
_NO_BACKTRACK = {getattr(_c, "POSSESSIVE_REPEAT", None), getattr(_c, "ATOMIC_GROUP", None)} - {None}
# the characters a piece of pattern is probed with: printable ASCII and a few non-ASCII word characters
_ALPHABET = tuple(chr(i) for i in range(32, 127)) + ("\t", "\u00e9", "\u00b5", "\u4e00")
_ALL = frozenset(_ALPHABET)


_LEAVES: dict[tuple[str, int], frozenset] = {}


def _leaf(item, flags: int) -> frozenset:
    """The probe characters one single-character item (literal, class, dot) matches."""
    key = (repr(item), flags)
    if key not in _LEAVES:
        state = _sre_parse.State()
        state.flags = flags
        try:
            rx = _sre_compile.compile(_sre_parse.SubPattern(state, [item]), flags)
            _LEAVES[key] = frozenset(ch for ch in _ALPHABET if rx.fullmatch(ch))
        except Exception:  # an item the compiler will not take alone: assume it matches anything
            _LEAVES[key] = _ALL
    return _LEAVES[key]


def _first(seq, flags: int) -> tuple[frozenset, bool]:
    """(characters a match of ``seq`` can start with, whether it can match the empty string)."""
    chars: frozenset = frozenset()
    for item in seq:
        c, empty = _first_item(item, flags)
        chars |= c
        if not empty:
            return chars, False
    return chars, True


def _first_item(item, flags: int) -> tuple[frozenset, bool]:
    op, av = item
    if op in (_c.LITERAL, _c.NOT_LITERAL, _c.ANY, _c.IN):
        return _leaf(item, flags), False
    if op is _c.SUBPATTERN:
        return _first(av[-1], flags)
    if op is _c.BRANCH:
        parts = [_first(alt, flags) for alt in av[1]]
        return frozenset().union(*(p[0] for p in parts)), any(p[1] for p in parts)
    if op in _REPEATS or op is getattr(_c, "POSSESSIVE_REPEAT", None):
        c, empty = _first(av[2], flags)
        return c, empty or av[0] == 0
    if op is getattr(_c, "ATOMIC_GROUP", None):
        return _first(av, flags)
    if op in (_c.AT, _c.ASSERT, _c.ASSERT_NOT):
        return frozenset(), True
    return _ALL, True  # group references and the like: anything


def _ambiguous(seq, follow: frozenset, flags: int):
    """The first repeat directly in ``seq`` (through groups and alternatives) that a character it
    matches can also follow: then a run of such characters splits between them in many ways."""
    items = list(seq)
    for i, (op, av) in enumerate(items):
        rest, rest_empty = _first(items[i + 1:], flags)
        after = rest | (follow if rest_empty else frozenset())
        if op is _c.SUBPATTERN:
            found = _ambiguous(av[-1], after, flags)
        elif op is _c.BRANCH:
            found = next((f for f in (_ambiguous(alt, after, flags) for alt in av[1]) if f is not None), None)
        elif op in _REPEATS and av[1] > 1:
            found = (op, av) if _first(av[2], flags)[0] & after else None
        else:
            found = None
        if found is not None:
            return found
    return None


def _walk(seq):
    """Every item of a parsed pattern, nested ones too (not inside possessive or atomic parts)."""
    for op, av in seq:
        yield op, av
        if op in _NO_BACKTRACK:
            continue
        if op is _c.SUBPATTERN:
            yield from _walk(av[-1])
        elif op is _c.BRANCH:
            for alt in av[1]:
                yield from _walk(alt)
        elif op in _REPEATS:
            yield from _walk(av[2])
        elif op in (_c.ASSERT, _c.ASSERT_NOT):
            yield from _walk(av[1])
        elif op is _c.GROUPREF_EXISTS:
            for part in av[1:]:
                if part is not None:
                    yield from _walk(part)


def backtracks(pattern: str, flags: int = 0) -> bool:
    """Whether ``pattern`` repeats something that itself repeats and can match the same text again
    (the shape that makes ``re`` backtrack exponentially). ``pattern`` must compile."""
    parsed = _sre_parse.parse(pattern, flags)
    flags |= parsed.state.flags
    for op, av in _walk(parsed):
        if op in _REPEATS and av[1] > 1:
            body = av[2]
            if _ambiguous(body, _first(body, flags)[0], flags) is not None:
                return True
    return False


def compile_checked(pattern: object, what: str, where: str, flags: int = 0) -> re.Pattern:
    """``pattern`` compiled, or one line naming ``what`` in ``where``: not a string, not a regex, or
    one that backtracks catastrophically."""
    if not isinstance(pattern, str):
        raise AlignError(f"{what} = {pattern!r:.60} in {where} is not a regex string", "write it in quotes")
    try:
        rx = re.compile(pattern, flags)
    except re.error as exc:
        raise AlignError(f"bad regex in {what} of {where}: {pattern!r} is not a regex ({exc})",
                         "fix the pattern (Python re syntax)") from None
    except (RecursionError, OverflowError):
        raise AlignError(f"bad regex in {what} of {where}: {pattern[:60]!r} is nested too deeply", "simplify it") from None
    if backtracks(pattern, flags):
        raise AlignError(f"{what} in {where}: {pattern!r} repeats a part that itself repeats and can match "
                         "the same text, so a name it nearly matches backtracks for hours", FIX)
    return rx


class _Expired(Exception):
    pass


def _expire(signum, frame):
    raise _Expired


_armed = False  # a budget is running: searches inside it share it


def _can_time() -> bool:
    """A SIGALRM budget works in the main thread, where nobody else is timing with it."""
    return (hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.SIG_IGN, None)
            and signal.getitimer(signal.ITIMER_REAL)[0] == 0)


@contextlib.contextmanager
def budget(what: str) -> Iterator[None]:
    """Searches inside take :data:`BUDGET_S` in all (one timer for, say, every rule tried on one
    kernel name); past it, one line about ``what``. Nested budgets join the outer one; where no timer
    can be used (not the main thread) it times nothing."""
    global _armed
    if _armed or not _can_time():
        yield
        return
    old = signal.signal(signal.SIGALRM, _expire)
    signal.setitimer(signal.ITIMER_REAL, BUDGET_S)
    _armed = True
    try:
        yield
    except _Expired:
        raise AlignError(f"{what} took over {BUDGET_S:g} s: a regex there backtracks catastrophically", FIX) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        _armed = False


class Guarded:
    """A compiled regex whose searches stop after :data:`BUDGET_S` with one line naming it (``what``,
    ``where``), where a timer can be used (the main thread); elsewhere a plain regex."""

    __slots__ = ("_rx", "what", "where")

    def __init__(self, rx: re.Pattern, what: str, where: str):
        self._rx, self.what, self.where = rx, what, where

    def __getattr__(self, name: str):  # pattern, groupindex, flags...; not what pickle looks up before _rx is set
        if name.startswith("__") or name in self.__slots__:
            raise AttributeError(name)
        return getattr(self._rx, name)

    def _timed(self, method, text: str, *args):
        if _armed:  # inside a caller's budget: no timer of its own
            try:
                return method(text, *args)
            except _Expired:
                raise self._expired(text) from None
        with budget(f"{self.what} of {self.where}"):
            try:
                return method(text, *args)
            except _Expired:
                raise self._expired(text) from None

    def _expired(self, text: str) -> AlignError:
        return AlignError(f"{self.what} of {self.where} took over {BUDGET_S:g} s on one name ({text[:60]!r}...): "
                          f"{self._rx.pattern[:120]!r} backtracks catastrophically", FIX)

    def search(self, text: str, *args):
        return self._timed(self._rx.search, text, *args)

    def match(self, text: str, *args):
        return self._timed(self._rx.match, text, *args)

    def fullmatch(self, text: str, *args):
        return self._timed(self._rx.fullmatch, text, *args)
