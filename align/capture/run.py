"""Run a child process with its output kept in a log file and shown as progress.

nsys and its importer draw progress bars with carriage returns; the log keeps every real line
and only the last state of each bar, and the console shows a spinner with the latest line.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape

console = Console(stderr=True, highlight=False, soft_wrap=True)

_BAR = re.compile(r"\[[=\s\d%]*\]|^\[\d+/\d+\]")


def _is_progress(line: str) -> bool:
    return bool(_BAR.search(line)) and "%" in line


def run_logged(cmd: list[str], log: Path | None = None, title: str | None = None, quiet: bool = False,
               env: dict[str, str] | None = None, cwd: str | None = None) -> int:
    """Run ``cmd``; append its output to ``log``; echo non-progress lines unless ``quiet``.

    A first Ctrl-C is passed on as SIGINT and the run is waited for (nsys then still writes the
    report of what it captured); a second one kills the process.
    """
    title = title or os.path.basename(cmd[0])
    logf = open(log, "a", encoding="utf-8", errors="replace") if log else None
    if logf:
        logf.write(f"$ {subprocess.list2cmdline(cmd)}\n")
        logf.flush()
    start = time.monotonic()
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=False)
    except OSError as exc:
        if logf:
            logf.write(f"failed to start: {exc}\n")
            logf.close()
        raise
    interrupted = 0
    pending_bar = ""
    last = ""
    with console.status(f"{escape(title)}", spinner="dots") as status:
        buf = b""
        while True:
            try:
                chunk = os.read(proc.stdout.fileno(), 65536)
            except KeyboardInterrupt:
                interrupted += 1
                if interrupted == 1:
                    console.print("[yellow]interrupted: waiting for the child to finish its report "
                                  "(Ctrl-C again to kill it)[/]")
                    _signal(proc, signal.SIGINT)
                else:
                    _signal(proc, signal.SIGKILL)
                continue
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
        while True:
            try:
                rc = proc.wait()
                break
            except KeyboardInterrupt:
                _signal(proc, signal.SIGKILL)
    if pending_bar and logf:
        logf.write(pending_bar + "\n")
    if logf:
        logf.write(f"# exit code {rc} after {time.monotonic() - start:.1f} s\n")
        logf.close()
    return rc


def _signal(proc: subprocess.Popen, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        pass
