"""The ``align`` command: a thin typer layer over the library; every table is also ``--format csv|json``."""

from __future__ import annotations

import enum
import errno
import functools
import inspect
import io
import os
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import click
import typer

from align.errors import AlignError
from align.output import Format, LazyConsole, pick, print_dict, print_frame, records, set_view, stdout

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Check a mock layer against the end-to-end run, from Nsight Systems profiles.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from align import __version__

        sys.stdout.write(f"align {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print align's version and exit")) -> None:
    """Check a mock layer against the end-to-end run, from Nsight Systems profiles."""


profile_app = typer.Typer(help="Run a command under nsys into the profile store and export it to SQLite.",
                          no_args_is_help=True)
app.add_typer(profile_app, name="profile")

err = LazyConsole(stderr=True, highlight=False, soft_wrap=True)

FormatOpt = typer.Option(Format.table, "--format", "-f", help="table, csv or json")
WideOpt = typer.Option(False, "--wide", help="table: every column and whole names, past the terminal's width")
ColumnsOpt = typer.Option(None, "--columns", metavar="A,B,...", help="only these columns of the main table, "
                                                                    "in this order (every format)")
PidOpt = typer.Option(None, "--pid", help="only this process (see align processes)")
SchedulerOpt = typer.Option(None, "--scheduler", metavar="ADDRESS",
                            help="Dask scheduler that runs one task per report (default: $ALIGN_SCHEDULER, else a "
                                 "local cluster when there are several reports)")
WorkersOpt = typer.Option(None, "--workers", help="local cluster size: worker processes (default: one per CPU, at most "
                                                  "one per report)")
DeviceOpt = typer.Option(None, "--device", help="only this GPU")
RankOpt = typer.Option(None, "--rank", help="only this rank (the process on GPU RANK)")
StoreOpt = typer.Option(None, "--store", help="profile store folder (default: $ALIGN_STORE or ./profiles)",
                        show_default=False)
# options of the mock-vs-E2E commands (diff, verdict, report)
MockRangeOpt = typer.Option(None, "--mock-range", help="NVTX ranges holding the op in the mock")
E2ERangeOpt = typer.Option(None, "--e2e-range", help="NVTX ranges holding the op in the E2E run")
PairSkipOpt = typer.Option(0, "--skip", help="drop the first N forwards of each phase on both sides")
PairPhaseOpt = typer.Option(None, "--phase", help="compare only this phase (context, generation or mixed); "
                                                  "it must be among the phases paired")
ThresholdsOpt = typer.Option(None, "--config", help="thresholds (TOML, see align/data/verdict.toml)")
OpsFileOpt = typer.Option(None, "--ops-file", help="user op registry")
MockPhaseOpt = typer.Option([], "--mock-phase", metavar="REGEX=PHASE",
                            help="mock ranges matching REGEX hold PHASE (context, generation, mixed); repeatable")
E2EPhaseOpt = typer.Option([], "--e2e-phase", metavar="REGEX=PHASE",
                           help="E2E ranges matching REGEX hold PHASE; decides before any other evidence; repeatable")
PhaseMapOpt = typer.Option(None, "--phase-map", help="TOML with [mock] and [e2e] tables of REGEX = PHASE")
E2EPidOpt = typer.Option(None, "--pid", help="E2E side: only this process")
E2EDeviceOpt = typer.Option(None, "--device", help="E2E side: only this GPU")
E2ERankOpt = typer.Option(None, "--rank", help="E2E side: only this rank, or all (every rank, compared one by one "
                                                 "and summarised: spread across ranks, the outlier rank)")
# verdict and report: known differences, judged harmless
AcceptOpt = typer.Option([], "--accept", metavar="FAMILY",
                         help="a known difference judged harmless: this kernel family (or PHASE:FAMILY) leaves the "
                              "checks and is listed (repeatable; needs --reason)")
ReasonOpt = typer.Option(None, "--reason", help="why the --accept families are harmless (recorded)")
# every mock-vs-E2E command (diff, verdict, report) takes these, declared once: (name, annotation, option)
PAIR_OPTIONS = [
    ("phase", "Optional[str]", PairPhaseOpt), ("mock_range", "Optional[str]", MockRangeOpt),
    ("e2e_range", "Optional[str]", E2ERangeOpt), ("skip", "int", PairSkipOpt),
    ("mock_phase", "list[str]", MockPhaseOpt), ("e2e_phase", "list[str]", E2EPhaseOpt),
    ("phase_map", "Optional[Path]", PhaseMapOpt), ("config", "Optional[Path]", ThresholdsOpt),
    ("ops_file", "Optional[Path]", OpsFileOpt), ("pid", "Optional[int]", E2EPidOpt),
    ("device", "Optional[int]", E2EDeviceOpt), ("rank", "Optional[str]", E2ERankOpt),
    ("store", "Optional[Path]", StoreOpt),
]


@dataclass
class PairArgs:
    """What the shared options asked for, as the library's keyword arguments (:meth:`compare_kwargs`)."""

    phase: Optional[str]
    mock_range: Optional[str]
    e2e_range: Optional[str]
    skip: int
    mock_phase: list
    e2e_phase: list
    phase_map: Optional[Path]
    config: Optional[Path]
    ops_file: Optional[Path]
    pid: Optional[int]
    device: Optional[int]
    rank: Optional[str]
    store: Optional[Path]

    def compare_kwargs(self) -> dict:
        rank = self.rank
        if rank is not None and rank != "all":
            if not rank.strip().lstrip("-").isdigit():
                raise AlignError(f"--rank {rank!r} is neither a rank number nor all", "pass --rank 0, --rank 1, ... or --rank all")
            rank = int(rank)
        return {"phase": self.phase, "mock_range": self.mock_range, "e2e_range": self.e2e_range, "skip": self.skip,
                "config": self.config, "ops_file": self.ops_file, "store": _store(self.store),
                "e2e_select": {"pid": self.pid, "device": self.device, "rank": rank},
                **_phase_maps(self.mock_phase, self.e2e_phase, self.phase_map)}


def with_pair_options(fn):
    """Give a command the shared mock-vs-E2E options (PAIR_OPTIONS), gathered into its ``pair``
    argument, so diff, verdict and report cannot drift apart."""
    sig = inspect.signature(fn)
    own = [q for q in sig.parameters.values() if q.name != "pair"]
    shared = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=opt, annotation=ann)
              for name, ann, opt in PAIR_OPTIONS]

    @functools.wraps(fn)
    def command(*args, **kwargs):
        pair = PairArgs(**{name: kwargs.pop(name) for name, _, _ in PAIR_OPTIONS})
        return fn(*args, pair=pair, **kwargs)

    command.__signature__ = sig.replace(parameters=own + shared)
    command.__annotations__ = {**{k: v for k, v in fn.__annotations__.items() if k != "pair"},
                               **{name: ann for name, ann, _ in PAIR_OPTIONS}}
    return command


class CommandAfterDashes(typer.core.TyperCommand):
    """Splits ``... -- CMD ARGS`` before parsing, so the profiled command's own flags stay its own."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            i = args.index("--")
            ctx.meta["align_cmd"] = args[i + 1:]
            args = args[:i]
        else:
            ctx.meta["align_cmd"] = None
        return super().parse_args(ctx, args)


def _store(store: Optional[Path]):
    from align.store import Store

    return Store(store)


def _reports(refs: list[str], store: Optional[Path], scheduler: Optional[str]) -> tuple[Optional[str], Optional[list[str]]]:
    """(ref, None) for one report answered in this process as ever; (None, paths) for several (or
    with a Dask scheduler): the exports ``refs`` name, folders and globs expanded."""
    from align.scale.cluster import scheduler_address
    from align.scale.reports import expand, kind

    local = scheduler_address(scheduler) is None
    if local and len(refs) == 1 and kind(refs[0]) == "one":
        return refs[0], None
    paths = expand(refs, _store(store))
    return (paths[0], None) if local and len(paths) == 1 else (None, paths)


def _dask(scheduler: Optional[str], workers: Optional[int], fmt) -> dict:
    """The Dask keywords of align.scale's functions, with a progress line on a table's stderr."""
    def progress(done: int, total: int) -> None:
        err.print(f"reports {done}/{total}", end="\n" if done == total else "\r", markup=False)

    return {"scheduler": scheduler, "workers": workers, "progress": progress if fmt == Format.table else None}


def _print_many(many, fmt, title: str, limit: Optional[int], header: Optional[dict] = None, max_width: int = 70,
                optional: Optional[list[str]] = None) -> None:
    """Several reports' answer: the ALL rows, then each report's (``--limit`` rows of each)."""
    df = many.table(limit)
    print_frame(df, fmt, title=f"{title}: {len(many.reports)} reports (ALL: all together)",
                csv_frame=df.rename(columns={"report": "Report", **(header or {})}), max_width=max_width,
                optional=optional)


def _phase_maps(mock_phase: list[str], e2e_phase: list[str], phase_map: Optional[Path]) -> dict:
    """--mock-phase/--e2e-phase REGEX=PHASE and --phase-map FILE as compare()'s mock_phase/e2e_phase."""
    from align.compare.diff import read_phase_map

    out = read_phase_map(phase_map) if phase_map else {"mock": [], "e2e": []}
    for side, given in (("mock", mock_phase), ("e2e", e2e_phase)):
        for item in given:
            rx, sep, ph = item.rpartition("=")
            if not sep or not rx:
                raise AlignError(f"--{side}-phase {item!r} is not REGEX=PHASE", "e.g. --e2e-phase 'prefill=context'")
            out[side].append((rx, ph.strip()))
    return {"mock_phase": out["mock"] or None, "e2e_phase": out["e2e"] or None}


