"""A CPU program with known NVTX activity, profiled by the tests under the real nsys.

Two threads each run ITERS iterations of ``iteration`` > ``layer`` > ``attn`` push/pop ranges (the
main thread in domain "align_test", the worker in the default domain), the worker is named
"worker" for nsys, and the main thread ends with a mark and a start/end range. It writes what it
did to the JSON file given as the first argument, so tests compare nsys's view with the truth.
"""

import json
import sys
import threading
import time

import nvtx

ITERS = 3


def work(domain: str | None, out: dict, key: str) -> None:
    import os

    out[key] = {"pid": os.getpid(), "tid": threading.get_native_id()}
    kw = {"domain": domain} if domain else {}
    for i in range(ITERS):
        with nvtx.annotate(f"iteration_{i}", **kw):
            with nvtx.annotate("layer", **kw):
                with nvtx.annotate("attn", **kw):
                    time.sleep(0.004)
            time.sleep(0.002)


def main() -> None:
    truth: dict = {}
    worker = threading.Thread(target=work, args=(None, truth, "worker"), name="worker")
    worker.start()
    work("align_test", truth, "main")
    worker.join()
    nvtx.mark("done")
    rng = nvtx.start_range("tail")
    time.sleep(0.002)
    nvtx.end_range(rng)
    truth["iters"] = ITERS
    with open(sys.argv[1], "w") as f:
        json.dump(truth, f)


if __name__ == "__main__":
    main()
