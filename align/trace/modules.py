"""Module-level tracing: every ``nn.Module`` call of a model, in order, with shapes, depth and time.

Method: a forward pre-hook and a forward hook on every module of the tree (the root included).
The forward hook is registered with ``always_call=True``, so it also runs when ``forward`` raises
and every range opened by the pre-hook is closed again. The pre-hook pushes a frame on a
per-thread stack (the stack's height is the call depth), the forward hook pops it. Calls of
*included* modules (``include``/``exclude``: ``re.search`` on the qualified name or the class
name; exclude wins) get a row in ``calls``, an NVTX range with ``nvtx=True`` (``align.annotate``:
the qualified name without its leading ``model.``, so nsys attributes kernels to modules) and a
``torch.profiler.record_function`` range named by the qualified name with ``profiler=True``.
The root has no qualified name in PyTorch; it is reported under its class name.

Times: ``wall_us`` is CPU ``perf_counter`` time around the call, children and hook overhead
included. GPU work is asynchronous, so on a GPU this is launch time, not kernel time: use
``profiler=True`` for kernel times.

Kernel attribution (``profiler=True``): torch.profiler runs while the block runs and records the
module ranges next to the ops. The profiler attaches each CUDA kernel to the CPU op that launched
it (correlation id); the kernel is attributed to the innermost module range enclosing that op.
Without CUDA kernels (a CPU run) the outermost CPU ops under each module (``aten::linear``, not the
``aten::mm`` nested in it) are attributed instead, with their inclusive CPU time; the ``kind``
column says which (``cuda_kernel`` or ``cpu_op``). The totals of ``summary()`` count every kernel
the profiler linked to a CPU op (as its ``key_averages`` tables do), or every outermost CPU op;
work outside every included module stays unattributed, so per-module sums never exceed them.

One decoder layer (``layer_order``): the first call whose name matches ``layer`` (default
``(^|\\.)layers\\.0$``) or, when none does, the first call of a module that is the first child of
an ``nn.ModuleList``; its order is every recorded call nested in that first call.

CUDA-graph replays and compiled regions run no Python, so their modules are not seen.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import re
import runpy
import sys
import threading
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
from torch import nn
from torch.autograd import DeviceType
from torch.utils.hooks import RemovableHandle

from align.annotate import module_range_name, nvtx_range
from align.errors import AlignError
from align.output import records

DEFAULT_LAYER = r"(^|\.)layers\.0$"
MAX_ITEMS = 8  # elements of a tuple/list/dict described before "...+N"


@dataclass
class _Site:
    """One hooked module: how its calls are named and whether they are recorded."""

    name: str
    cls: str
    recorded: bool
    label: str


@dataclass
class _Call:
    """One recorded call; times are ``perf_counter_ns``, ``end_ns`` is None while it runs."""

    index: int
    name: str
    cls: str
    depth: int
    parent: int
    start_ns: int = 0
    end_ns: int | None = None
    in_shapes: str | None = None
    in_dtypes: str | None = None
    out_shapes: str | None = None
    out_dtypes: str | None = None
    error: str | None = None


@dataclass
class _Frame:
    """An active call on its thread's stack; ``call`` is None for modules that are not recorded."""

    module: nn.Module
    call: _Call | None
    ranges: contextlib.ExitStack | None


def _shape(t: torch.Tensor) -> str:
    return str(tuple(t.shape))


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def describe(value: Any, leaf: Callable[[torch.Tensor], str] = _shape) -> str:
    """Tensors by ``leaf`` (shape or dtype), nested tuples/lists as ``[..]`` and dicts as ``{k: ..}``,
    anything else by its type name: a readable cell, also for HF outputs and caches."""
    if isinstance(value, torch.Tensor):
        return leaf(value)
    if value is None:
        return "None"
    if isinstance(value, dict):
        items = [f"{k}: {describe(v, leaf)}" for k, v in itertools.islice(value.items(), MAX_ITEMS)]
        more = f", ...+{len(value) - MAX_ITEMS}" if len(value) > MAX_ITEMS else ""
        return "{" + ", ".join(items) + more + "}"
    if isinstance(value, (tuple, list)):
        items = [describe(v, leaf) for v in value[:MAX_ITEMS]]
        more = f", ...+{len(value) - MAX_ITEMS}" if len(value) > MAX_ITEMS else ""
        return "[" + ", ".join(items) + more + "]"
    return type(value).__name__


