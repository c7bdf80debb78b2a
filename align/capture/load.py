"""Load for an OpenAI-compatible server: N requests, C at a time, of given input and output token
lengths, to ``/v1/completions`` or ``/v1/chat/completions``; standard library only."""

from __future__ import annotations

import json
import statistics
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from align.errors import AlignError, ServeFailed, arg


@dataclass
class LoadSpec:
    requests: int = 16
    concurrency: int = 4
    input_tokens: int = 128
    output_tokens: int = 16
    endpoint: str = "/v1/completions"
    model: str = "default"
    timeout_s: float = 120.0

    @classmethod
    def parse(cls, text: str | None, **defaults) -> "LoadSpec":
        """``requests=32,concurrency=8,input=128,output=32,endpoint=chat,model=M``."""
        spec = cls(**defaults)
        if not text:
            return spec
        names = {"requests": "requests", "concurrency": "concurrency", "input": "input_tokens",
                 "output": "output_tokens", "endpoint": "endpoint", "model": "model", "timeout": "timeout_s"}
        for part in text.split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise AlignError(f"bad {arg('load')} item {part!r}", "write KEY=VALUE, e.g. requests=32,concurrency=8")
            k, v = (x.strip() for x in part.split("=", 1))
            if k not in names:
                raise AlignError(f"unknown {arg('load')} key {k!r}", f"keys: {', '.join(names)}")
            if k == "endpoint":
                v = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}.get(v, v)
                setattr(spec, names[k], v)
            elif k == "model":
                setattr(spec, names[k], v)
            else:
                try:
                    setattr(spec, names[k], float(v) if k == "timeout" else int(v))
                except ValueError:
                    raise AlignError(f"{arg('load')} {k} must be a number, not {v!r}", "e.g. requests=32") from None
        if spec.requests < 1 or spec.concurrency < 1:
            raise AlignError(f"{arg('load')} requests and concurrency must be >= 1", "e.g. requests=32,concurrency=8")
        return spec


@dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0
    errors: int = 0
    latencies_s: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0

    def summary(self) -> dict:
        lat = self.latencies_s
        return {"sent": self.sent, "answered": self.ok, "errors": self.errors,
                "seconds": round(self.ended - self.started, 3),
                "latency_median_s": round(statistics.median(lat), 4) if lat else None,
                "latency_max_s": round(max(lat), 4) if lat else None,
                "error_samples": self.error_samples[:3]}


def _body(spec: LoadSpec, i: int) -> bytes:
    words = " ".join(f"w{(i + j) % 97}" for j in range(spec.input_tokens))
    if spec.endpoint.endswith("/chat/completions"):
        payload = {"model": spec.model, "messages": [{"role": "user", "content": words}],
                   "max_tokens": spec.output_tokens}
    else:
        payload = {"model": spec.model, "prompt": words, "max_tokens": spec.output_tokens}
    return json.dumps(payload).encode()


def send_load(base_url: str, spec: LoadSpec, progress: Callable[[LoadResult], None] | None = None) -> LoadResult:
    """Send ``spec.requests`` requests, ``spec.concurrency`` at a time; every answer is checked to
    be an OpenAI-shaped JSON with choices."""
    result = LoadResult(started=time.monotonic())
    lock = threading.Lock()
    url = base_url.rstrip("/") + spec.endpoint

    def one(i: int) -> None:
        req = urllib.request.Request(url, data=_body(spec, i), headers={"Content-Type": "application/json"})
        t0 = time.monotonic()
        error = None
        try:
            with urllib.request.urlopen(req, timeout=spec.timeout_s) as resp:
                data = json.loads(resp.read())
                if not data.get("choices"):
                    error = "answer without choices"
        except urllib.error.HTTPError as exc:
            error = f"HTTP {exc.code}: {answer_body(exc)}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        with lock:
            result.sent += 1
            if error:
                result.errors += 1
                result.error_samples.append(error)
            else:
                result.ok += 1
                result.latencies_s.append(time.monotonic() - t0)
            if progress:
                progress(result)

    with ThreadPoolExecutor(max_workers=spec.concurrency) as pool:
        list(pool.map(one, range(spec.requests)))
    result.ended = time.monotonic()
    return result


def answer_body(exc: urllib.error.HTTPError, limit: int = 200) -> str:
    """What the server said with an error status, on one line (a server's reason is in its body:
    ``{"detail": "Server is pinned to ..."}``), cut to ``limit`` characters."""
    try:
        text = exc.read().decode(errors="replace")
    except OSError:
        text = ""
    text = " ".join(text.split()) or exc.reason or ""
    return text if len(text) <= limit else text[:limit - 3] + "..."


# statuses of a server, or a proxy in front of it, that is still starting: keep waiting
NOT_YET = {502, 503, 504}


def wait_ready(url: str, timeout_s: float, alive: Callable[[], bool], interval: float = 0.5) -> float:
    """Poll ``url`` until it answers 200; returns the seconds waited. A refused connection or 502-504
    is "not up yet"; any other answer (404, 500) means the server is up and that URL will not tell
    when it is ready, so it fails at once with what the server answered. Raises when the server
    process is gone (``alive`` false) or the timeout passes."""
    t0 = time.monotonic()
    last = "no answer"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return time.monotonic() - t0
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}: {answer_body(exc)}"
            if exc.code not in NOT_YET:
                raise ServeFailed(f"{url} answered {last}",
                                  f"the server is up but this URL is not its health check: pass "
                                  f"{arg('ready_url')} of a path that answers 200 when ready (e.g. /health)") from None
        except (urllib.error.URLError, OSError) as exc:
            last = f"no answer ({getattr(exc, 'reason', exc)})"
        if not alive():
            raise ServeFailed(f"the server (or nsys) exited before {url} answered", "see its log for why")
        if time.monotonic() - t0 > timeout_s:
            raise ServeFailed(f"{url} did not answer 200 within {timeout_s:.0f} s (last: {last})",
                              f"raise {arg('ready_timeout')}, or check {arg('ready_url')} and the server log")
        time.sleep(interval)