def _accepts(families: list[str], reason: str | None) -> dict[str, str] | None:
    """--accept FAMILY ... --reason TEXT as the library's {family: reason}."""
    if not families:
        if reason is not None:
            raise AlignError("--reason explains --accept", "add --accept FAMILY (the kernel family, as align diff names it)")
        return None
    if not reason or not reason.strip():
        raise AlignError("--accept needs --reason", 'say why the difference is harmless: --reason "input preparation"')
    return {f: reason for f in families}


def _say_pairing(cmp, table: bool, details: bool = True) -> None:
    """What was compared with what: the op (when inferred) and the pairing of phases, as a table on
    stdout in table format, else as lines on stderr (stdout stays what a script parses); with
    ``details``, comparability, launch mode, ranks and launch shapes as lines on stderr too (a report
    has them on its page)."""
    from align.compare.verdict import pairing_lines, pairing_view

    if cmp.op_reason:
        err.print(cmp.op_reason, markup=False)
    if details:
        _say_details(cmp)
    if table:
        print_frame(pairing_view(cmp.pairing.table), Format.table, title="pairing: mock phases and E2E forwards",
                    max_width=70, main=False)
    else:
        for line in pairing_lines(cmp.pairing.table):
            err.print(f"pairing: {line}", markup=False)


def _say_details(cmp) -> None:
    """Comparability, launch mode, ranks and the families launched with other shapes, on stderr."""
    from align.compare.verdict import rank_lines

    if cmp.comparability is not None:
        err.print(cmp.comparability.line(), markup=False)
        for w in cmp.comparability.warnings:
            err.print(f"comparability: WARNING {w}", markup=False)
    for r in cmp.launch.to_dict(orient="records"):
        err.print(f"launch: {r['phase']}: {'same, ' if r['same'] else 'DIFFERS: '}mock {r['mock']}, E2E {r['e2e']}",
                  markup=False)
    for line in rank_lines(cmp.ranks):
        err.print(f"ranks: {line}", markup=False)
    shapes = cmp.shapes
    differ = shapes[~shapes["same"].astype(bool)].to_dict(orient="records") if len(shapes) else []
    other = [r for r in differ if r["cause"].startswith("another kernel instantiation")]
    differ = [r for r in differ if r not in other]
    if other:
        names = ", ".join(f"{r['phase']}:{r['family']}" for r in other[:4]) + (f" and {len(other) - 4} more"
                                                                               if len(other) > 4 else "")
        err.print(f"shapes: {len(other)} families launched as other instantiations (their names differ: dtype, "
                  f"tile, vector width or variant): {names}", markup=False)
    for r in differ[:10]:
        err.print(f"shapes: {r['phase']}: {r['family']}: {r['cause']}", markup=False)
    if len(differ) > 10:
        err.print(f"shapes: {len(differ) - 10} more families launched with other shapes (see the report)", markup=False)


# ---- nsys ----------------------------------------------------------------------------------
@app.command()
def doctor(fmt: Format = FormatOpt) -> None:
    """Which nsys align will use, its version, and whether it can turn captures into reports."""
    from align.capture.discover import discover

    info = discover()
    data = info.to_dict()
    print_dict(data, fmt, title="nsys")
    if not info.can_import and fmt == Format.table:
        err.print(f"[yellow]warning:[/] {info.import_problem}; align will run the importer itself")


# ---- profile -------------------------------------------------------------------------------
def _profile(kind: str, ctx: typer.Context, name, op, store, trace, sample, cpuctxsw, cuda_graph_trace, capture_range,
             nvtx_capture, capture_range_end, delay, duration, overwrite, quiet, fmt, serve=None,
             planted: str | None = None) -> None:
    from align.capture.launch import ProfileOptions, profile

    cmd = ctx.meta.get("align_cmd")
    extra = list(ctx.args)
    if cmd is None:
        cmd, extra = extra, []
        if cmd and cmd[0].startswith("-"):
            raise AlignError(f"unknown option {cmd[0]}", "put nsys flags before -- and the command after it")
    serving = serve is not None and serve["serve"]
    if serve is not None and not serving and (serve["preset"] or serve["load"] or serve["ready_url"]):
        raise AlignError("--preset/--load/--ready-url belong to --serve", "add --serve")
    wide = "system-wide" if serving else "none"
    options = ProfileOptions(trace=trace or ("cuda,nvtx,osrt" if serving else "cuda,nvtx"), sample=sample or wide,
                             cpuctxsw=cpuctxsw or wide, cuda_graph_trace=cuda_graph_trace,
                             capture_range=capture_range, nvtx_capture=nvtx_capture,
                             capture_range_end=capture_range_end, delay=delay, duration=duration, extra=extra)
    if planted is not None and (serving or not planted.strip()):
        raise AlignError("--planted names what a test capture planted", 'e.g. --planted "8 requests where the E2E '
                         'run has 4" (not with --serve)')
    if serving:
        result = _serve(cmd, serve, options, name, op, store, overwrite, quiet or fmt != Format.table)
    else:
        result = profile(cmd, kind=kind, name=name, store=_store(store), options=options, overwrite=overwrite,
                         quiet=quiet or fmt != Format.table, op=op, planted=planted)
    if result.meta.get("warning"):
        err.print(f"align: warning: {result.meta['warning']}", markup=False)
    stopped = result.status == "interrupted"
    if fmt != Format.table:
        print_dict(result.meta, fmt)
    elif not stopped:
        err.print(f"[green]saved[/] {result.path} [dim](status {result.status}, exit code {result.exit_code})[/]")
        if result.meta.get("ended_by") == "duration":
            err.print(f"[dim]nsys ended the program when --duration {result.meta['options']['duration']:g} ran out, "
                      "as asked[/]")
        if result.sqlite:
            err.print(f"next: align {_next_command(result.meta)} {result.path}", markup=False)
    if stopped:
        from align.capture.launch import stopped_line
        from align.errors import Interrupted

        raise Interrupted(stopped_line(result))
    if result.status == "app-failed":
        err.print(f"align: the profiled command exited with {result.exit_code}; its profile was kept")
        raise typer.Exit(1)
    if serving and result.status != "ok":
        err.print(f"align: serving profile ended with status {result.status}; report and logs kept in {result.path}")
        raise typer.Exit(1)


def _next_command(meta: dict) -> str:
    """A command that has something to show for this capture (meta.json says what it holds)."""
    holds = meta.get("holds") or {}
    return "kernels" if holds.get("kernels") else "nvtx" if holds.get("nvtx") else "info"


def _serve(cmd, serve: dict, options, name, op, store, overwrite, quiet):
    from align.capture.load import LoadSpec
    from align.capture.serve import ServeOptions, preset_command, profile_serve

    env, endpoint, port, ready_url = {}, "/v1/completions", serve["port"], serve["ready_url"]
    if serve["preset"]:
        if cmd:
            raise AlignError("--preset builds the server command", "drop the command after --, or drop --preset")
        cmd, p = preset_command(serve["preset"], serve["model"], serve["tp"], port)
        port, endpoint, env = p["port"], p["endpoint"], p["env"]
        ready_url = ready_url or f"http://127.0.0.1:{port}{p['ready']}"
    load = None if serve["load"] == "none" else LoadSpec.parse(serve["load"], endpoint=endpoint,
                                                             model=serve["model"] or "default")
    so = ServeOptions(delay=options.delay if options.delay is not None else 30.0,
                      duration=options.duration if options.duration is not None else 20.0,
                      ready_url=ready_url, ready_timeout=serve["ready_timeout"], load=load, port=port, env=env,
                      report_timeout=serve["report_timeout"])
    return profile_serve(cmd, so, name=name, store=_store(store), options=options, overwrite=overwrite, quiet=quiet,
                         op=op)


