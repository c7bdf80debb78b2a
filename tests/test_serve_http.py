"""What align's serving side says about a server's answers, on real local HTTP servers (no nsys): the
transformers presets, a readiness URL that answers 500, error samples that carry the server's reason,
and a port answered by a server align did not start."""

from __future__ import annotations

import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from align.capture.load import LoadSpec, send_load, wait_ready
from align.capture.serve import check_answered_by, listeners, preset_command
from align.errors import ServeFailed


def _server(routes: dict[tuple[str, str], tuple[int, dict]]) -> ThreadingHTTPServer:
    """A server on a free port that answers each (method, path) with (status, JSON body)."""
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_):
            pass

        def _answer(self, method: str) -> None:
            if method == "POST":
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
            code, body = routes.get((method, self.path), (404, {"detail": "Not Found"}))
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._answer("GET")

        def do_POST(self):
            self._answer("POST")

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    return httpd


@pytest.fixture
def pinned():
    """Answers as transformers serve pinned to one model does (its 400 and its 500 of /v1/models)."""
    detail = {"detail": "Server is pinned to '/models/llama'; requested 'default'."}
    httpd = _server({("GET", "/health"): (200, {"status": "ok"}),
                     ("GET", "/v1/models"): (500, {"detail": "Internal Server Error"}),
                     ("POST", "/v1/completions"): (400, detail)})
    yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd
    httpd.shutdown()
    httpd.server_close()


def test_transformers_presets_pin_the_model_and_keep_it_offline():
    cmd, p = preset_command("transformers", "/models/my llama", 1, 9001)
    assert cmd[0] == sys.executable and cmd[1:4] == ["-m", "transformers.cli.transformers", "serve"]
    assert cmd[4] == "/models/my llama" and cmd[cmd.index("--port") + 1] == "9001"
    assert p["ready"] == "/health" and p["endpoint"] == "/v1/completions"
    assert p["env"] == {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cb, _ = preset_command("transformers-cb", "/m", 1, None)
    assert "--continuous-batching" in cb and "--continuous-batching" not in cmd


def test_error_samples_carry_the_servers_reason(pinned):
    url, _ = pinned
    result = send_load(url, LoadSpec(requests=2, concurrency=1, input_tokens=4, output_tokens=2))
    assert result.errors == 2 and result.ok == 0
    assert result.summary()["error_samples"][0] == \
        "HTTP 400: {\"detail\": \"Server is pinned to '/models/llama'; requested 'default'.\"}"


def test_the_load_names_the_model_it_is_told(pinned):
    """``model=`` of --load (the CLI defaults it to --model) is what the request carries."""
    assert LoadSpec.parse("requests=1,model=/models/llama").model == "/models/llama"


def test_a_ready_url_answering_500_fails_at_once_with_the_answer(pinned):
    url, _ = pinned
    with pytest.raises(ServeFailed) as e:
        wait_ready(url + "/v1/models", timeout_s=60, alive=lambda: True, interval=0.05)
    assert "answered HTTP 500" in e.value.message and "Internal Server Error" in e.value.message
    assert "ready_url" in str(e.value)
    assert wait_ready(url + "/health", timeout_s=5, alive=lambda: True) < 5


def test_a_server_still_starting_is_waited_for_and_the_timeout_says_the_last_answer():
    httpd = _server({("GET", "/health"): (503, {"detail": "loading"})})
    try:
        with pytest.raises(ServeFailed) as e:
            wait_ready(f"http://127.0.0.1:{httpd.server_address[1]}/health", timeout_s=0.5, alive=lambda: True,
                       interval=0.05)
        assert "did not answer 200" in e.value.message and "HTTP 503" in e.value.message
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_port_answered_by_another_program_is_named(pinned):
    import os

    _, httpd = pinned
    port = httpd.server_address[1]
    assert os.getpid() in listeners(port)
    with pytest.raises(ServeFailed) as e:
        check_answered_by(port, ours={1})
    assert f"pid {os.getpid()}" in e.value.message and "not the server align started" in e.value.message
    check_answered_by(port, ours={os.getpid()})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        assert listeners(s.getsockname()[1]) == set()  # bound, not listening
