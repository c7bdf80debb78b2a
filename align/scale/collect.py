"""A collection spread over Dask workers that each own one GPU (worker resource ``GPU=1``).

Each case is one task: the worker builds and times the op and returns the row; only the collector
(the Dask client, on the host of ``--out``) appends rows, so the perf files stay the single record of
what is done. Dask runs a task again when its worker dies (on another worker); a row that comes back
twice (a result computed again after its worker's death) finds its case already in the file and is
not written again: every case exactly once, and a collector that itself dies resumes from the rows.

Start one worker per GPU, each seeing only its GPU:
    CUDA_VISIBLE_DEVICES=i python -m distributed.cli.dask_worker ADDRESS --nthreads 1 --resources GPU=1
(scripts/dask-gpu-workers.sh ADDRESS does that for every GPU of a host).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from align.errors import AlignError, arg
from align.scale.cluster import unpicklable

RESOURCE = "GPU"


def case_task(op: str, phase: str, args: tuple, settings: dict[str, Any]) -> dict[str, Any]:
    """On a worker: one case built and timed on the worker's GPU (the CPU where there is none); its
    row, the timing and where it ran. Nothing is written here."""
    from align.collect.contract import measure_case, use_device
    from align.collect.runner import Settings, spec_of

    s = Settings(**settings)
    spec = spec_of(op, s)
    module = spec.module()
    delay = float(os.environ.get("ALIGN_COLLECT_CASE_DELAY", "0"))  # tests: a worker is killed mid-case
    if delay:
        time.sleep(delay)
    try:
        import torch

        device = "cuda:0" if torch.cuda.is_available() else "cpu"
    except ImportError:
        device = "cpu"
    dtype, gpu = use_device(device, s.dtype)
    res, row = measure_case(spec, module, phase, tuple(args), device=device, dtype=dtype, gpu=gpu, warmups=s.warmups,
                            runs=s.runs, use_graph=s.use_graph, measure_power=s.measure_power, version=s.version)
    return {"row": row, "result": res.to_dict(), "host": socket.gethostname(), "pid": os.getpid(),
            "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}


def _probe() -> dict[str, Any]:
    """On each worker: how many GPUs it sees."""
    try:
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        n = 0
    return {"gpus": n, "host": socket.gethostname(), "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}


def check_workers(client: Any) -> dict[str, dict]:
    """The workers that offer a GPU, each seeing exactly one (or none: a CPU stand-in); anything else
    is a cluster set up so that cases would share a GPU or never run."""
    info = client.scheduler_info()["workers"]
    gpu_workers = [w for w, d in info.items() if d.get("resources", {}).get(RESOURCE, 0) >= 1]
    if not gpu_workers:
        raise AlignError(f"no worker of the Dask scheduler offers the resource {RESOURCE}=1",
                         "start one worker per GPU with scripts/dask-gpu-workers.sh ADDRESS (each sees only its GPU, "
                         "runs one case at a time and offers GPU=1)")
    try:
        seen = client.run(_probe, workers=gpu_workers)
    except ImportError as exc:
        raise unpicklable(exc) or exc from None
    shared = [f"{w} ({d['gpus']} GPUs)" for w, d in seen.items() if d["gpus"] > 1]
    if shared:
        raise AlignError(f"worker(s) {', '.join(shared[:3])} see more than one GPU: their cases would all run on the first",
                         "start each worker with CUDA_VISIBLE_DEVICES set to its own GPU (scripts/dask-gpu-workers.sh)")
    return seen


def run_on_dask(op: str, todo: list, address: str, out: Path, settings: Any, ck: Any, summary: Any,
                progress: bool, spec: Any, done_keys: dict[str, set]) -> None:
    """Run ``todo`` as one task per case on the cluster at ``address``; append each row the first time
    its case comes back, record failures (a case whose workers kept dying fails as ``worker died``); a
    scheduler that goes away is one line (:func:`_lost`), never cases recorded as failed."""
    module = spec.module()
    args = dict(settings.__dict__)
    run_id = uuid.uuid4().hex[:8]
    try:
        _run_cases(address, todo, out, settings, ck, summary, progress, spec, done_keys, op, args, run_id, module)
    except lost_scheduler() as exc:
        raise _lost(address, exc, out, summary, len(todo)) from None


def lost_scheduler() -> tuple[type[BaseException], ...]:
    """What the Dask client raises once its scheduler has gone away (killed, its host down)."""
    import asyncio
    import concurrent.futures

    from distributed.client import FutureCancelledError
    from distributed.comm.core import CommClosedError

    return (CommClosedError, FutureCancelledError, asyncio.CancelledError, concurrent.futures.CancelledError,
            ConnectionError, TimeoutError)


def _lost(address: str, exc: BaseException | str, out: Path, summary: Any, todo: int) -> AlignError:
    """One line for a collection whose scheduler went away: the rows that came back are kept, the
    cases that did not are recorded as nothing (neither done nor failed), so a resume runs them."""
    from align.errors import ClusterLost

    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    why = text.rsplit(">: ", 1)[-1][:160]  # the reason, not the comm's repr
    left = todo - summary.done - summary.failed
    return ClusterLost(f"lost the Dask scheduler at {address} ({why}) after {summary.done} of {todo} case(s): their "
                       f"rows are kept in {out}",
                       f"start it again, then rerun with {arg('resume', 'True')}: the {left} case(s) not run are run then")


def _run_cases(address, todo, out, settings, ck, summary, progress, spec, done_keys, op, args, run_id, module) -> None:
    from distributed import as_completed

    from align.collect import writers
    from align.collect.contract import RowNotWritten
    from align.collect.runner import _case_key, log_case, progress_bar, record_outcome, table_dir
    from align.files import WriteFailed
    from align.scale.cluster import dask_client

    with dask_client(address) as client:
        workers = check_workers(client)
        futures = {client.submit(case_task, c.op, c.phase, list(c.args), args, resources={RESOURCE: 1}, pure=False,
                                 key=f"align-collect-{run_id}-{i}"): c for i, c in enumerate(todo)}
        with progress_bar(progress) as bar:
            task = bar.add_task(f"collect {op} on {len(workers)} Dask GPU worker(s)", total=len(todo))
            for fut in as_completed(futures, loop=client.loop):
                case = futures.pop(fut)
                bar.advance(task)
                if fut.status != "finished":
                    if fut.status == "cancelled":  # never ran: the scheduler that held it is gone
                        raise _lost(address, "its tasks were cancelled", out, summary, len(todo))
                    exc = fut.exception()
                    if isinstance(exc, lost_scheduler()):
                        raise exc
                    why = (f"worker died ({exc})" if type(exc).__name__ == "KilledWorker"
                           else f"{type(exc).__name__}: {exc}".splitlines()[0][:500])
                    record_outcome(out, ck, summary, case.id, "failed", {"error": why})
                    continue
                res = fut.result()
                key = _case_key(module, case)
                if key in done_keys[case.phase]:
                    continue  # its row is in the file already: never written twice
                path = table_dir(out, spec, settings) / spec.phases[case.phase].perf_file
                payload = {**res["result"], "host": res["host"], "worker_pid": res["pid"],
                           "cuda_visible_devices": res["visible"]}
                again = (f"free space or fix the folder's rights, then {arg('resume', 'True')}: "
                         "that case runs again, every row written is kept")
                try:
                    log_case(out, case.id, payload)  # its record first: a row always has one
                    writers.append_row(path, *res["row"])
                except RowNotWritten as exc:
                    raise WriteFailed(str(exc), again) from None
                except OSError as exc:
                    raise WriteFailed(f"cannot write {path}: {exc.strerror or exc}", again) from None
                done_keys[case.phase].add(key)
                record_outcome(out, ck, summary, case.id, "done", payload)