def _profile_command(kind: str, doc: str):
    server_only = kind != "e2e"  # the serving options exist for e2e only: hidden from mock/aux help

    @profile_app.command(kind, cls=CommandAfterDashes, help=doc,
                         context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def command(
        ctx: typer.Context,
        name: Optional[str] = typer.Option(None, "--name", "-n", help="store entry name (default: KIND-TIMESTAMP)"),
        op: Optional[str] = typer.Option(None, "--op", help="the op this profile is for (align verdict --op finds it)"),
        planted: Optional[str] = typer.Option(None, "--planted", help="what this capture planted to test the checks "
                                                                      "(recorded; never taken as the newest pair)"),
        store: Optional[Path] = StoreOpt,
        trace: Optional[str] = typer.Option(None, "--trace", "-t",
                                            help="nsys --trace (default cuda,nvtx; with --serve cuda,nvtx,osrt)"),
        sample: Optional[str] = typer.Option(None, "--sample", "-s",
                                             help="CPU sampling (default none; with --serve system-wide)"),
        cpuctxsw: Optional[str] = typer.Option(None, "--cpuctxsw", help="default none; with --serve system-wide"),
        cuda_graph_trace: str = typer.Option("node", "--cuda-graph-trace", help="graph or node"),
        capture_range: Optional[str] = typer.Option(None, "--capture-range", "-c",
                                                    help="none, cudaProfilerApi or nvtx"),
        nvtx_capture: Optional[str] = typer.Option(None, "--nvtx-capture", "-p",
                                                   help="NVTX range that starts the capture (NAME or NAME@DOMAIN)"),
        capture_range_end: Optional[str] = typer.Option(None, "--capture-range-end", help="nsys --capture-range-end"),
        delay: Optional[float] = typer.Option(None, "--delay", "-y", help="seconds before collection starts"),
        duration: Optional[float] = typer.Option(None, "--duration", "-d", help="seconds of collection"),
        overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing entry of that name"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="do not echo the program's output"),
        serve: bool = typer.Option(False, "--serve", help="a multi-process server, system-wide, under load",
                                   hidden=server_only),
        preset: Optional[str] = typer.Option(None, "--preset", help="trtllm, vllm, sglang, transformers, transformers-cb (serve.toml)",
                                             hidden=server_only),
        model: Optional[str] = typer.Option(None, "--model", help="model for --preset and the load's model field",
                                            hidden=server_only),
        tp: int = typer.Option(1, "--tp", help="tensor parallelism for --preset", hidden=server_only),
        port: Optional[int] = typer.Option(None, "--port", help="the server's port (checked free first)",
                                           hidden=server_only),
        ready_url: Optional[str] = typer.Option(None, "--ready-url", help="polled until 200 (default :PORT/health)",
                                                hidden=server_only),
        ready_timeout: float = typer.Option(900.0, "--ready-timeout", help="seconds to wait for readiness",
                                            hidden=server_only),
        report_timeout: float = typer.Option(300.0, "--report-timeout",
                                             help="seconds after the window for nsys to stop the server and write",
                                             hidden=server_only),
        load: Optional[str] = typer.Option(None, "--load", help="requests=N,concurrency=C,input=I,output=O,"
                                                               "endpoint=completions|chat (or none)",
                                                               hidden=server_only),
        fmt: Format = FormatOpt,
    ) -> None:
        if serve and kind != "e2e":
            raise AlignError("--serve profiles an E2E server", "use align profile e2e --serve")
        _profile(kind, ctx, name, op, store, trace, sample, cpuctxsw, cuda_graph_trace, capture_range, nvtx_capture,
                 capture_range_end, delay, duration, overwrite, quiet, fmt,
                 serve={"serve": serve, "preset": preset, "model": model, "tp": tp, "port": port, "ready_url": ready_url,
                        "ready_timeout": ready_timeout, "report_timeout": report_timeout, "load": load},
                 planted=planted)

    return command


_profile_command("mock", "Profile a mock-layer script: align profile mock [OPTIONS] [NSYS FLAGS] -- CMD ...")
_profile_command("e2e", "Profile a single-process end-to-end run: align profile e2e [OPTIONS] [NSYS FLAGS] -- CMD ...")
_profile_command("aux", "Profile an auxiliary run (a module trace, a tool): kept in the store, never picked as a "
                        "mock or E2E side by align verdict --op: align profile aux [OPTIONS] -- CMD ...")


@app.command()
def profiles(store: Optional[Path] = StoreOpt, fmt: Format = FormatOpt, wide: bool = WideOpt,
             columns: Optional[str] = ColumnsOpt) -> None:
    """List the profiles in the store."""
    set_view(wide, columns)
    s = _store(store)
    df = s.rows()
    if not len(df) and fmt == Format.table:
        err.print(f"no profiles in {s.root}; capture one with: align profile mock -- python my_mock.py")
        return
    print_frame(df, fmt, title=f"profiles in {s.root}", max_width=60,
                optional=["start_time", "command", "nsys_version", "sqlite", "exit_code"])


@app.command()
def export(
    report: Path = typer.Argument(..., help=".nsys-rep (or a .qdstrm nsys left behind)"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="SQLite file (default: next to the report)"),
) -> None:
    """Export one report to SQLite."""
    from align.capture.run import ChildStopped
    from align.files import check_target
    from align.loader import export as do_export

    if not report.exists():
        raise AlignError(f"{report}: no such file", "pass an existing .nsys-rep")
    if output:
        check_target(output, "--output")
    try:
        out = do_export(report, output, quiet=False)
    except ChildStopped as exc:
        from align.errors import Interrupted

        target = output or report.with_suffix(".sqlite")
        raise Interrupted(f"interrupted ({exc.signal}): {report} was not exported",
                          f"{target} is as it was" if target.exists() else "nothing was written") from None
    err.print(f"[green]wrote[/] {out}")


# ---- reading -------------------------------------------------------------------------------
@app.command()
def info(profile: str = typer.Argument(..., help="profile file or store name"), store: Optional[Path] = StoreOpt,
         fmt: Format = FormatOpt) -> None:
    """What a profile holds: nsys and schema versions, row counts, GPUs, processes."""
    from align.loader import load

    with load(profile, _store(store)) as p:
        data = p.summary()
        print_dict(data, fmt, title=str(p.path))
        if not p.has_kernels and fmt == Format.table:
            err.print("no CUDA kernels in this profile (CPU-only capture, or CUDA not traced)")


TABLES = ("kernels", "nvtx", "api", "graph-nodes", "gpus", "processes", "threads")


@app.command()
def events(
    profile: str = typer.Argument(..., help="profile file or store name"),
    kind: str = typer.Option("kernels", "--kind", "-k", help=", ".join(TABLES)),
    limit: Optional[int] = typer.Option(50, "--limit", "-l", min=0, help="rows to print (0: all)"),
    store: Optional[Path] = StoreOpt,
    fmt: Format = FormatOpt,
    wide: bool = WideOpt,
    columns: Optional[str] = ColumnsOpt,
) -> None:
    """Dump one decoded table of a profile (what align.load(...).<kind>() returns)."""
    set_view(wide, columns)
    from align.loader import load

    if kind not in TABLES:
        raise AlignError(f"unknown kind {kind!r}", f"use one of {', '.join(TABLES)}")
    with load(profile, _store(store)) as p:
        if kind in ("kernels", "api"):  # the first rows straight from SQLite, without pandas
            df = (p.kernel_rows if kind == "kernels" else p.cuda_api_rows)(limit=limit or None)
        else:
            df = {"nvtx": p.nvtx, "graph-nodes": p.graph_nodes, "gpus": p.gpus, "processes": p.processes,
                  "threads": p.threads}[kind]()
    if limit:
        df = df.head(limit)
    print_frame(df, fmt, title=f"{kind} ({len(df)} rows shown)", max_width=60)


@app.command()
def kernels(
    profiles: list[str] = typer.Argument(..., metavar="PROFILE...",
                                         help="profile files or store names; several, a folder or a glob: one Dask "
                                              "task each, combined"),
    name: str = typer.Option("demangled", "--name", help="demangled (nsys default), short or mangled"),
    by_launch: bool = typer.Option(False, "--by-launch", help="also group by grid and block (as nsys 2022.4 did)"),
    sort: str = typer.Option("total", "--sort", help="total, instances, avg, med, min, max, stddev or name"),
    limit: Optional[int] = typer.Option(None, "--limit", "-l", min=0, help="print only the first N rows (0: all)"),
    pid: Optional[int] = PidOpt,
    device: Optional[int] = DeviceOpt,
    rank: Optional[int] = RankOpt,
    scheduler: Optional[str] = SchedulerOpt,
    workers: Optional[int] = WorkersOpt,
    store: Optional[Path] = StoreOpt,
    fmt: Format = FormatOpt,
    wide: bool = WideOpt,
    columns: Optional[str] = ColumnsOpt,
) -> None:
    """Per-kernel summary: the numbers of nsys stats --report cuda_gpu_kern_sum (of several reports:
    each one's, and ALL of them together)."""
    set_view(wide, columns)
    from align.loader import load
    from align.profile.processes import gpu_filter
    from align.stats.kernels import NSYS_CSV_HEADER, kernel_rows, to_nsys_csv_frame

    profile, many = _reports(profiles, store, scheduler)
    if many is not None:
        from align.scale.analyses import kernels_many

        res = kernels_many(many, name=name, by_launch=by_launch, sort=sort,
                           select={"pid": pid, "device": device, "rank": rank}, **_dask(scheduler, workers, fmt))
        _print_many(res, fmt, "CUDA GPU kernel summary", limit, NSYS_CSV_HEADER, max_width=90)
        return
    with load(profile, _store(store)) as p:
        df = kernel_rows(p.require("kernels"), name=name, by_launch=by_launch, sort=sort, limit=limit,
                         where=gpu_filter(p, pid=pid, device=device, rank=rank))
    print_frame(df, fmt, title=f"CUDA GPU kernel summary: {profile}", csv_frame=to_nsys_csv_frame(df), max_width=90)


@app.command()
def processes(profile: str = typer.Argument(..., help="profile file or store name"), store: Optional[Path] = StoreOpt,
              fmt: Format = FormatOpt, wide: bool = WideOpt, columns: Optional[str] = ColumnsOpt
              ) -> None:
    """Processes of a profile with their GPU, kernel count, NVTX and CUDA API activity, and rank."""
    set_view(wide, columns)
    from align.loader import load
    from align.profile.processes import process_table

    with load(profile, _store(store)) as p:
        df = process_table(p)
    print_frame(df, fmt, title=f"processes: {profile}", max_width=60)


@app.command()
def nvtx(
    profiles: list[str] = typer.Argument(..., metavar="PROFILE...",
                                         help="profile files or store names; several, a folder or a glob: one Dask "
                                              "task each, combined (the range summary only)"),
    kernels: bool = typer.Option(False, "--kernels", help="kernels per range (nsys's nvtx_kern_sum)"),
    trace: bool = typer.Option(False, "--trace", help="one row per range instance (nsys's nvtx_gpu_proj_trace)"),
    name: str = typer.Option("demangled", "--name", help="kernel names with --kernels: demangled or short"),
    cpu: bool = typer.Option(False, "--cpu", help="CPU-side range times (nsys's nvtx_sum); the default when the "
                                                  "profile has no CUDA activity"),
    limit: Optional[int] = typer.Option(None, "--limit", "-l", min=0, help="print only the first N rows (0: all)"),
    scheduler: Optional[str] = SchedulerOpt,
    workers: Optional[int] = WorkersOpt,
    store: Optional[Path] = StoreOpt,
    fmt: Format = FormatOpt,
    wide: bool = WideOpt,
    columns: Optional[str] = ColumnsOpt,
) -> None:
    """NVTX ranges projected onto the GPU: the numbers of nsys stats --report nvtx_gpu_proj_sum (and, for a
    profile without CUDA activity, the CPU-side range times of nvtx_sum)."""
    set_view(wide, columns)
    from align.attribute.nvtx_rows import PROJ_SUM_HEADER, gpu_proj_sum_rows, wants_plain
    from align.loader import load

    if sum([kernels, trace, cpu]) > 1:
        raise AlignError("--kernels, --trace and --cpu are different views", "pick one")
    if name not in ("demangled", "short"):
        raise AlignError(f"unknown --name {name!r}", "use demangled or short")
    profile, many = _reports(profiles, store, scheduler)
    if many is not None:
        if kernels or trace:
            raise AlignError("--kernels and --trace take one report", "leave them out for the range summary of several")
        from align.scale.analyses import nvtx_many
        from align.stats.nvtx import NVTX_SUM_HEADER

        res, kind = nvtx_many(many, cpu=cpu, **_dask(scheduler, workers, fmt))
        title = "NVTX range summary (CPU)" if kind == "cpu" else "NVTX GPU projection summary"
        _print_many(res, fmt, title, limit, NVTX_SUM_HEADER if kind == "cpu" else PROJ_SUM_HEADER)
        return
    with load(profile, _store(store)) as p:
        if not p.require("nvtx").has_cuda_api and (kernels or trace):
            raise AlignError(f"{p.path} has no CUDA activity: --kernels and --trace project ranges onto GPU work",
                             "leave them out for the CPU-side range times, or profile a program that uses CUDA")
        if cpu or not p.has_cuda_api:
            from align.stats.nvtx import NVTX_SUM_HEADER, nvtx_sum_rows

            if not cpu and fmt == Format.table:
                err.print("no CUDA activity in this profile: CPU-side range times (= nsys stats --report nvtx_sum)",
                          markup=False)
            rows = nvtx_sum_rows(p, raw_names=wide)
            if limit:
                rows = rows.head(limit)
            print_frame(rows, fmt, title=f"NVTX range summary: {profile}", csv_frame=rows.rename(NVTX_SUM_HEADER),
                        max_width=70)
            return
        if not (kernels or trace) and wants_plain(p.path):
            # a small export: the same summary without importing pandas (nvtx_rows.py)
            rows = gpu_proj_sum_rows(p, raw_names=wide)
            if limit:
                rows = rows.head(limit)
            print_frame(rows, fmt, title=f"NVTX GPU projection summary: {profile}",
                        csv_frame=rows.rename(PROJ_SUM_HEADER), max_width=70)
            return
        from align.attribute.projection import KERN_SUM_HEADER, Projection

        proj = Projection(p, raw_names=wide)
        if kernels:
            df, header, title = proj.kern_sum(name), KERN_SUM_HEADER, "kernels per NVTX range"
        elif trace:
            df, header, title = proj.range_table(), None, "NVTX ranges projected onto the GPU"
        else:
            df, header, title = proj.gpu_proj_sum(), PROJ_SUM_HEADER, "NVTX GPU projection summary"
    if limit:
        df = df.head(limit)
    print_frame(df, fmt, title=f"{title}: {profile}", csv_frame=df.rename(columns=header) if header else None,
                max_width=70)


@app.command()
def ops(
    profiles: Optional[list[str]] = typer.Argument(None, metavar="[PROFILE...]",
                                                   help="profile files or store names (not needed with --list); "
                                                        "several, a folder or a glob with --op: one Dask task each, "
                                                        "their forwards pooled"),
    op: Optional[str] = typer.Option(None, "--op", help="one op of the registry (see --list)"),
    range_pattern: Optional[str] = typer.Option(None, "--range", help="regex of the NVTX ranges that hold the op"),
    iter_range: Optional[str] = typer.Option(None, "--iter-range", help="iteration preset (trtllm, vllm, align) or regex"),
    phase: Optional[str] = typer.Option(None, "--phase", help="context, generation, mixed or all"),
    skip: int = typer.Option(0, "--skip", help="drop the first N forwards of each phase (warm-up)"),
    auto_skip: bool = typer.Option(True, "--auto-skip/--no-auto-skip", help="drop cold leading forwards"),
    name: str = typer.Option("short", "--name", help="kernel names: short or demangled"),
    items: bool = typer.Option(False, "--kernels", help="list the op's GPU work, one row per kernel"),
    ops_file: Optional[Path] = typer.Option(None, "--ops-file", help="user registry (TOML) extending the built-in one"),
    list_ops: bool = typer.Option(False, "--list", help="list the registry's ops and exit"),
    pid: Optional[int] = PidOpt,
    device: Optional[int] = DeviceOpt,
    rank: Optional[int] = RankOpt,
    scheduler: Optional[str] = SchedulerOpt,
    workers: Optional[int] = WorkersOpt,
    store: Optional[Path] = StoreOpt,
    fmt: Format = FormatOpt,
    wide: bool = WideOpt,
    columns: Optional[str] = ColumnsOpt,
) -> None:
    """Which kernels belong to which op, per forward: families, counts and median latency."""
    set_view(wide, columns)
    import json as _json

    from align.attribute.ops import OpView
    from align.ops.registry import load_registry
    from align.loader import load

    registry = load_registry(ops_file)
    if list_ops:
        import pandas as pd

        df = pd.DataFrame([{"op": o.name, "shared": o.shared, "nvtx": " | ".join(o.nvtx),
                            "kernel_patterns": sum(len(v) for v in o.kernels.values()), "description": o.description}
                           for o in registry.ops])
        print_frame(df, fmt, title=f"ops ({', '.join(registry.sources)})", max_width=60)
        return
    if not profiles:
        raise AlignError("missing argument PROFILE", "align ops PROFILE [--op OP], or align ops --list")
    from align.attribute.ops import PHASES

    if phase and phase not in PHASES:
        raise AlignError(f"unknown phase {phase!r}", f"use {', '.join(PHASES[1:])} or all")
    profile, many = _reports(profiles, store, scheduler)
    if many is not None:
        if (op is None and range_pattern is None) or items:
            raise AlignError("several reports are answered per op, per forward",
                             "give --op OP (or --range REGEX), without --kernels")
        from align.scale.analyses import ops_many

        res = ops_many(many, op=op, range_pattern=range_pattern, iter_range=iter_range, phase=phase, skip=skip,
                       auto_skip=auto_skip, name=name, ops_file=ops_file,
                       select={"pid": pid, "device": device, "rank": rank}, **_dask(scheduler, workers, fmt))
        _print_many(res, fmt, f"{op or range_pattern}: per forward (median over kept forwards)", None,
                    optional=["variants", "names", "method", "example"], max_width=60)
        return
    with load(profile, _store(store)) as p:
        from align.profile.processes import gpu_filter

        view = OpView(p.require("kernels"), registry, name=name, where=gpu_filter(p, pid=pid, device=device, rank=rank))
        if op is None and range_pattern is None:
            df = view.overview()
            if phase:
                df = df[df["phase"] == phase]
            print_frame(df, fmt, title=f"GPU time by op: {profile}")
            return
        from align.compare.diff import cut_op, meta_beside

        # the cut the verdict makes: registry patterns, else the conventional ranges of the profile's kind
        kind = (meta_beside(p.path) or {}).get("kind")
        labels = ("mock", "e2e") if kind == "mock" else ("e2e", "mock")
        rows, used = cut_op(view, op, range_pattern, None, labels, iter_range)
        if rows is None or rows.empty:
            rows = view.require_items(op, range_pattern=range_pattern, iter_pattern=iter_range)
        err.print(f"range: {used}", markup=False)
        label = op or range_pattern
        if items:
            # the op range each kernel was cut from: a module path for layer-wise markers, never their dict text
            rows = rows.assign(range=view.range_names(rows))
            cols = ["start", "duration", "phase", "forward", "method", "range", "family", "name"]
            shown = rows[cols] if phase is None else rows[rows["phase"] == phase][cols]
            shown = shown.sort_values("start", kind="stable")
            print_frame(shown, fmt, title=f"{label}: GPU work", max_width=80)
            return
        fw = view.per_forward(rows, skip=skip, auto_skip=auto_skip, phase=phase)
    if fmt == Format.json:
        kept = fw.forwards[fw.forwards["kept"]]
        summary = {"op": label, "forwards": {ph: {"total": int((fw.forwards["phase"] == ph).sum()),
                                                  "kept": int((kept["phase"] == ph).sum()),
                                                  "skipped": fw.skipped.get(ph, 0), "cold": fw.cold.get(ph, 0)}
                                             for ph in fw.forwards["phase"].unique()},
                   "families": records(pick(fw.families))}
        sys.stdout.write(_json.dumps(summary, indent=2) + "\n")
        return
    print_frame(fw.families, fmt, title=f"{label}: per forward (median over kept forwards)", max_width=60,
                optional=["variants", "names", "method", "example"])
    if fmt == Format.table:
        for ph, g in fw.forwards.groupby("phase", sort=False):
            kept = g[g["kept"]]
            err.print(f"{ph}: {len(kept)} of {len(g)} forwards kept (skipped {fw.skipped.get(ph, 0)}, "
                      f"cold {fw.cold.get(ph, 0)}); per forward: {kept['kernels'].median():g} kernels, "
                      f"{kept['latency_ns'].median():,.0f} ns")


class DiffFormat(str, enum.Enum):
    table = "table"
    csv = "csv"
    json = "json"
    md = "md"
    html = "html"


class VerdictFormat(str, enum.Enum):
    table = "table"
    json = "json"
    md = "md"


@app.command()
@with_pair_options
def diff(
    mock: str = typer.Argument(..., help="mock profile: file or store name"),
    e2es: list[str] = typer.Argument(..., metavar="E2E...", help="E2E profile: file or store name; several (one per "
                                                                 "host, or runs), a folder or a glob: one Dask task each"),
    op: Optional[str] = typer.Option(None, "--op", help="op of the registry"),
    sequence: bool = typer.Option(False, "--sequence", help="also align one forward's kernel sequences"),
    scheduler: Optional[str] = SchedulerOpt,
    workers: Optional[int] = WorkersOpt,
    pair: PairArgs = None,
    fmt: DiffFormat = typer.Option(DiffFormat.table, "--format", "-f", help="table, csv, json, md or html"),
    wide: bool = WideOpt,
    columns: Optional[str] = ColumnsOpt,
) -> None:
    """Mock vs E2E per kernel family: count and latency per forward, ratio, status. Without --op the op
    comes from the profiles' meta.json, else from the registry op whose E2E kernels are most like the mock's."""
    set_view(wide, columns)
    from align.compare.diff import compare
    from align.compare.sequence import aligned_sequences, representative_forward

    e2e, many = _reports(e2es, pair.store, scheduler)
    if many is not None:
        if sequence or fmt in (DiffFormat.md, DiffFormat.html):
            raise AlignError("several E2E reports are compared as tables", "leave out --sequence, use -f table|csv|json")
        from align.scale.verdicts import diff_many

        table, ranks, cmp_op = diff_many(mock, many, op=op, options=pair.compare_kwargs(),
                                         **_dask(scheduler, workers, Format.table if fmt == DiffFormat.table else None))
        print_frame(table, Format(fmt.value), title=f"mock {mock} vs {len(many)} E2E reports ({cmp_op})", max_width=50,
                    optional=["variants", "example"])
        if fmt == DiffFormat.table and len(ranks):
            from align.compare.verdict import rank_lines

            for line in rank_lines(ranks):
                err.print(f"ranks: {line}", markup=False)
        return
    cmp = compare(mock, e2e, op=op, **pair.compare_kwargs())
    _say_pairing(cmp, fmt == DiffFormat.table)
    table = cmp.table
    if fmt in (DiffFormat.md, DiffFormat.html):
        from align.compare.report import render_html, render_markdown
        from align.compare.verdict import judge

        v = judge(cmp)
        sys.stdout.write(render_markdown(v) if fmt == DiffFormat.md else render_html(v))
        return
    out_fmt = Format(fmt.value)
    err.print(f"ranges: mock {cmp.mock.range_used}; E2E {cmp.e2e.range_used}", markup=False)
    from align.output import VIEW

    if out_fmt == Format.json and not sequence and not VIEW.columns:
        import json as _json

        from align.compare.shapes import shape_fields

        # each family with both sides' launches as fields (grid, block, registers, shared memory)
        shapes = shape_fields(cmp.mock, cmp.e2e)
        rows = records(table)
        for r in rows:
            key = (r["phase"], r["family"])
            r["mock_launches"], r["e2e_launches"] = shapes[0].get(key, []), shapes[1].get(key, [])
        sys.stdout.write(_json.dumps(rows, indent=2) + "\n")
        return
    print_frame(table, out_fmt, title=f"mock {cmp.mock.path} vs E2E {cmp.e2e.path} ({cmp.op})", max_width=50,
                optional=["variants", "example"])
    if sequence:
        for ph in sorted(set(table["phase"])):
            a = representative_forward(cmp.mock.items, cmp.mock.forwards.forwards, ph)
            b = representative_forward(cmp.e2e.items, cmp.e2e.forwards.forwards, ph)
            seq = aligned_sequences(a, b)
            print_frame(seq, out_fmt, title=f"{ph}: one forward, mock vs E2E (= same, ~ other kernel, "
                                            f"+ mock only, - E2E only)", max_width=40, main=False)


@app.command()
@with_pair_options
def verdict(
    given: Optional[list[str]] = typer.Argument(None, metavar="[MOCK [E2E...]]",
                                               help="mock and E2E profiles, as align diff takes them "
                                                    "(or --mock/--e2e)"),
    op: Optional[str] = typer.Option(None, "--op", help="op of the registry (finds the newest stored profiles)"),
    mock: Optional[str] = typer.Option(None, "--mock", help="mock profile: file or store name"),
    e2es: list[str] = typer.Option([], "--e2e", help="E2E profile: file or store name; repeat it, or give a folder "
                                                     "or glob, for several (one per host, or runs): one Dask task each"),
    bench: Optional[Path] = typer.Option(None, "--bench", help="align bench --format json result"),
    accept: list[str] = AcceptOpt,
    reason: Optional[str] = ReasonOpt,
    scheduler: Optional[str] = SchedulerOpt,
    workers: Optional[int] = WorkersOpt,
    pair: PairArgs = None,
    fmt: VerdictFormat = typer.Option(VerdictFormat.table, "--format", "-f", help="table, json or md"),
    explain: bool = typer.Option(False, "--explain", help="after the first screen: every check's full reason, "
                                 "the pairing, launch modes and shapes"),
    causes: Optional[Path] = typer.Option(None, "--causes", help="diagnosis rules on top of align/data/causes.toml "
                                          "(default $ALIGN_CAUSES_FILE or ./align-causes.toml)"),
    no_record: bool = typer.Option(False, "--no-record", help="only look: keep the verdict out of the store "
                                   "(align collect obeys recorded verdicts)"),
) -> None:
    """Is the mock faithful to the E2E run? The answer and its causes, then the checklist; exit 0 pass,
    1 fail, 2 bad input. Without --mock/--e2e: the newest comparable stored pair of --op."""
    from align.compare.verdict import verdict as run_verdict

    if given:
        if mock is not None or e2es:
            raise AlignError("profiles given twice", "pass MOCK E2E as arguments, or --mock and --e2e, not both")
        mock, e2es = given[0], list(given[1:])
        if not e2es:
            raise AlignError("missing the E2E profile", "align verdict MOCK E2E [--op OP]")
    e2e, many = _reports(e2es, pair.store, scheduler) if e2es else (None, None)
    if many is not None:
        _verdict_many(mock, many, op, bench, _accepts(accept, reason), pair, scheduler, workers, fmt)
        return
    v = run_verdict(mock, e2e, op=op, bench=bench, accept=_accepts(accept, reason), causes=causes,
                    record_in_store=not no_record, **pair.compare_kwargs())
    cmp = v.comparison

    def notes() -> None:
        """Which pair, which ranges, where recorded: on stderr, after the answer in a table."""
        sys.stdout.flush()
        if cmp.op_reason and fmt == VerdictFormat.table and not explain:
            err.print(cmp.op_reason, markup=False)
        if v.chosen:
            err.print(f"pair: {v.chosen}", markup=False)
        err.print(f"ranges: mock {cmp.mock.range_used}; E2E {cmp.e2e.range_used}", markup=False)
        err.print(f"recorded {v.recorded}" if v.recorded else "not recorded (--no-record)", markup=False)

    if fmt != VerdictFormat.table:
        notes()
    if fmt == VerdictFormat.json:
        import json as _json

        _say_pairing(v.comparison, False)
        sys.stdout.write(_json.dumps(v.to_dict(), indent=2) + "\n")
    elif fmt == VerdictFormat.md:
        sys.stdout.write(v.to_markdown())
    elif fmt == VerdictFormat.table:
        _verdict_screen(v, explain)
        notes()
    raise typer.Exit(0 if v.passed else 1)


def _verdict_screen(v, explain: bool) -> None:
    """The answer and its causes first, the checklist one short reason each; with ``explain`` the
    full reasons, pairing and launch details after it."""
    from rich.text import Text

    for line in v.screen(width=stdout.width, all_causes=explain):
        style = f"bold {'green' if v.passed else 'red'}" if line == v.answer else \
            "bold yellow" if v.headline and v.headline.startswith(line) else ""
        stdout.print(Text(line, style=style))
    if v.accepted is not None and len(v.accepted):
        print_frame(v.accepted[["phase", "family", "difference", "reason"]], Format.table,
                    title="accepted differences (left out of the checks)", max_width=70, main=False)
    if explain:
        checks = v.checks.assign(result=v.checks["passed"].map({True: "pass", False: "FAIL"}))
        print_frame(checks[["name", "result", "reason"]], Format.table,
                    title=f"align verdict ({v.op}): mock {v.mock} vs E2E {v.e2e}", max_width=110)
        _say_pairing(v.comparison, True)
    else:
        sys.stdout.flush()
        comp = v.comparison.comparability if v.comparison is not None else None
        for w in comp.warnings if comp is not None else []:
            err.print(f"comparability: WARNING {w}", markup=False)
        err.print(f"mock {v.mock} vs E2E {v.e2e}; every reason and the launch shapes: --explain, or --format json",
                  markup=False)


def _verdict_many(mock, many: list[str], op, bench, accepted, pair: PairArgs, scheduler, workers, fmt) -> None:
    """align verdict --e2e A --e2e B ...: one verdict per E2E report, every rank side by side, PASS only
    when all pass (exit 0 pass, 1 fail)."""
    from align.scale.verdicts import verdict_many

    if mock is None:
        raise AlignError("several E2E reports need the mock named", "pass --mock PROFILE")
    kwargs = pair.compare_kwargs()
    mv = verdict_many(mock, many, op=op, bench=bench, accept=accepted, store=kwargs["store"], options=kwargs,
                      **_dask(scheduler, workers, Format.table if fmt == VerdictFormat.table else None))
    err.print(f"recorded {mv.recorded}", markup=False)
    if fmt == VerdictFormat.json:
        import json as _json

        sys.stdout.write(_json.dumps(mv.to_dict(), indent=2) + "\n")
    elif fmt == VerdictFormat.md:
        sys.stdout.write(mv.to_markdown())
    else:
        # each report's answer and causes first (its verdict's first screen), then every check
        for lab, r in zip(mv.labels, mv.results):
            v = r["verdict"]
            stdout.print(f"{lab}: {v.get('answer', 'PASS' if v['passed'] else 'FAIL')}", markup=False)
            for i, c in enumerate(v.get("causes", []), 1):
                stdout.print(f"  {i}. {c['kind']} [{c['phase']}]: {c['says']}\n     fix: {c['fix']}", markup=False)
        checks = mv.checks.assign(result=mv.checks["passed"].map({True: "pass", False: "FAIL"}))
        print_frame(checks[["report", "name", "result", "reason"]], Format.table,
                    title=f"align verdict ({mv.op}): mock {mock} vs {len(many)} E2E reports", max_width=100)
        for line in mv.rank_lines():
            stdout.print(f"ranks: {line}", markup=False)
        stdout.print(f"[bold {'green' if mv.passed else 'red'}]{'PASS' if mv.passed else 'FAIL'}[/]")
    raise typer.Exit(0 if mv.passed else 1)


@app.command()
@with_pair_options
def report(
    mock: str = typer.Argument(..., help="mock profile: file or store name"),
    e2e: str = typer.Argument(..., help="E2E profile: file or store name"),
    op: Optional[str] = typer.Option(None, "--op", help="op of the registry"),
    output: Path = typer.Option(Path("align-report.html"), "--output", "-o", help="HTML file to write"),
    markdown: Optional[Path] = typer.Option(None, "--markdown", help="also write a Markdown summary here"),
    bench: Optional[Path] = typer.Option(None, "--bench", help="align bench --format json result"),
    accept: list[str] = AcceptOpt,
    reason: Optional[str] = ReasonOpt,
    pair: PairArgs = None,
) -> None:
    """Write a self-contained HTML report (checklist, pairing, plots, tables) and optionally a Markdown summary.
    Exit 0 once written, whether the verdict passes or fails (the page and the last line say which); 2 on bad input."""
    from align.compare.report import render_html, render_markdown
    from align.compare.verdict import verdict as run_verdict
    from align.files import check_target, write_text

    check_target(output, "--output")
    if markdown:
        check_target(markdown, "--markdown")
    v = run_verdict(mock, e2e, op=op, bench=bench, record_in_store=False, accept=_accepts(accept, reason),
                    **pair.compare_kwargs())
    _say_pairing(v.comparison, False, details=False)
    write_text(output, render_html(v), "the report")
    err.print(f"[green]wrote[/] {output} ({'PASS' if v.passed else 'FAIL'})")
    if markdown:
        write_text(markdown, render_markdown(v), "the Markdown summary")
        err.print(f"[green]wrote[/] {markdown}")


@app.command("bench")
def bench_cmd(
    op: str = typer.Option(..., "--op", help="dsa, mla or moe"),
    phase: str = typer.Option(..., "--phase", help="context or generation"),
    tp: int = typer.Option(1, "--tp", help="tensor-parallel size simulated on one GPU (local heads = heads / tp)"),
    batch: int = typer.Option(1, "--batch", help="requests"),
    seq: int = typer.Option(1, "--seq", help="context: tokens per request"),
    kv_len: int = typer.Option(0, "--kv-len", help="generation: cached tokens per request; context: prior tokens"),
    config: str = typer.Option("v32", "--config", help="v32 (DeepSeek-V3.2 dims) or small (CPU-sized)"),
    dtype: str = typer.Option("bfloat16", "--dtype", help="bfloat16, float16 or float32"),
    iters: int = typer.Option(50, "--iters", help="timed calls per side"),
    warmup: int = typer.Option(5, "--warmup", help="untimed calls before each timing round"),
    eager: bool = typer.Option(False, "--eager", help="do not capture CUDA graphs"),
    check_only: bool = typer.Option(False, "--check-only", help="only compare outputs (works on CPU)"),
    framework: str = typer.Option("align", "--framework",
                                  help="align: our PyTorch mock layer (way B); transformers: the framework's own "
                                       "module built standalone (way A) against the same one in its decoder layer"),
    cache: Optional[str] = typer.Option(None, "--cache", help="with --framework: static (CUDA-graph capturable) or "
                                                              "dynamic; default static for generation, dynamic for "
                                                              "context"),
    fmt: Format = FormatOpt,
) -> None:
    """The decoder layer's own submodule vs a standalone mock layer: same weights, same inputs."""
    from align.opbench import bench

    if cache is not None and framework == "align":
        raise AlignError("--cache picks a framework adapter's cache", "add --framework transformers, or leave it out")
    r = bench(op, phase, tp=tp, batch=batch, seq=seq, kv_len=kv_len, config=config, dtype=dtype, iters=iters,
              warmup=warmup, use_graph=not eager, timing=not check_only,
              device="cpu" if check_only else "cuda", framework=framework, cache=cache)
    data = r.to_dict()
    if fmt == Format.json:
        import json as _json

        sys.stdout.write(_json.dumps(data, indent=2) + "\n")
    else:
        flat = {"op": r.op, "phase": r.phase, **{f"shape.{k}": v for k, v in r.shape.items()},
                "outputs_match": r.outputs_match, "max_abs_diff": r.max_abs_diff}
        if r.diff_pct is not None:
            flat.update({"submodule_ms": r.submodule["median_ms"], "mock_ms": r.mock["median_ms"],
                         "diff_pct": r.diff_pct, "submodule_graph": r.submodule["cuda_graph"],
                         "mock_graph": r.mock["cuda_graph"], "device": r.device})
        print_dict(flat, fmt, title="align bench")
    if not r.outputs_match:
        err.print(f"align: mock and submodule outputs differ (max |diff| {r.max_abs_diff:.3g})")
        raise typer.Exit(1)


@app.command()
def collect(
    op: str = typer.Option(..., "--op", help="op to collect: dsa, mla, moe, or standin to try the machinery"),
    phase: Optional[str] = typer.Option(None, "--phase",
                                        help="context or generation (moe: all) (default: every phase of the op)"),
    gpus: Optional[int] = typer.Option(None, "--gpus", help="worker processes, one per GPU (default: all visible)"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", metavar="ADDRESS",
                                            help="Dask scheduler whose workers (one per GPU, resource GPU=1) run one "
                                                 "case each; rows written here (default: $ALIGN_SCHEDULER, else local "
                                                 "processes, one per GPU)"),
    out: Path = typer.Option(Path("collect"), "--out", help="output folder (aiconfigurator's data layout inside)"),
    resume: bool = typer.Option(False, "--resume", help="continue a collection in --out: skip finished cases"),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="with --resume, run failed cases again"),
    cases: list[str] = typer.Option([], "--cases", help="restrict a grid field: FIELD=V1,V2 (repeatable; e.g. tp=1,8)"),
    force: bool = typer.Option(False, "--force", help="collect even without a passing verdict (recorded)"),
    verify_k: int = typer.Option(0, "--verify", help="instead of collecting, re-run K random finished cases; "
                                                     "exit 1 when one deviates 2 % or more twice"),
    export_dir: Optional[Path] = typer.Option(None, "--export-module", metavar="DIR",
                                              help="instead of collecting, write collect_<op>.py for aiconfigurator's "
                                                   "collect.py into DIR and print its registration (gated like a "
                                                   "collection)"),
    cases_from: Optional[str] = typer.Option(None, "--cases-from", metavar="E2E_PROFILE",
                                             help="instead of collecting, derive the batch / sequence / cache-length "
                                                  "points the E2E run exercised and check the grid covers them; exit 1 "
                                                  "when one is outside"),
    e2e_range: Optional[str] = typer.Option(None, "--e2e-range", help="with --cases-from: regex of the E2E ranges "
                                                                      "that hold the op (default: its registry "
                                                                      "patterns)"),
    check_dir: bool = typer.Option(False, "--check", help="instead of collecting, validate the collection in --out: "
                                                          "rows per phase and TP against the grid, graph/throttling "
                                                          "flags, the last --verify; exit 1 on a problem"),
    warmups: int = typer.Option(5, "--warmups", help="untimed calls before timing (and again after capture)"),
    runs: int = typer.Option(20, "--runs", help="timed calls per case"),
    eager: bool = typer.Option(False, "--eager", help="do not capture CUDA graphs"),
    power: bool = typer.Option(False, "--power", help="sample NVML power and clocks (adds power columns)"),
    version: str = typer.Option("align", "--version-label", help="version folder name in the data layout"),
    backend: Optional[str] = typer.Option(None, "--backend", help="backend folder name in the data layout (default: "
                                                                  "the implementation timed; trtllm only when you say "
                                                                  "so, recorded)"),
    framework: str = typer.Option("align", "--framework", help="align: our mock layer; transformers: its own module "
                                                               "(way A)"),
    system: Optional[str] = typer.Option(None, "--system", help="system folder (default from the GPU: h200_sxm ...)"),
    aic_work: Optional[Path] = typer.Option(None, "--aic", metavar="DIR",
                                            help="with --check: also run aiconfigurator's own whole-model estimate "
                                                 "(cli estimate) on the tables, working in DIR"),
    store: Optional[Path] = StoreOpt,
    fmt: Format = FormatOpt,
) -> None:
    """Benchmark an aligned op over its test-case grid and write aiconfigurator's perf files."""
    from align.collect.cases import parse_subset
    from align.collect.check import check
    from align.collect.runner import Settings, collect as run_collect, verify

    settings = Settings(warmups=warmups, runs=runs, use_graph=not eager, measure_power=power, version=version,
                        backend=backend, system=system, framework=framework)
    if aic_work is not None and not check_dir:
        raise AlignError("--aic runs with --check", "add --check")
    if e2e_range is not None and cases_from is None:
        raise AlignError("--e2e-range names the op's ranges of --cases-from", "add --cases-from E2E_PROFILE")
    if check_dir:
        _print_check(check(out, op, settings, aic_work=aic_work), fmt)
        return
    if cases_from is not None:
        _print_cases_from(op, cases_from, framework, parse_subset(cases), e2e_range, _store(store), fmt)
        return
    if export_dir is not None:
        from align.collect.contract import export_module
        from align.collect.runner import gate

        line = gate(op, _store(store), force, framework)
        if line:
            err.print(line, markup=False)
        path, snippet = export_module(op, export_dir, framework=framework, backend=backend or "trtllm")
        if fmt == Format.json:
            import json as _json

            sys.stdout.write(_json.dumps({"module": str(path), "registration": snippet}, indent=2) + "\n")
        else:
            err.print(f"[green]wrote[/] {path}")
            sys.stdout.write(f"# add to collect.py's collections list:\n{snippet}\n")
        return
    if verify_k:  # negative is bad input too: verify() says so
        df = verify(out, op, verify_k, settings)
        print_frame(df, fmt, title=f"verification of {len(df)} cases (seed: |deviation| < 2 %, measured again "
                                   f"when not)", max_width=70)
        drifted = int((df["verdict"] == "drift").sum())
        if drifted:
            err.print(f"align: {drifted} of {len(df)} verified case(s) deviate by 2 % or more on two re-runs",
                      markup=False)
            raise typer.Exit(1)
        return
    summary = run_collect(op, [phase] if phase else None, gpus=gpus, out=out, resume=resume,
                          subset=parse_subset(cases), settings=settings, retry_failed=retry_failed,
                          forced=force, progress=fmt == Format.table, store=_store(store),
                          say=lambda line: err.print(line, markup=False), scheduler=scheduler)
    for note in summary.repaired:
        err.print(f"repaired: {note}", markup=False)
    data = {"out": str(summary.out), "done": summary.done, "failed": summary.failed,
            "already_done": summary.already_done, "skipped": len(summary.skipped), "repaired": summary.repaired,
            "tables": summary.tables}
    if fmt == Format.table:
        for case, why in summary.skipped[:10]:
            err.print(f"[yellow]skipped[/] {case.id}: {why}")
        if len(summary.skipped) > 10:
            err.print(f"[yellow]skipped[/] {len(summary.skipped) - 10} more (see {out}/.align/checkpoint.json)")
    print_dict(data, fmt, title=f"align collect {op}")
    report = check(out, op, settings)
    for line in report.problems:
        err.print(f"check: {line}", markup=False)
    if summary.failed:
        raise typer.Exit(1)


