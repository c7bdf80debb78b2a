"""The store never loses data: no name reaches the store itself or a folder it owns, one capture per
entry at a time, and a capture ended by SIGTERM or SIGKILL never stays ``running`` (real nsys 2022.4)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from align.errors import AlignError
from align.store import Store

from .conftest import ROOT, run_align

SLEEPER = [sys.executable, "-c", "import time; time.sleep(6)"]


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def store(tmp_path):
    """A store holding the shipped examples, a verdict record and one ordinary entry."""
    root = tmp_path / "profiles"
    for name in ("attn_mock", "llama_e2e"):
        shutil.copytree(ROOT / "profiles/examples" / name, root / "examples" / name)
    (root / "verdicts" / "attention").mkdir(parents=True)
    (root / "verdicts" / "attention" / "x.json").write_text("{}")
    shutil.copytree(ROOT / "profiles/examples/attn_mock", root / "mine")
    (root / "group" / "a").mkdir(parents=True)  # a folder of entries, not an entry
    shutil.copytree(ROOT / "profiles/examples/attn_mock", root / "group" / "a" / "inner")
    return root


@pytest.mark.parametrize("name", [".", "./.", "examples", "verdicts", "x/..", "../up", "group", "a/b/c", "",
                                  "/abs"])
def test_no_name_deletes_what_is_not_an_entry(store, name):
    before = _files(store)
    r = run_align("profile", "mock", "--name", name, "--overwrite", "--store", str(store), "--",
                  sys.executable, "-c", "pass")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert _files(store) == before


def test_overwrite_replaces_only_an_entry(store):
    for folder in ("group", "group/a"):
        with pytest.raises(AlignError, match="not a profile entry"):
            Store(store).create(folder, overwrite=True)
        assert not (store / f".{Path(folder).name}.lock").exists() and (store / "group/a/inner/meta.json").exists()
    d = Store(store).create("mine", overwrite=True)
    assert d.is_dir() and not any(d.iterdir())
    Store(store).release("mine")


def test_store_that_is_a_file(tmp_path):
    f = tmp_path / "store"
    f.write_text("not a folder")
    r = run_align("profile", "mock", "--name", "x", "--store", str(f), "--", sys.executable, "-c", "pass")
    assert r.returncode == 2 and "a folder you can write" in r.stderr and "Traceback" not in r.stderr
    assert f.read_text() == "not a folder"


def _start_capture(store: Path, name: str, cmd: list[str] = SLEEPER) -> subprocess.Popen:
    env = {**os.environ, "ALIGN_STORE": str(store)}
    return subprocess.Popen([sys.executable, "-m", "align", "profile", "mock", "--name", name, "--overwrite",
                             "--trace", "nvtx,osrt", "--quiet", "--", *cmd], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _held_until(release: Path) -> list[str]:
    """A program that runs until ``release`` exists (2 minutes at most): a capture that is surely
    still going while the test acts, however slow the machine."""
    return [sys.executable, "-c", "import os, sys, time\nend = time.time() + 120\n"
            "while not os.path.exists(sys.argv[1]) and time.time() < end:\n    time.sleep(0.05)", str(release)]


def _wait_for(path: Path, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.1)


@pytest.mark.nsys
def test_one_capture_per_entry_at_a_time(nsys, tmp_path):
    release = tmp_path / "release"
    first = _start_capture(tmp_path, "same", _held_until(release))
    try:
        _wait_for(tmp_path / "same" / "meta.json")
        r = run_align("profile", "mock", "--name", "same", "--overwrite", "--store", str(tmp_path), "--",
                      sys.executable, "-c", "pass")
        assert r.returncode == 2 and f"being captured by process {first.pid}" in r.stderr, r.stderr
    finally:
        release.touch()
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    meta = json.loads((tmp_path / "same" / "meta.json").read_text())
    assert meta["status"] == "ok" and str(release) in meta["command_line"]  # the first capture's own command
    assert (tmp_path / "same" / "nsys.log").read_text().count("$ ") == 2  # nsys profile and export: one capture
    assert not (tmp_path / ".same.lock").exists()


@pytest.mark.nsys
def test_sigterm_ends_the_capture_as_interrupted(nsys, tmp_path):
    p = _start_capture(tmp_path, "term")
    _wait_for(tmp_path / "term" / "nsys.log")
    time.sleep(2)  # nsys is running the program
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 130 and "interrupted (SIGTERM)" in err and "Traceback" not in err, err
    meta = json.loads((tmp_path / "term" / "meta.json").read_text())
    assert meta["status"] == "interrupted" and meta["signal"] == "SIGTERM"
    assert not (tmp_path / ".term.lock").exists()


@pytest.mark.nsys
def test_sigkill_leaves_no_entry_running_forever(nsys, tmp_path):
    p = _start_capture(tmp_path, "kill")
    _wait_for(tmp_path / "kill" / "nsys.log")
    children = Path(f"/proc/{p.pid}/task/{p.pid}/children")
    _wait_for_text(children)
    nsys_pid = int(children.read_text().split()[0])
    p.kill()  # align itself, by its id; its nsys child is left to finish on its own
    p.communicate(timeout=60)
    meta = json.loads((tmp_path / "kill" / "meta.json").read_text())
    assert meta["status"] == "running" and meta["pid"] == p.pid
    listed = Store(tmp_path).list().set_index("name")
    assert listed.loc["kill", "status"] == "interrupted"
    # the stale lock of a dead process is taken over by the next capture of that name
    _wait_gone(nsys_pid)
    r = run_align("profile", "mock", "--name", "kill", "--overwrite", "--trace", "nvtx", "--store", str(tmp_path),
                  "--", sys.executable, "-c", "pass")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "kill" / "meta.json").read_text())["status"] == "ok"


def _wait_for_text(path: Path, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < end, f"{path} stayed empty"
        time.sleep(0.1)


def _wait_gone(pid: int, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() < end, f"process {pid} is still running"
        time.sleep(0.2)
