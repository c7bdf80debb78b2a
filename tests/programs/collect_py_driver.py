"""A driver written from seed 001's description of aiconfigurator's collect.py (not from its code):
import the collector module by path, take each phase's cases from get_<phase>_<op>_test_cases(),
put them on one shared queue with a None per worker, and let one spawned worker process per device
call run_<op>(*case, device) until its None. Perf files land in the working folder.

    python collect_py_driver.py MODULE.py OP DEVICES [--only JSON]

DEVICES: comma-separated (cpu, or cuda:0,cuda:1); --only: a JSON list of the grid arguments of the
cases to run (each case is [*args, phase, perf_filename]), with or without the phase after them,
instead of the whole grid.
"""

import importlib.util
import json
import multiprocessing as mp
import sys


def load(path):
    spec = importlib.util.spec_from_file_location("collect_module", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def worker(path, run_func, device, tasks):
    func = getattr(load(path), run_func)
    while True:
        task = tasks.get()
        if task is None:
            return
        func(*task, device)  # collect.py 0.7: the device after the case, positionally


def main():
    path, op, devices = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    only = json.loads(sys.argv[sys.argv.index("--only") + 1]) if "--only" in sys.argv else None
    module = load(path)
    mp.set_start_method("spawn")
    # collect.py calls each registered get_func (context, generation; moe's one "all" list)
    for phase in ("context", "generation", "all"):
        get = getattr(module, f"get_{phase}_{op}_test_cases", None)
        if get is None:
            continue
        cases = [c for c in get() if only is None or c[:-2] in only or c[:-1] in only]
        tasks = mp.Queue()
        for case in cases:
            tasks.put(case)
        for _ in devices:
            tasks.put(None)
        procs = [mp.Process(target=worker, args=(path, f"run_{op}", d, tasks)) for d in devices]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        if any(p.exitcode != 0 for p in procs):
            sys.exit(f"a worker of {phase} exited {[p.exitcode for p in procs]}")
        print(f"{phase}: {len(cases)} case(s)", file=sys.stderr)


if __name__ == "__main__":
    main()