def describe_inputs(args: tuple, kwargs: dict, leaf: Callable[[torch.Tensor], str] = _shape) -> str:
    """Positional arguments, then ``name=...`` for keyword arguments that are not None."""
    parts = [describe(a, leaf) for a in args]
    parts += [f"{k}={describe(v, leaf)}" for k, v in kwargs.items() if v is not None]
    return ", ".join(parts)


def _compile(pattern: str | None, what: str) -> re.Pattern | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise AlignError(f"{what} regex {pattern!r} is invalid ({exc})") from None


class ModuleTrace:
    """The calls recorded by ``modules(...)``; results are complete once the ``with`` block exits."""

    def __init__(self, model: nn.Module | None, *, include: str | None = None, exclude: str | None = None,
                 nvtx: bool = False, shapes: bool = True, profiler: bool = False,
                 layer: str = DEFAULT_LAYER) -> None:
        self.model = model
        self.nvtx = nvtx
        self.shapes = shapes
        self.profiler = profiler
        self._include = _compile(include, "include")
        self._exclude = _compile(exclude, "exclude")
        self._layer = _compile(layer, "layer")
        self.roots: list[str] = []
        self.forwards = 0  # outermost calls: one per model forward
        self._calls: list[_Call] = []
        self._ids = itertools.count()
        self._stacks: dict[int, list[_Frame]] = {}
        self._hooked: dict[int, tuple[nn.Module, _Site, list[RemovableHandle]]] = {}
        self._first_items: set[str] = set()
        self._discovery: RemovableHandle | None = None
        self._prof: torch.profiler.profile | None = None
        self._state = "new"
        self._attributed: list[dict] = []
        self._kernel_totals: dict[str, Any] = {}

    # ---- recording ---------------------------------------------------------------------------
    def __enter__(self) -> ModuleTrace:
        if self._state != "new":
            raise RuntimeError("a ModuleTrace records one block; call modules() again")
        self._state = "active"
        try:
            if self.profiler:
                activities = [torch.profiler.ProfilerActivity.CPU]
                if torch.cuda.is_available():
                    activities.append(torch.profiler.ProfilerActivity.CUDA)
                self._prof = torch.profiler.profile(activities=activities)
                with warnings.catch_warnings():  # "clears events at the end of each cycle": there is one cycle
                    warnings.filterwarnings("ignore", message=".*Profiler clears events")
                    self._prof.start()
            if self.model is not None:
                self.attach(self.model)
            else:
                self._discovery = torch.nn.modules.module.register_module_forward_pre_hook(self._discover)
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()
        if self._prof is not None:
            self._attribute(self._prof.events())

    def _stop(self) -> None:
        """Stop the profiler and remove every hook, whatever happens in between."""
        self._state = "done"
        try:
            if self._prof is not None:
                if torch.cuda.is_available() and torch.cuda.is_initialized():
                    torch.cuda.synchronize()
                self._prof.stop()
        finally:
            if self._discovery is not None:
                self._discovery.remove()
            for _, _, handles in self._hooked.values():
                for handle in handles:
                    handle.remove()
            self._hooked.clear()
            self._stacks.clear()

    def attach(self, root: nn.Module) -> None:
        """Hook every module of ``root``'s tree; modules already hooked (an earlier root inside it) are
        hooked again under their names in this tree."""
        label = type(root).__name__
        if label in self.roots:
            label = f"{label}#{sum(r.split('#')[0] == label for r in self.roots) + 1}"
        self.roots.append(label)
        for qname, module in root.named_modules():
            name = qname or label
            cls = type(module).__name__
            if isinstance(module, nn.ModuleList):
                first = next(iter(module.named_children()), None)
                if first is not None:
                    self._first_items.add(f"{qname}.{first[0]}" if qname else first[0])
            old = self._hooked.pop(id(module), None)
            for handle in old[2] if old else ():
                handle.remove()
            site = _Site(name, cls, self._included(name, cls), module_range_name(name))
            handles = [
                module.register_forward_pre_hook(functools.partial(self._pre, site), with_kwargs=True),
                module.register_forward_hook(functools.partial(self._post, site), with_kwargs=True,
                                             always_call=True),
            ]
            self._hooked[id(module)] = (module, site, handles)

    def _included(self, name: str, cls: str) -> bool:
        def hit(rx: re.Pattern) -> bool:
            return bool(rx.search(name) or rx.search(cls))

        return (self._include is None or hit(self._include)) and not (self._exclude and hit(self._exclude))

    def _stack(self) -> list[_Frame]:
        return self._stacks.setdefault(threading.get_ident(), [])

    def _discover(self, module: nn.Module, args: tuple) -> None:
        """Global pre-hook (``model=None``): the first module called while none is active is a root."""
        if self._stack() or id(module) in self._hooked:
            return
        self.attach(module)
        # the hooks just registered do not run for this call's start (PyTorch listed them already),
        # but its forward hook does: record the start here, the inputs when it ends
        self._pre(self._hooked[id(module)][1], module, args, None)

    def _pre(self, site: _Site, module: nn.Module, args: tuple, kwargs: dict | None) -> None:
        stack = self._stack()
        if not stack:
            self.forwards += 1
        call = ranges = None
        if site.recorded:
            parent = next((f.call.index for f in reversed(stack) if f.call is not None), -1)
            call = _Call(next(self._ids), site.name, site.cls, len(stack), parent)
            if self.shapes and kwargs is not None:
                call.in_shapes = describe_inputs(args, kwargs)
                call.in_dtypes = describe_inputs(args, kwargs, _dtype)
            self._calls.append(call)
            if self.nvtx or self.profiler:
                ranges = contextlib.ExitStack()
                if self.nvtx:
                    ranges.enter_context(nvtx_range(site.label))
                if self.profiler:
                    ranges.enter_context(torch.profiler.record_function(site.name))
            call.start_ns = time.perf_counter_ns()
        stack.append(_Frame(module, call, ranges))

    def _post(self, site: _Site, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        stack = self._stack()
        if not stack or stack[-1].module is not module:
            return  # this call's pre-hook never ran (an earlier pre-hook raised)
        frame = stack.pop()
        call = frame.call
        if call is None:
            return
        call.end_ns = time.perf_counter_ns()
        if frame.ranges is not None:
            frame.ranges.close()
        raised = sys.exc_info()[1]
        if output is None and raised is not None:  # PyTorch runs always_call hooks with None on error
            call.error = type(raised).__name__
        if self.shapes:
            if call.in_shapes is None:
                call.in_shapes = describe_inputs(args, kwargs)
                call.in_dtypes = describe_inputs(args, kwargs, _dtype)
            call.out_shapes = describe(output)
            call.out_dtypes = describe(output, _dtype)

    # ---- kernels -----------------------------------------------------------------------------
    def _attribute(self, events: list) -> None:
        """Per module: the CUDA kernels (or, with none, the outermost CPU ops) under its range."""
        names = {c.name for c in self._calls}
        device = [e for e in events if e.device_type != DeviceType.CPU and not e.is_user_annotation]
        items: list[tuple[str | None, str, float]] = []
        if device:
            kind = "cuda_kernel"
            for e in events:
                if e.device_type == DeviceType.CPU and e.kernels:
                    owner = _enclosing_module(e, names)
                    items += [(owner, k.name, k.duration) for k in e.kernels]
        else:
            kind = "cpu_op"
            items = [(owner, e.name, e.cpu_time_total) for e, owner in _outermost_ops(events, names)]
        total, total_us = len(items), sum(us for _, _, us in items)
        attributed = [(owner, n, us) for owner, n, us in items if owner is not None]
        self._attributed = [{"module": o, "kind": kind, "name": n, "us": us} for o, n, us in attributed]
        self._kernel_totals = {"kernel_kind": kind, "kernels_total": total, "kernels_attributed": len(attributed),
                               "kernel_us_total": round(total_us, 3),
                               "kernel_us_attributed": round(sum(us for _, _, us in attributed), 3)}

    # ---- results -----------------------------------------------------------------------------
    @property
    def calls(self) -> pd.DataFrame:
        """One row per recorded call, in call order; ``parent`` is the enclosing recorded call (-1: none)."""
        shape_cols = ["in_shapes", "in_dtypes", "out_shapes", "out_dtypes"] if self.shapes else []
        cols = ["index", "name", "class", "depth", "parent", *shape_cols, "wall_us", "error"]
        rows = []
        for c in sorted(self._calls, key=lambda c: c.index):
            row = {"index": c.index, "name": c.name, "class": c.cls, "depth": c.depth, "parent": c.parent}
            row.update({k: getattr(c, k) for k in shape_cols})
            row["wall_us"] = (c.end_ns - c.start_ns) / 1e3 if c.end_ns is not None else None
            row["error"] = c.error
            rows.append(row)
        return pd.DataFrame(rows, columns=cols)

    def _grouped(self, keys: list[str]) -> pd.DataFrame:
        calls = self.calls
        g = calls.groupby(keys, sort=False)
        df = g.agg(calls=("index", "size"), wall_ms=("wall_us", "sum")).reset_index()
        df["wall_ms"] = df["wall_ms"] / 1e3
        if keys == ["class"]:
            df.insert(1, "modules", g["name"].nunique().values)
        if self.forwards:
            df.insert(df.columns.get_loc("calls") + 1, "per_forward", df["calls"] / self.forwards)
        return df

    @property
    def by_name(self) -> pd.DataFrame:
        """Calls per module (qualified name), in first-call order; ``wall_ms`` is inclusive."""
        return self._grouped(["name", "class"])

    @property
    def by_class(self) -> pd.DataFrame:
        """Calls per class, most called first; ``modules``: how many distinct modules of that class ran."""
        return self._grouped(["class"]).sort_values("calls", ascending=False, kind="stable").reset_index(drop=True)

    @property
    def layer_name(self) -> str | None:
        """The module whose first call ``layer_order`` shows (see the module docstring for the rule)."""
        call = self._layer_call()
        return call.name if call else None

    def _layer_call(self) -> _Call | None:
        ordered = sorted(self._calls, key=lambda c: c.index)
        match = next((c for c in ordered if self._layer and self._layer.search(c.name)), None)
        return match or next((c for c in ordered if c.name in self._first_items), None)

    @property
    def layer_order(self) -> pd.DataFrame:
        """Every call nested in the first call of one decoder layer, in order; names relative to it."""
        cols = ["step", "name", "class", "depth"] + (["in_shapes", "out_shapes"] if self.shapes else [])
        layer = self._layer_call()
        if layer is None:
            return pd.DataFrame(columns=cols)
        inside = {layer.index}
        rows = []
        for c in sorted(self._calls, key=lambda c: c.index):
            if c.index <= layer.index or c.parent not in inside:
                continue
            inside.add(c.index)
            row = {"step": len(rows) + 1, "name": c.name.removeprefix(layer.name + "."), "class": c.cls,
                   "depth": c.depth - layer.depth}
            if self.shapes:
                row.update(in_shapes=c.in_shapes, out_shapes=c.out_shapes)
            rows.append(row)
        return pd.DataFrame(rows, columns=cols)

    @property
    def kernels(self) -> pd.DataFrame:
        """Per module (``profiler=True``): kernels or CPU ops attributed to it, most time first."""
        cols = ["name", "class", "kind", "count", "total_us", "top"]
        if not self._attributed:
            return pd.DataFrame(columns=cols)
        classes = {c.name: c.cls for c in self._calls}
        rows = []
        df = pd.DataFrame(self._attributed)
        for module, g in df.groupby("module", sort=False):
            top = Counter(g["name"]).most_common(3)
            rows.append({"name": module, "class": classes.get(module), "kind": g["kind"].iloc[0], "count": len(g),
                         "total_us": float(g["us"].sum()), "top": ", ".join(f"{n} x{k}" for n, k in top)})
        return pd.DataFrame(rows, columns=cols).sort_values("total_us", ascending=False, kind="stable") \
            .reset_index(drop=True)

    @property
    def kernels_by_name(self) -> pd.DataFrame:
        """Per module and kernel (or CPU op) name: which kernels each module launches."""
        cols = ["module", "kind", "name", "count", "total_us"]
        if not self._attributed:
            return pd.DataFrame(columns=cols)
        df = pd.DataFrame(self._attributed)
        return (df.groupby(["module", "kind", "name"], sort=False).agg(count=("us", "size"), total_us=("us", "sum"))
                .reset_index()[cols])

    def summary(self) -> dict[str, Any]:
        """Counts for a first look; with ``profiler=True`` also the kernel totals attributed or not."""
        calls = self.calls
        data: dict[str, Any] = {
            "roots": ", ".join(self.roots), "forwards": self.forwards, "calls": len(calls),
            "modules": int(calls["name"].nunique()), "classes": int(calls["class"].nunique()),
            "errors": int(calls["error"].notna().sum()), "layer": self.layer_name,
        }
        if self.profiler:
            data.update(self._kernel_totals)
        return data

    def to_dict(self, calls: bool = True, limit: int | None = None) -> dict[str, Any]:
        """Everything as JSON-ready lists of records; ``limit`` cuts every table to its first rows."""
        def cut(df: pd.DataFrame) -> list[dict]:
            return records(df if limit is None else df.head(limit))

        data: dict[str, Any] = {"summary": self.summary(), "by_class": cut(self.by_class), "by_name": cut(self.by_name),
                                "layer_order": cut(self.layer_order)}
        if self.profiler:
            data["kernels"] = cut(self.kernels)
            data["kernels_by_name"] = cut(self.kernels_by_name)
        if calls:
            data["calls"] = cut(self.calls)
        return data

    def to_json(self, calls: bool = True, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(calls=calls), indent=indent)


def _enclosing_module(event: Any, names: set[str]) -> str | None:
    """The innermost module range at or above a profiler event (on its thread)."""
    e = event
    while e is not None:
        if e.is_user_annotation and e.name in names:
            return e.name
        e = e.cpu_parent
    return None


def _outermost_ops(events: list, names: set[str]) -> Iterator[tuple[Any, str | None]]:
    """CPU ops not nested in another op (other annotations are looked through), with their module."""
    for e in events:
        if e.device_type != DeviceType.CPU or e.is_user_annotation or e.is_async:
            continue
        p = e.cpu_parent
        while p is not None and p.is_user_annotation and p.name not in names:
            p = p.cpu_parent
        if p is None:
            yield e, None
        elif p.is_user_annotation:
            yield e, p.name


def modules(model: nn.Module | None, *, include: str | None = None, exclude: str | None = None,
            nvtx: bool = False, shapes: bool = True, profiler: bool = False,
            layer: str = DEFAULT_LAYER) -> ModuleTrace:
    """Trace every module call of ``model`` inside a ``with`` block::

        with modules(model, profiler=True) as t:
            model(tokens)
        t.by_class, t.layer_order, t.kernels

    ``model=None`` traces every module tree the block calls: the first module called while none is
    active becomes a root (a global pre-hook finds it), so a script needs no change. ``include`` /
    ``exclude``: regexes on qualified name or class name; ``nvtx``: an NVTX range per included
    module; ``shapes=False`` skips describing inputs and outputs; ``profiler``: kernels per module;
    ``layer``: regex of the decoder layer ``layer_order`` shows. Hooks are removed on exit, also
    when the block raises.
    """
    return ModuleTrace(model, include=include, exclude=exclude, nvtx=nvtx, shapes=shapes, profiler=profiler,
                       layer=layer)


def _is_python(arg: str) -> bool:
    return arg == sys.executable or re.fullmatch(r"python(\d+(\.\d+)?)?", Path(arg).name) is not None


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """The program's output goes to stderr, so align's stdout carries only the report (JSON stays
    parseable); the file descriptor too, for output written below Python."""
    sys.stdout.flush()
    saved = None
    try:
        fd = sys.stdout.fileno()
        saved = os.dup(fd)
        os.dup2(sys.stderr.fileno(), fd)
    except (AttributeError, OSError, ValueError):  # no real file descriptors (a test runner's capture)
        saved = None
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
            sys.stderr.flush()
    finally:
        if saved is not None:
            os.dup2(saved, fd)
            os.close(saved)


def run_script(command: list[str], *, stdout_to_stderr: bool = True, **options: Any) -> tuple[ModuleTrace, int]:
    """Run ``[python] script.py ARGS`` or ``[python] -m module ARGS`` in this process under
    ``modules(None, **options)``: every model the program calls is traced, the program unchanged.

    Returns the trace and the program's exit status; if it raised, its traceback went to stderr
    and the status is 1."""
    argv = list(command)
    if argv and _is_python(argv[0]):
        argv = argv[1:]
    if not argv or (argv[0] == "-m" and len(argv) < 2):
        raise AlignError("no program to trace", "give it after --: align trace modules -- python script.py ARGS")
    if argv[0] != "-m" and not Path(argv[0]).is_file():
        raise AlignError(f"no such script: {argv[0]}", "give a Python file, or -m MODULE")
    trace = modules(None, **options)
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    code = 0
    try:
        with (_stdout_to_stderr() if stdout_to_stderr else contextlib.nullcontext()), trace:
            try:
                if argv[0] == "-m":
                    sys.argv = argv[1:]
                    sys.path.insert(0, os.getcwd())
                    runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
                else:
                    sys.argv = argv
                    sys.path.insert(0, str(Path(argv[0]).resolve().parent))
                    runpy.run_path(argv[0], run_name="__main__")
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if isinstance(exc.code, str):
                    print(exc.code, file=sys.stderr)
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = saved_argv
        sys.path[:] = saved_path
    return trace, code
