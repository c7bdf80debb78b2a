"""`align profile` with the real nsys on a CPU program: capture, export, and what the reader gets back."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import align

from .conftest import PROGRAMS, ROOT, run_align

pytestmark = pytest.mark.nsys


@pytest.fixture(scope="module")
def captured(nsys, tmp_path_factory):
    """One real capture of the two-thread NVTX program through `align profile mock` with its defaults."""
    tmp = tmp_path_factory.mktemp("cpu")
    truth = tmp / "truth.json"
    r = run_align("profile", "mock", "--name", "threads", "--store", str(tmp / "store"), "--",
                  sys.executable, str(PROGRAMS / "nvtx_threads.py"), str(truth))
    assert r.returncode == 0, r.stderr
    return tmp / "store" / "threads", json.loads(truth.read_text()), r


def test_store_entry_has_report_export_log_and_meta(captured, nsys):
    entry, _, _ = captured
    assert {"report.nsys-rep", "report.sqlite", "nsys.log", "meta.json"} <= {p.name for p in entry.iterdir()}
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["status"] == "ok" and meta["exit_code"] == 0 and meta["kind"] == "mock"
    assert meta["nsys"]["version"] == nsys.version and meta["nsys"]["path"] == nsys.path
    cmd = meta["nsys_command"]
    for flag, value in [("--trace", "cuda,nvtx"), ("--sample", "none"), ("--cpuctxsw", "none"),
                        ("--cuda-graph-trace", "node"), ("--force-overwrite", "true")]:
        assert cmd[cmd.index(flag) + 1] == value
    assert meta["command"][-2].endswith("nvtx_threads.py")
    assert meta["host"] and meta["start_time"] and meta["end_time"] and "git" in meta
    log = (entry / "nsys.log").read_text()
    assert "nsys profile" in log or " profile " in log
    assert " export " in log


def test_ranges_nesting_and_threads_read_back(captured):
    entry, truth, _ = captured
    with align.load(entry / "report.sqlite") as p:
        df = p.nvtx()
    assert set(df["pid"]) == {truth["main"]["pid"]}
    iters = truth["iters"]
    for key, domain in (("main", "align_test"), ("worker", None)):
        t = df[df["tid"] == truth[key]["tid"]]
        ranges = t[t["style"] == "PushPop"]
        assert sorted(ranges["text"]) == sorted([f"iteration_{i}" for i in range(iters)] + ["layer"] * iters
                                                + ["attn"] * iters)
        depth = ranges.groupby("text")["depth"].agg(set).to_dict()
        assert depth["layer"] == {1} and depth["attn"] == {2}
        assert all(depth[f"iteration_{i}"] == {0} for i in range(iters))
        domains = set(ranges["domain"].dropna())
        assert domains == ({domain} if domain else set())
        # every attn lies inside a layer of the same iteration on the same thread
        for _, a in ranges[ranges["text"] == "attn"].iterrows():
            parents = ranges[(ranges["start"] <= a["start"]) & (ranges["end"] >= a["end"]) & (ranges["depth"] == 1)]
            assert parents["text"].tolist() == ["layer"]
    main = df[df["tid"] == truth["main"]["tid"]]
    assert main[main["style"] == "Mark"]["text"].tolist() == ["done"]
    assert main[main["style"] == "StartEnd"]["text"].tolist() == ["tail"]


def test_processes_and_threads(captured):
    entry, truth, _ = captured
    with align.load(entry / "report.sqlite") as p:
        procs = p.processes()
        assert procs["pid"].tolist() == [truth["main"]["pid"]]
        threads = p.threads()
        tids = set(threads[threads["pid"] == truth["main"]["pid"]]["tid"])
        assert {truth["main"]["tid"], truth["worker"]["tid"]} <= tids
        assert not p.has_kernels


def test_cli_on_a_cpu_only_profile(captured):
    entry, _, _ = captured
    r = run_align("info", str(entry), "--format", "json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["kernels"] == 0 and info["nvtx_events"] > 0 and info["schema_version"]
    r = run_align("kernels", str(entry))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "no CUDA kernel data" in r.stderr
    r = run_align("profiles", "--store", str(entry.parent), "--format", "json")
    assert [e["name"] for e in json.loads(r.stdout)] == ["threads"]
    r = run_align("events", "threads", "--store", str(entry.parent), "--kind", "nvtx", "--format", "csv", "--limit", "0")
    assert r.returncode == 0 and r.stdout.count("attn") == 6


def test_nvtx_of_a_cpu_only_profile_equals_nsys_nvtxsum(captured, nsys):
    """No CUDA activity: align nvtx gives the CPU-side range times, the numbers of the real nsys's
    own range summary of the same file (nvtxsum in 2022.4, nvtx_sum later)."""
    entry, _, _ = captured
    r = run_align("nvtx", str(entry), "--format", "csv")
    assert r.returncode == 0, r.stderr
    report = "nvtxsum" if nsys.version.startswith("2022") else "nvtx_sum"
    out = subprocess.run([nsys.path, "stats", "--report", report, "--format", "csv", "--force-export", "false",
                          str(entry / "report.sqlite")], capture_output=True, text=True, timeout=300)
    text = out.stdout[out.stdout.index("Time (%)"):] if "Time (%)" in out.stdout else out.stdout
    theirs = pd.read_csv(io.StringIO(text))
    ours = pd.read_csv(io.StringIO(r.stdout))
    assert list(ours.columns) == list(theirs.columns)
    # 2022.4 writes a default-domain range as "text", 2025.3 (and align) as ":text"
    for df in (ours, theirs):
        df["Range"] = df["Range"].str.removeprefix(":")
    key = ["Range", "Style"]
    a, b = ours.sort_values(key).reset_index(drop=True), theirs.sort_values(key).reset_index(drop=True)
    assert len(a) == len(b) > 0
    for col in ("Total Time (ns)", "Instances", "Min (ns)", "Max (ns)"):
        assert (a[col] == b[col]).all(), col
    for col in ("Time (%)", "Avg (ns)", "Med (ns)", "StdDev (ns)"):
        assert ((a[col] - b[col]).abs() < 0.051).all(), col
    table = run_align("nvtx", str(entry))
    assert table.returncode == 0 and "CPU-side range times" in table.stderr
    _, _, capture = captured
    assert f"next: align nvtx {entry}" in capture.stderr  # a command that works for this profile


def test_nvtx_capture_range_limits_what_is_recorded(nsys, tmp_path):
    truth = tmp_path / "truth.json"
    r = run_align("profile", "mock", "-q", "--name", "cr", "--store", str(tmp_path), "--trace", "nvtx",
                  "--capture-range", "nvtx", "--nvtx-capture", "iteration_1@align_test", "--",
                  sys.executable, str(PROGRAMS / "nvtx_threads.py"), str(truth))
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "cr" / "meta.json").read_text())
    assert meta["exit_code"] == 0  # the program ran to completion ("--capture-range-end stop")
    assert truth.exists()
    with align.load(tmp_path / "cr") as p:
        df = p.nvtx()
    main = df[df["domain"] == "align_test"]
    assert main["text"].tolist() == ["iteration_1", "layer", "attn"]
    assert "done" not in set(df["text"])


def test_failing_program_keeps_its_profile(nsys, tmp_path):
    r = run_align("profile", "e2e", "-q", "--name", "fails", "--store", str(tmp_path), "--trace", "nvtx", "--",
                  sys.executable, "-c", "import sys, nvtx; nvtx.mark('before'); sys.exit(3)")
    assert r.returncode == 1
    assert "exited with 3" in r.stderr
    meta = json.loads((tmp_path / "fails" / "meta.json").read_text())
    assert meta["status"] == "app-failed" and meta["exit_code"] == 3 and meta["kind"] == "e2e"
    with align.load(tmp_path / "fails") as p:
        assert p.nvtx()["text"].tolist() == ["before"]


def test_store_refuses_to_overwrite_without_flag(nsys, tmp_path):
    args = ["profile", "mock", "-q", "--name", "x", "--store", str(tmp_path), "--trace", "nvtx", "--",
            sys.executable, "-c", "pass"]
    assert run_align(*args).returncode == 0
    r = run_align(*args)
    assert r.returncode == 2 and "already exists" in r.stderr and "--overwrite" in r.stderr
    r = run_align(*args[:-4], "--overwrite", *args[-4:])
    assert r.returncode == 0, r.stderr


def test_extra_nsys_flags_pass_through(nsys, tmp_path):
    r = run_align("profile", "mock", "-q", "--name", "x", "--store", str(tmp_path), "--trace", "nvtx",
                  "--export=none", "--", sys.executable, "-c", "print('child --name flag stays mine')")
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "x" / "meta.json").read_text())
    assert "--export=none" in meta["nsys_command"]
    assert meta["command"] == [sys.executable, "-c", "print('child --name flag stays mine')"]


def test_bad_nsys_flag_fails_cleanly(nsys, tmp_path):
    r = run_align("profile", "mock", "-q", "--name", "x", "--store", str(tmp_path), "--trace", "nvtx",
                  "--no-such-nsys-flag", "--", sys.executable, "-c", "pass")
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    meta = json.loads((tmp_path / "x" / "meta.json").read_text())
    assert meta["status"] == "no-report"
    assert "usage" in (tmp_path / "x" / "nsys.log").read_text().lower()


def test_export_command_and_reexport(captured, tmp_path):
    entry, _, _ = captured
    rep = tmp_path / "copy.nsys-rep"
    shutil.copy(entry / "report.nsys-rep", rep)
    r = run_align("export", str(rep))
    assert r.returncode == 0, r.stderr
    with align.load(tmp_path / "copy.sqlite") as a, align.load(entry / "report.sqlite") as b:
        assert a.nvtx()["text"].tolist() == b.nvtx()["text"].tolist()
    # load() of a .nsys-rep uses the fresh export beside it
    with align.load(rep) as p:
        assert p.path == tmp_path / "copy.sqlite"


def test_missing_nsys_is_one_line_and_exit_2(tmp_path):
    r = run_align("doctor", env={"NSYS": str(tmp_path / "nope")})
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "NSYS=" in r.stderr and "install" in r.stderr
    r = run_align("profile", "mock", "--", "true", env={"NSYS": str(tmp_path / "nope")})
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_qdstrm_left_behind_is_imported(nsys, tmp_path):
    """An nsys whose importer is not where it looks leaves a .qdstrm; align runs the importer itself."""
    if not nsys.importer:
        pytest.skip("no QdstrmImporter beside this nsys")
    target = Path(os.path.realpath(nsys.path)).parent
    fake = tmp_path / "nsys" / "target-linux-x64"
    fake.mkdir(parents=True)
    for f in target.iterdir():
        if f.name != "nsys":
            (fake / f.name).symlink_to(f)
    shutil.copy2(target / "nsys", fake / "nsys")  # a copy, so nsys looks for its importer beside the copy
    env = {"NSYS": str(fake / "nsys"), "NSYS_IMPORTER": nsys.importer}
    r = run_align("doctor", "--format", "json", env={"NSYS": str(fake / "nsys")})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["can_import"] is False
    r = run_align("profile", "mock", "-q", "--name", "q", "--store", str(tmp_path / "store"), "--trace", "nvtx",
                  "--", sys.executable, "-c", "import nvtx; nvtx.mark('m')", env=env)
    assert r.returncode == 0, r.stderr
    entry = tmp_path / "store" / "q"
    assert (entry / "report.qdstrm").exists() and (entry / "report.nsys-rep").exists()
    assert "QdstrmImporter" in (entry / "nsys.log").read_text()
    with align.load(entry) as p:
        assert p.nvtx()["text"].tolist() == ["m"]


def test_nvtx_package_that_nsys_2022_drops_is_named(nsys, tmp_path):
    """Python nvtx 0.2.12 and later: nsys 2022.4 records only a domain row. align says so after the capture."""
    if not nsys.version.startswith("2022"):
        pytest.skip(f"only nsys 2022.4 drops these ranges (this is {nsys.version})")
    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                          "--target", str(site), "nvtx==0.2.12"], capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-2000:]
    prog = tmp_path / "prog.py"
    prog.write_text("import nvtx\nfor i in range(3):\n    with nvtx.annotate(f'step_{i}'):\n        sum(range(10000))\n")
    r = run_align("profile", "mock", "--name", "n", "--store", str(tmp_path / "s"), "--trace", "nvtx", "--",
                  sys.executable, str(prog), env={"PYTHONPATH": str(site)})
    assert r.returncode == 0, r.stderr
    assert "install nvtx==0.2.11" in r.stderr
    meta = json.loads((tmp_path / "s" / "n" / "meta.json").read_text())
    assert "0.2.12 on is not recorded" in meta["warning"]


def test_a_planted_capture_is_recorded_and_never_the_newest_pair(nsys, tmp_path):
    """align profile --planted records what the capture planted; align verdict --op never takes it,
    however new (here: the newest mock of op dsa, captured after the shipped ones)."""
    from align.compare.verdict import newest_pair
    from align.store import Store

    store = tmp_path / "profiles"
    shutil.copytree(ROOT / "profiles" / "examples" / "hf_dsa_mock", store / "examples" / "hf_dsa_mock")
    shutil.copytree(ROOT / "profiles" / "examples" / "hf_dsa_e2e", store / "examples" / "hf_dsa_e2e")
    r = run_align("profile", "mock", "-q", "--name", "fault", "--op", "dsa", "--planted", "a test fault",
                  "--store", str(store), "--trace", "nvtx", "--", sys.executable, "-c", "pass")
    assert r.returncode == 0, r.stderr
    meta = json.loads((store / "fault" / "meta.json").read_text())
    assert meta["planted"] == "a test fault" and meta["op"] == "dsa"
    mock, e2e, how = newest_pair(Store(store), "dsa")
    assert mock.endswith("hf_dsa_mock") and "fault" not in how
    bad = run_align("profile", "mock", "--planted", " ", "--store", str(store), "--", sys.executable, "-c", "pass")
    assert bad.returncode == 2 and "--planted names what a test capture planted" in bad.stderr
