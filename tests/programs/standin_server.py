"""A stand-in OpenAI-compatible inference server with NVTX activity, for profiling tests.

Tests run it under the real Nsight Systems CLI on a CPU-only machine to exercise profiling a
multi-process server. The main process serves HTTP on 127.0.0.1 and spawns ``--workers`` worker
processes (ranks, like MPI); each completion request goes round-robin to one rank, which runs a
"prefill" step and ``max_tokens`` "decode" steps of busy CPU work inside NVTX ranges named like a
real engine's (``[Executor] _forward_step ...`` > ``layers.{i}.self_attn`` / ``layers.{i}.mlp``).
Options make it slow to start, never ready, fail some requests or die abruptly during a capture.
"""

import argparse
import contextlib
import ctypes
import json
import math
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from typing import Any

import nvtx

MODEL = "standin"


def busy(seconds: float) -> float:
    """Burn CPU (not sleep) for about ``seconds``."""
    end, acc, i = time.perf_counter() + seconds, 0.0, 0
    while time.perf_counter() < end:
        for _ in range(200):
            i += 1
            acc += math.sqrt(i) * math.sin(i)
    return acc


def worker_main(rank: int, conn: Connection, layers: int, work_ms: float) -> None:
    """Serve (request id, max_tokens) messages from ``conn`` until told to stop or orphaned."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(OSError, AttributeError):  # name the process for ps/pgrep and nsys
        ctypes.CDLL(None).prctl(15, f"standin_rank{rank}".encode(), 0, 0, 0)  # PR_SET_NAME
    parent, step, half = os.getppid(), 0, work_ms / 2000.0
    conn.send(("ready", rank, os.getpid()))
    while os.getppid() == parent:
        try:
            if not conn.poll(0.5):
                continue
            msg = conn.recv()
        except (EOFError, OSError):
            break
        if msg is None:
            break
        req_id, max_tokens = msg
        for ctx in [1] + [0] * max_tokens:
            with nvtx.annotate(f"[Executor] _forward_step {step}: {ctx} ctx reqs, {1 - ctx} gen reqs"):
                for i in range(layers):
                    with nvtx.annotate(f"layers.{i}.self_attn"):
                        busy(half)
                    with nvtx.annotate(f"layers.{i}.mlp"):
                        busy(half)
            step += 1
        text = " ".join(f"tok{j}" for j in range(max_tokens))
        with contextlib.suppress(OSError):  # a closed pipe ends the loop at the next poll
            conn.send((req_id, text, rank, os.getpid()))


class Server:
    """Main-process state: the worker ranks, pending requests and readiness."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.lock, self.ctx = args, threading.Lock(), mp.get_context("spawn")
        self.procs: list[mp.process.BaseProcess] = []
        self.conns: list[Connection] = []
        self.send_locks: list[threading.Lock] = []
        self.worker_pids: dict[int, int] = {}  # rank -> pid, as each worker reports ready
        self.pending: dict[str, queue.Queue] = {}  # request id -> where its answer goes
        self.ready = threading.Event()
        self.next_rank = self.n_requests = 0

    def start_workers(self) -> None:
        """Spawn the worker ranks and a reader thread for each."""
        for rank in range(self.args.workers):
            mine, theirs = self.ctx.Pipe()
            proc = self.ctx.Process(target=worker_main, name=f"standin_rank{rank}", daemon=True,
                                    args=(rank, theirs, self.args.layers, self.args.work_ms))
            proc.start()
            theirs.close()
            self.procs.append(proc)
            self.conns.append(mine)
            self.send_locks.append(threading.Lock())
            threading.Thread(target=self.read_worker, args=(mine,), daemon=True).start()

    def read_worker(self, conn: Connection) -> None:
        """Route a worker's messages: its ready report, then finished requests."""
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                return
            if msg[0] == "ready":
                with self.lock:
                    self.worker_pids[msg[1]] = msg[2]
                continue
            with self.lock:
                answer = self.pending.pop(msg[0], None)
            if answer is not None:
                answer.put(msg[1:])

    def generate(self, max_tokens: int) -> tuple[str, int, int] | None:
        """Run one request on the next rank; (text, rank, pid), or None if it did not answer."""
        req_id, answer = uuid.uuid4().hex, queue.Queue(1)
        with self.lock:
            rank = self.next_rank
            self.next_rank = (rank + 1) % len(self.conns)
            self.pending[req_id] = answer
        try:
            with self.send_locks[rank]:
                self.conns[rank].send((req_id, max_tokens))
            return answer.get(timeout=120)
        except (OSError, queue.Empty):
            return None

    def should_fail(self) -> bool:
        """Count a completion request; True for every k-th one when ``--error-rate`` is set."""
        with self.lock:
            self.n_requests += 1
            n = self.n_requests
        rate = self.args.error_rate
        return rate > 0 and n % max(1, round(1 / rate)) == 0

    def write_pid_file(self) -> None:
        """Write main and worker pids to ``--pid-file`` atomically."""
        data = {"main": os.getpid(), "workers": {str(r): p for r, p in sorted(self.worker_pids.items())},
                "port": self.args.port}
        tmp = f"{self.args.pid_file}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, self.args.pid_file)

    def stop_workers(self) -> None:
        """Tell workers to exit, join them, terminate any still alive after 5 s."""
        for conn, send_lock in zip(self.conns, self.send_locks):
            with send_lock, contextlib.suppress(OSError):
                conn.send(None)
        deadline = time.monotonic() + 5
        for proc in self.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.terminate()
                proc.join(2)


