"""Run a child process with its output kept in a log file and shown as progress.

nsys and its importer draw progress bars with carriage returns; the log keeps every real line
and only the last state of each bar, and the console shows a spinner with the latest line.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape

console = Console(stderr=True, highlight=False, soft_wrap=True)

_BAR = re.compile(r"\[[=\s\d%]*\]|^\[\d+/\d+\]")


def _is_progress(line: str) -> bool:
    return bool(_BAR.search(line)) and "%" in line


class ChildStopped(KeyboardInterrupt):
    """Raised by :func:`run_logged` once its child, stopped by Ctrl-C, SIGTERM or SIGHUP, has exited:
    ``rc`` its exit code, ``signal`` the first signal's name, ``aborted`` when a second one cut its
    report short."""

    def __init__(self, rc: int, signal: str, aborted: bool):
        super().__init__(signal)
        self.rc, self.signal, self.aborted = rc, signal, aborted


STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def run_logged(cmd: list[str], log: Path | None = None, title: str | None = None, quiet: bool = False,
               env: dict[str, str] | None = None, cwd: str | None = None, stopping: str | None = None) -> int:
    """Run ``cmd``; append its output to ``log``; echo non-progress lines unless ``quiet``;
    ``stopping`` says what a first Ctrl-C waits for.

    The child runs in its own session, so a terminal's Ctrl-C reaches it once, from here: nsys
    stopped by a second SIGINT drops its report. A first Ctrl-C (or SIGTERM, SIGHUP) is passed on as
    SIGINT and the child waited for (nsys then writes the report of what it captured); a second one
    aborts (SIGINT again: nsys drops the report and ends the program), a third kills its process
    group. Once the child has exited, :class:`ChildStopped` says a stop came.
    """
    title = title or os.path.basename(cmd[0])
    stopping = stopping or f"waiting for {os.path.basename(cmd[0])} to stop"
    logf = open(log, "a", encoding="utf-8", errors="replace") if log else None
    start = time.monotonic()
    stops: list[str] = []
    held: dict = {"proc": None, "passed": 0}

    def catch_up() -> None:  # each stop passed on once, whenever it came
        while held["proc"] is not None and held["passed"] < len(stops):
            held["passed"] += 1
            _pass_on(held["proc"], held["passed"])

    def on_stop(signum, frame) -> None:
        stops.append(signal.Signals(signum).name)
        catch_up()

    with _handling(STOPS, on_stop):
        if logf:  # once the command is in the log, a stop is passed on to it
            logf.write(f"$ {subprocess.list2cmdline(cmd)}\n")
            logf.flush()
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                    start_new_session=True)
        except OSError as exc:
            if logf:
                logf.write(f"failed to start: {exc}\n")
                logf.close()
            raise
        held["proc"] = proc
        catch_up()  # a stop that came while it started
        told = 0
        pending_bar = ""
        last = ""
        with console.status(f"{escape(title)}", spinner="dots") as status:
            buf = b""
            while True:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if len(stops) > told and not quiet:
                    told = len(stops)
                    console.print(f"[yellow]{escape(_notice(stops, title, stopping))}[/]")
                if not chunk:
                    break
                buf += chunk
                parts = re.split(rb"(\r\n|\r|\n)", buf)
                buf = parts.pop() if len(parts) % 2 else b""
                for text, sep in zip(parts[0::2], parts[1::2]):
                    line = text.decode("utf-8", errors="replace")
                    if not line.strip():
                        if sep != b"\r" and logf:
                            logf.write("\n")
                        continue
                    if _is_progress(line):
                        pending_bar = line
                        last = line.strip()
                    else:
                        if pending_bar and logf:
                            logf.write(pending_bar + "\n")
                        pending_bar = ""
                        if logf:
                            logf.write(line + "\n")
                        if not quiet:
                            console.print(f"[dim]{escape(line)}[/]")
                        last = line.strip()
                    status.update(f"{escape(title)} [dim]({time.monotonic() - start:.0f} s) {escape(last[-80:])}[/]")
            if buf and logf:
                logf.write(buf.decode("utf-8", errors="replace") + "\n")
            rc = proc.wait()
            proc.stdout.close()
        if len(stops) > 1:  # aborted: nothing the child started outlives it
            _kill_group(proc)
    if pending_bar and logf:
        logf.write(pending_bar + "\n")
    if logf:
        if stops:
            logf.write(f"# stopped by {', '.join(stops)}\n")
        logf.write(f"# exit code {rc} after {time.monotonic() - start:.1f} s\n")
        logf.close()
    if stops:
        raise ChildStopped(rc, stops[0], aborted=len(stops) > 1)
    return rc


def _notice(stops: list[str], title: str, stopping: str) -> str:
    if len(stops) == 1:
        return f"interrupted ({stops[0]}): {stopping} (Ctrl-C again to abort)"
    return f"aborting {title} ({stops[-1]} again)"


def _pass_on(proc: subprocess.Popen, n: int) -> None:
    """The ``n``-th stop to the child: SIGINT twice (stop and write, then abort), then SIGKILL to its group."""
    if n <= 2:
        _signal(proc, signal.SIGINT)
    else:
        _kill_group(proc)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@contextlib.contextmanager
def _handling(signals: tuple, handler):
    """``handler`` for ``signals`` inside the block (only the main thread can set one: elsewhere none)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def _signal(proc: subprocess.Popen, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        pass
