"""Which Dask cluster runs align's tasks: the one at ``--scheduler`` / ``$ALIGN_SCHEDULER``, else a
local cluster of worker processes started for the command and closed after it.

Dask's distributed scheduler rather than a process pool of our own: it retries a task whose worker
died on another worker, places tasks by worker resources (one GPU each), and the same code runs on
one laptop and on many hosts. Workers import align themselves, so a remote cluster's workers need
align installed and the exports at the paths the client names.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from typing import Any

from align.errors import AlignError, arg

ENV = "ALIGN_SCHEDULER"
CONNECT_TIMEOUT_S = 10.0
_ADDRESS = re.compile(r"^(?:(tcp|tls|ucx|inproc)://)?(\[[0-9a-fA-F:]+\]|[A-Za-z0-9._-]+):(\d{1,5})$")


def scheduler_address(given: str | None = None) -> str | None:
    """The scheduler asked for (``given``, else ``$ALIGN_SCHEDULER``) as a Dask address, or None for a
    local cluster; a malformed address is bad input."""
    value = given if given is not None else os.environ.get(ENV) or None
    if value is None:
        return None
    m = _ADDRESS.match(value.strip())
    if m is None or not 0 < int(m.group(3)) < 65536:
        where = arg("scheduler", value) if given is not None else f"${ENV}={value!r}"
        raise AlignError(f"{where} is not a Dask scheduler address",
                         "give HOST:PORT or tcp://HOST:PORT (the address `dask scheduler` prints)")
    return value.strip() if m.group(1) else f"tcp://{value.strip()}"


def require_dask() -> None:
    import importlib.util

    if importlib.util.find_spec("distributed") is None:
        raise AlignError(f"several reports or a {arg('scheduler')} need Dask's distributed scheduler, which is not "
                         "installed",
                         "pip install 'align[dask]' (dask and distributed)")


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None,
                resources: dict[str, float] | None = None) -> Iterator[Any]:
    """A ``distributed.Client``: connected to ``scheduler`` (after :func:`scheduler_address`), or to a
    local cluster of ``workers`` single-threaded worker processes (default: the CPU count), each with
    ``resources``. An unreachable scheduler is one line of bad input, not a traceback."""
    require_dask()
    from distributed import Client, LocalCluster

    address = scheduler_address(scheduler)
    if address is not None:
        try:
            with _quiet():
                client = Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise AlignError(f"cannot reach the Dask scheduler at {address} ({why[:160]})",
                             f"start one (`dask scheduler`, then `dask worker {address}`) or fix "
                             f"{arg('scheduler')} / ${ENV}") from None
        saved = _silence()  # a scheduler that goes away mid-run is one line of the command, not the client's log
        try:
            yield client
        except BaseException:
            # the client's lost connection ends later, as its loop's thread shuts down, with an ERROR log:
            # Dask stays quiet for the rest of this process
            client.close()
            raise
        client.close()
        _restore(saved)
        return
    if workers is not None and workers < 1:
        raise AlignError(f"{arg('workers', str(workers))}: no worker would run", f"pass {arg('workers')} 1 or more")
    n = workers or os.cpu_count() or 1
    share = {"ALIGN_DUCKDB_THREADS": str(max(1, (os.cpu_count() or 1) // n))}  # the cores split, not multiplied
    with _quiet(), LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                                resources=resources, silence_logs=logging.CRITICAL, env=share) as cluster, \
            Client(cluster, set_as_default=False) as client:
        yield client


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Dask's own chatter stays off the user's stderr: a task's error reaches the user as the command's own."""
    saved = _silence()
    try:
        yield
    finally:
        _restore(saved)


_LOGGERS = ("distributed", "distributed.client", "distributed.nanny", "distributed.worker", "distributed.scheduler",
            "tornado")


def _silence() -> dict[str, int]:
    """Dask's loggers down to CRITICAL; returns their levels before, for :func:`_restore`."""
    saved = {n: logging.getLogger(n).level for n in _LOGGERS}
    for n in _LOGGERS:
        logging.getLogger(n).setLevel(logging.CRITICAL)
    return saved


def _restore(saved: dict[str, int]) -> None:
    for n, level in saved.items():
        logging.getLogger(n).setLevel(level)


def unpicklable(exc: BaseException) -> AlignError | None:
    """A worker that cannot import align (a cluster started elsewhere, without it) as bad input."""
    if isinstance(exc, ImportError) and "align" in str(exc):
        return AlignError(f"the Dask workers cannot import align ({exc})",
                          "install align (pip install 'align[dask]') where the workers run, the same version as here")
    return None