def _print_cases_from(op: str, profile: str, framework: str, subset: dict, e2e_range: str | None, store,
                      fmt: Format) -> None:
    """align collect --cases-from: the E2E run's points, folded, with the grid's coverage."""
    from align.collect.cases import check_subset, op_spec
    from align.collect.from_e2e import compact, e2e_points, suggested_cases

    spec = op_spec(op).for_framework(framework)
    check_subset(spec, list(spec.phases), subset)
    points = e2e_points(profile, spec, e2e_range=e2e_range, subset=subset, store=store)
    if fmt == Format.table:
        print_frame(compact(points), fmt, title=f"points of {op} in {profile} ({points.range_used}) against "
                                                f"align collect's grid", max_width=60,
                    optional=["prefix", "evidence", "forwards", "covered"])
    else:
        print_frame(points.table, fmt)
    for line in points.notes:
        err.print(f"note: {line}", markup=False)
    missing = suggested_cases(points)
    if len(points.uncovered):
        err.print(f"align: {len(points.uncovered)} point(s) of the E2E run are not covered by the grid"
                  + ("; collect them with:" if missing else " (see the notes)"), markup=False)
        for line in missing:
            err.print(f"  align collect --op {op} {line}", markup=False)
        raise typer.Exit(1)
    if fmt == Format.table:
        stdout.print(f"[green]every point of the E2E run lies within {op}'s grid[/]")