def make_handler(server: Server) -> type[BaseHTTPRequestHandler]:
    """The HTTP handler class bound to ``server``."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: Any) -> None:
            pass

        def reply(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def error(self, code: int, message: str, kind: str = "internal_server_error") -> None:
            self.reply(code, {"error": {"message": message, "type": kind, "param": None, "code": code}})

        def do_GET(self) -> None:
            if self.path not in ("/health", "/v1/models"):
                return self.error(404, f"no route {self.path}", "not_found_error")
            if not server.ready.is_set():
                return self.error(503, "server is starting", "service_unavailable")
            if self.path == "/health":
                return self.reply(200, {"status": "ok"})
            self.reply(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})

        def do_POST(self) -> None:
            chat = self.path == "/v1/chat/completions"
            if not chat and self.path != "/v1/completions":
                return self.error(404, f"no route {self.path}", "not_found_error")
            if not server.ready.is_set():
                return self.error(503, "server is starting", "service_unavailable")
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                max_tokens = int(body.get("max_tokens", 16))
                if chat:
                    n_prompt = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
                else:
                    prompt = body.get("prompt", "")
                    n_prompt = len(prompt.split()) if isinstance(prompt, str) else len(prompt)
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                return self.error(400, f"bad request: {e}", "invalid_request_error")
            if server.should_fail():
                return self.error(500, "injected failure (--error-rate)")
            result = server.generate(max_tokens)
            if result is None:
                return self.error(500, "worker did not answer")
            text, rank, pid = result
            output = {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
            self.reply(200, {
                "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
                "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()), "model": MODEL,
                "choices": [{"index": 0, **output, "finish_reason": "length"}],
                "usage": {"prompt_tokens": n_prompt, "completion_tokens": max_tokens,
                          "total_tokens": n_prompt + max_tokens},
                "x_rank": rank, "x_pid": pid})

    return Handler


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    for name, kind, default in [("--workers", int, 2), ("--layers", int, 2), ("--startup-delay", float, 1.0),
                                ("--pid-file", str, None), ("--die-after", float, None),
                                ("--error-rate", float, 0.0), ("--work-ms", float, 2.0)]:
        p.add_argument(name, type=kind, default=default)
    p.add_argument("--never-ready", action="store_true")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    server = Server(args)
    try:
        httpd = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(server))
    except OSError as e:
        print(f"standin_server: cannot listen on 127.0.0.1:{args.port}: {e.strerror}", file=sys.stderr)
        sys.exit(2)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    t0 = time.monotonic()
    server.start_workers()
    threading.Thread(target=httpd.serve_forever, args=(0.1,), daemon=True).start()
    pids_written, ready_at = False, None
    while not stop.wait(0.05):
        all_up = len(server.worker_pids) == args.workers
        if all_up and not pids_written and args.pid_file:
            server.write_pid_file()
            pids_written = True
        now = time.monotonic()
        if ready_at is None and all_up and not args.never_ready and now - t0 >= args.startup_delay:
            ready_at = now
            server.ready.set()
            print(f"standin_server ready on port {args.port} with {args.workers} workers", flush=True)
        if ready_at is not None and args.die_after is not None and now - ready_at >= args.die_after:
            for proc in server.procs:
                proc.kill()
            os._exit(3)
    httpd.shutdown()
    httpd.server_close()
    server.stop_workers()
    sys.exit(0)


if __name__ == "__main__":
    main()