def _print_check(report, fmt: Format) -> None:
    """align collect --check: counts, what is missing and why, the measurement flags, the verdict."""
    if fmt == Format.json:
        import json as _json

        sys.stdout.write(_json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    elif fmt == Format.csv:
        print_frame(report.counts, fmt)
    else:
        print_frame(report.counts, fmt, title=f"align collect --check {report.op}: rows per phase and TP against "
                                              f"the grid ({report.out})")
        if len(report.missing):
            print_frame(report.missing.head(20), fmt, title=f"planned cases without a row ({len(report.missing)}; "
                                                           f"first 20)", max_width=70, main=False)
        if len(report.flags):
            print_frame(report.flags, fmt, title="how the rows were measured (per-case records)", main=False)
        if report.verify is not None and len(report.verify):
            cols = [c for c in ("case", "deviation_pct", "deviation2_pct", "verdict") if c in report.verify]
            print_frame(report.verify[cols], fmt, title="newest --verify", max_width=60, main=False)
        if report.aic:
            a = report.aic
            stdout.print(f"aiconfigurator {a['version']} cli estimate of {a['model']} on these tables (ISL {a['isl']}, "
                         f"OSL {a['osl']}, TP {a['tp']}, EP {a['ep']}, batch {a['batch']}, bfloat16): TTFT "
                         f"{a['ttft_ms']:.1f} ms, TPOT {a['tpot_ms']:.2f} ms, request {a['request_latency_ms']:.0f} ms")
        for line in report.notes:
            err.print(f"note: {line}", markup=False)
        for line in report.problems:
            err.print(f"problem: {line}", markup=False)
        stdout.print(f"[bold {'green' if report.passed else 'red'}]{'PASS' if report.passed else 'FAIL'}[/]")
    if not report.passed:
        raise typer.Exit(1)


# ---- DSA top-k traces --------------------------------------------------------------------------
trace_app = typer.Typer(help="Decode-time traces of the mock model.", no_args_is_help=True)
topk_app = typer.Typer(help="DSA top-k selections per request, layer and decode step (JSONL shards).",
                       no_args_is_help=True)
trace_app.add_typer(topk_app, name="topk")
app.add_typer(trace_app, name="trace")
_TOPK_TABLES = ("all", "overall", "layers", "requests")


@topk_app.command("run")
def trace_topk_run(
    out: Path = typer.Option(..., "--out", help="trace folder (new or empty)"),
    requests: int = typer.Option(32, "--requests", help="synthetic requests: 80 % chat, 20 % long context"),
    seed: int = typer.Option(0, "--seed", help="seed of the lengths, tokens, prefixes and model weights"),
    config: str = typer.Option("small", "--config", help="model config: small, demo or v32 (transformers: small or v32)"),
    engine: str = typer.Option("mock", "--engine", help="mock (align_mock's DSA model) or transformers (its own "
                                                        "DeepSeek-V3.2 under generate(), traced by hooks)"),
    schema: Optional[str] = typer.Option(None, "--schema", help="record field names: align (default) or seed "
                                                               "(seed 003's step_idx, layer_id, selected_token_pos, "
                                                               "logical_block_id, token_pos)"),
    layers: Optional[int] = typer.Option(None, "--layers", help="decoder layers to build (default: the config's)"),
    batch_size: int = typer.Option(4, "--batch-size", help="requests of equal prompt length decoded together"),
    block_size: Optional[int] = typer.Option(None, "--block-size",
                                             help="KV block size in tokens (default: env or 64)"),
    shard_size: Optional[int] = typer.Option(None, "--shard-size", help="requests per shard file (default 16)"),
    scores: Optional[bool] = typer.Option(None, "--scores/--no-scores", help="record the indexer scores"),
    every: Optional[int] = typer.Option(None, "--every", help="record every k-th decode step"),
    dataset: str = typer.Option("mixed", "--dataset", help="request lengths: mixed (80 % chat, 20 % long context) "
                                                         "or a public workload's: sharegpt, longbench_v2, ruler, "
                                                         "burstgpt (align/data/workloads.toml)"),
    rate: float = typer.Option(1.0, "--rate", help="requests per second of the data set's arrival process "
                                                   "(sharegpt: Poisson, burstgpt: Gamma); recorded, not waited for"),
    length_scale: float = typer.Option(1.0, "--length-scale", help="multiply every prompt and output length"),
    length_quantum: int = typer.Option(1, "--length-quantum", help="round prompt lengths to a multiple (batching)"),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens",
                                                 help="generate until EOS, at most N tokens; N <= 0: until EOS or "
                                                      "--max-seq-len (default: each request's drawn output length)"),
    eos_token: Optional[int] = typer.Option(None, "--eos-token", help="EOS token id (default: the model's, 1)"),
    max_seq_len: Optional[int] = typer.Option(None, "--max-seq-len",
                                              help="cap of prompt + output tokens (default: the config's)"),
    prefill_chunk: Optional[int] = typer.Option(None, "--prefill-chunk",
                                                help="transformers: prefill long prompts N tokens at a time "
                                                     "(the indexer's fp32 scores of a whole 16k prompt take 68 GB)"),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda"),
    dtype: str = typer.Option("float32", "--dtype", help="float32 or bfloat16"),
    fmt: Format = FormatOpt,
) -> None:
    """Run a synthetic workload on the mock E2E model, or transformers' own DeepSeek-V3.2 (--engine
    transformers), decoding eagerly, and write a top-k trace to --out."""
    import torch

    from align.trace.workload import WorkloadSpec, run_workload

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AlignError(f"{out} is not an empty folder", "give a new --out (a trace is never appended to)")
    if dtype not in ("float32", "bfloat16"):
        raise AlignError(f"unknown --dtype {dtype!r}", "use float32 or bfloat16")
    if schema not in (None, "align", "seed"):
        raise AlignError(f"unknown --schema {schema!r}", "use align (align's field names) or seed (seed 003's)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise AlignError(f"--device {device}: this torch sees no CUDA GPU", "use --device cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise AlignError(f"unknown --device {device!r}", "use cpu, cuda or cuda:N")
    try:
        spec = WorkloadSpec(requests=requests, seed=seed, length_scale=length_scale, length_quantum=length_quantum,
                            dataset=dataset, rate=rate)
        result = run_workload(out, spec, config=config, n_layers=layers, batch_size=batch_size, device=device,
                              dtype=getattr(torch, dtype), block_size=block_size, shard_size=shard_size,
                              record_scores=scores, sample_every=every, engine=engine, names=schema,
                              max_new_tokens=max_new_tokens, eos_token=eos_token, max_seq_len=max_seq_len,
                              prefill_chunk=prefill_chunk,
                              progress=(lambda done, total: err.print(f"batch {done}/{total}", end="\r"))
                              if fmt == Format.table else None)
    except ValueError as exc:
        raise AlignError(str(exc)) from None
    if fmt == Format.table:
        err.print()
    writer = result.summary["writer"]
    stats = result.summary["stats"]
    print_dict({"out": str(out), "requests": len(result.requests), "batches": result.batches,
                "records": stats["records"], "dropped": writer["dropped"], "errors": writer["errors"],
                "mean_unique_blocks": stats["mean_unique_blocks"], "elapsed_s": round(result.elapsed_s, 3)},
               fmt, title="align trace topk run")


@topk_app.command("summary")
def trace_topk_summary(
    directory: Path = typer.Argument(..., help="trace folder written by align trace topk run"),
    table: str = typer.Option("all", "--table", help="all, overall, layers or requests"),
    fmt: Format = FormatOpt,
    wide: bool = WideOpt,
    columns: Optional[str] = ColumnsOpt,
) -> None:
    """Per-layer and per-request block statistics of a trace, with each request's prefix overlap."""
    set_view(wide, columns)
    import json as _json

    import pandas as pd

    from align.trace.topk import summary_tables

    if table not in _TOPK_TABLES:
        raise AlignError(f"unknown --table {table!r}", f"choose one of {', '.join(_TOPK_TABLES)}")
    if not (directory / "run_meta.json").is_file():
        raise AlignError(f"{directory} holds no run_meta.json", "give a folder written by align trace topk run")
    if columns and table == "all":
        raise AlignError("--columns picks from one table", f"add --table {'|'.join(_TOPK_TABLES[1:])}")
    tables = summary_tables(directory)
    bad = tables["overall"].attrs.get("bad_lines", [])
    if bad:
        err.print(f"warning: {len(bad)} damaged record line(s) left out, the first at {bad[0]}", markup=False)
    chosen = tables if table == "all" else {table: pick(tables[table])}
    if fmt == Format.json:
        sys.stdout.write(_json.dumps({k: records(v) for k, v in chosen.items()}, indent=2) + "\n")
    elif fmt == Format.csv:
        if len(chosen) == 1:  # one table: its own columns, nothing added
            next(iter(chosen.values())).to_csv(sys.stdout, index=False)
        else:
            frames = [v.assign(table=k)[["table", *v.columns]] for k, v in chosen.items()]
            pd.concat(frames, ignore_index=True).to_csv(sys.stdout, index=False)
    else:
        for name, frame in chosen.items():
            print_frame(frame, fmt, title=f"{directory}: {name}")


# ---- module traces -------------------------------------------------------------------------
@trace_app.command("modules", cls=CommandAfterDashes,
                   context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def trace_modules(
    ctx: typer.Context,
    include: Optional[str] = typer.Option(None, "--include", help="regex on module name or class: only these"),
    exclude: Optional[str] = typer.Option(None, "--exclude", help="regex on module name or class: not these"),
    layer: Optional[str] = typer.Option(None, "--layer",
                                        help="regex of the decoder layer whose call order is shown (default layers.0)"),
    nvtx: bool = typer.Option(False, "--nvtx", help="an NVTX range per module, for nsys (align profile)"),
    profiler: bool = typer.Option(False, "--profiler", help="torch.profiler: kernels per module (CPU ops on CPU)"),
    shapes: bool = typer.Option(True, "--shapes/--no-shapes", help="record input and output shapes and dtypes"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="write the whole trace, every call, as JSON"),
    limit: Optional[int] = typer.Option(None, "--limit", min=0,
                                        help="rows per table (default 30 in a table, else all; 0 all)"),
    fmt: Format = FormatOpt,
) -> None:
    """Run `-- python script.py ARGS` in this process and trace the models it calls, unchanged: calls
    per class and module, one decoder layer's call order, kernels per module (--profiler). CSV: per module."""
    import json as _json

    from align.files import check_target, write_text
    from align.trace.modules import DEFAULT_LAYER, run_script

    if out:
        check_target(out, "--out")
    cmd = ctx.meta.get("align_cmd")
    if cmd is None:
        cmd = list(ctx.args)
        if cmd and cmd[0].startswith("-"):
            raise AlignError(f"unknown option {cmd[0]}", "put align's options before -- and the program after it")
    trace, code = run_script(cmd, include=include, exclude=exclude, layer=layer or DEFAULT_LAYER, nvtx=nvtx,
                             profiler=profiler, shapes=shapes)
    if out:
        write_text(out, trace.to_json(), "the module trace")
    if not trace.forwards and code == 0:
        raise AlignError(f"{' '.join(cmd)} called no torch.nn.Module", "trace a program that runs a model")
    rows = limit if limit is not None else (30 if fmt == Format.table else 0)

    def cut(df):
        return df.head(rows) if rows else df

    if fmt == Format.json:
        sys.stdout.write(_json.dumps(trace.to_dict(calls=False, limit=rows or None), indent=2) + "\n")
    elif fmt == Format.csv:
        print_frame(cut(trace.by_name), fmt)
    else:
        print_dict(trace.summary(), fmt, title="align trace modules")
        print_frame(cut(trace.by_class), fmt, title="calls per class")
        print_frame(cut(trace.by_name), fmt, title="calls per module (wall_ms: CPU time, inclusive)", max_width=60)
        print_frame(cut(trace.layer_order), fmt, title=f"call order of one layer: {trace.layer_name}", max_width=50)
        if profiler:
            print_frame(cut(trace.kernels), fmt, title="kernels per module (innermost module range)", max_width=60)
        if rows and len(trace.by_name) > rows:
            err.print(f"showing the first {rows} rows of each table; --limit 0 shows all")
    if out:
        err.print(f"[green]wrote[/] {out}")
    if code:
        err.print(f"align: the traced program exited with {code}")
        raise typer.Exit(1)


def _usage_errors() -> tuple[type, ...]:
    """click's ClickException, and typer's own where typer vendors click (typer >= 0.20)."""
    found = [click.ClickException]
    try:
        from typer._click.exceptions import ClickException as TyperClickException

        found.append(TyperClickException)
    except ImportError:
        pass
    return tuple(found)


def _stops() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(Abort classes, Exit classes) of click and of typer."""
    return ((click.exceptions.Abort, getattr(typer, "Abort", click.exceptions.Abort)),
            (click.exceptions.Exit, getattr(typer, "Exit", click.exceptions.Exit)))


# library parameters whose flag is not --name-with-dashes; (name, value) pairs word a switch
FLAGS = {"version": "--version-label", "range_pattern": "--range", "iter_pattern": "--iter-range",
         "subset": "--cases", "e2e_select": "--pid/--device/--rank", "forced": "--force",
         ("timing", "False"): "--check-only"}


def cli_flag(name: str, value: str) -> str:
    """A library parameter named in an error, as the flag that sets it here (align.errors.arg)."""
    if (name, value) in FLAGS:
        return FLAGS[name, value]
    flag = FLAGS.get(name, "--" + name.replace("_", "-"))
    return flag if value in ("", "True") else f"{flag} {value}"


def main() -> None:
    """Entry point: user mistakes print one line and exit 2, never a traceback."""
    from align.errors import Interrupted

    aborts, exits = _stops()
    _closed_stdout()
    try:
        rc = app(standalone_mode=False)
        sys.stdout.flush()  # a pipe closed early fails here, inside the handlers below, not at exit
    except AlignError as exc:
        err.print(f"align: {'' if isinstance(exc, Interrupted) else 'error: '}{exc.render(cli_flag)}", markup=False)
        sys.exit(exc.exit_code)
    except ModuleNotFoundError as exc:
        # an optional dependency a plain install leaves out: the extra that brings it
        from align.errors import missing_module

        one = missing_module(exc)
        err.print(f"align: error: {one.render(cli_flag)}", markup=False)
        sys.exit(one.exit_code)
    except aborts:
        err.print("align: aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        err.print("align: interrupted")
        sys.exit(130)
    except _usage_errors() as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except exits as exc:
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        _quiet_exit()
    except SystemExit as exc:
        if _broken_pipe(exc):  # typer's own handling of a closed pipe: exit 1, said nowhere
            _quiet_exit()
        raise
    except OSError as exc:
        # a read-only folder, a full disk, a file gone: the environment, not a bug in align
        from align.files import describe_os_error

        err.print(f"align: error: {describe_os_error(exc)}", markup=False)
        sys.exit(2)
    except (sqlite3.Error, TypeError, ValueError, KeyError, IndexError, *_engine_errors()):
        # a damaged export breaks a query deep inside: name the file and the damage when there is one
        from align.profile.check import damage_report

        found = damage_report()
        if found is None:
            raise
        err.print(f"align: error: {found}", markup=False)
        sys.exit(2)
    if rc == 130:  # typer's answer to a KeyboardInterrupt no command turned into a line of its own
        err.print("align: interrupted", markup=False)
    sys.exit(rc if isinstance(rc, int) else 0)


class _ClosedOutput(io.TextIOBase):
    """sys.stdout when align was started with it closed (``>&-``): the first write is one line, not
    an answer printed nowhere or a traceback."""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        raise AlignError("standard output is closed: the answer cannot be printed",
                         "give it somewhere to go: > FILE, | less, or > /dev/null to throw it away")


def _closed_stdout() -> None:
    """A closed fd 1 gets /dev/null (a file opened later must not take fd 1, nor a child write into it)
    and sys.stdout a writer that refuses (:class:`_ClosedOutput`)."""
    try:
        os.fstat(1)
        return
    except OSError:
        pass
    fd = os.open(os.devnull, os.O_WRONLY)
    if fd != 1:
        os.dup2(fd, 1)
        os.close(fd)
    sys.stdout = _ClosedOutput()


def _broken_pipe(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while handling an EPIPE (a reader such as ``head`` that left early)."""
    seen = exc.__context__
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.EPIPE:
            return True
        seen = seen.__context__
    return False


def _quiet_exit() -> None:
    """A reader that left early (``| head``) ends the answer, as it ends any CLI tool's: exit 0, no
    message; what is still buffered for the closed pipe goes to /dev/null."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass
    sys.exit(0)


def _engine_errors() -> tuple[type, ...]:
    try:
        import duckdb

        return (duckdb.Error,)
    except ImportError:
        return ()


if __name__ == "__main__":
    main()
