"""Reports: the HTML opens in a real headless browser (Debian's chromium) and shows the plots."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from .conftest import ROOT, run_align

EX = ROOT / "profiles/examples"


@pytest.fixture(scope="module")
def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        if os.environ.get("ALIGN_REQUIRE_CHROMIUM") == "1":
            pytest.fail("ALIGN_REQUIRE_CHROMIUM=1 but chromium is not installed")
        pytest.skip("chromium not installed (scripts/test.sh installs Debian's)")
    return path


def _browse(chromium: str, page, tmp_path, *extra: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
             "--enable-logging=stderr", "--v=0"]
    return subprocess.run([chromium, *flags, *extra, page.as_uri()], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("mock,status", [("attn_mock", "PASS"), ("attn_mock_extra", "FAIL")])
def test_html_report_renders_in_chromium(chromium, tmp_path, mock, status):
    html, md = tmp_path / "report.html", tmp_path / "report.md"
    r = run_align("report", str(EX / mock), str(EX / "llama_e2e"), "--op", "attention", "-o", str(html),
                  "--markdown", str(md))
    assert r.returncode == 0, r.stderr
    assert md.read_text().startswith(f"### align verdict: {status}")
    text = html.read_text()
    assert "<script" not in text and "http" not in text.replace('http://www.w3.org/2000/svg', '')
    dom = _browse(chromium, html, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert f"align verdict: {status}" in dom.stdout
    # the browser parsed both plots of both phases: one bar per family and side, one point per forward
    assert len(re.findall(r'class="bar mock"', dom.stdout)) == len(re.findall(r'class="bar e2e"', dom.stdout)) > 10
    assert dom.stdout.count("<svg") == 6 and len(re.findall(r'class="point ', dom.stdout)) > 40
    assert len(re.findall(r'class="kernel mock"', dom.stdout)) > 10 and len(re.findall(r'class="kernel e2e"', dom.stdout)) > 10
    assert "Uncaught" not in dom.stderr and "CONSOLE" not in dom.stderr
    shot = tmp_path / "shot.png"
    s = _browse(chromium, html, tmp_path, f"--screenshot={shot}", "--window-size=1200,1600")
    assert s.returncode == 0 and shot.stat().st_size > 20_000


def test_report_shows_the_pairing(chromium, tmp_path):
    """A pair whose E2E run names no phase: the report says which E2E forwards each mock phase met, and why."""
    html, md = tmp_path / "report.html", tmp_path / "report.md"
    r = run_align("report", str(EX / "hf_dsa_mock"), str(EX / "hf_dsa_e2e_steps"), "--op", "dsa", "-o", str(html),
                  "--markdown", str(md))
    assert r.returncode == 0, r.stderr
    dom = _browse(chromium, html, tmp_path, "--dump-dom")
    assert dom.returncode == 0 and "<h2>Pairing</h2>" in dom.stdout
    assert "engine steps" in dom.stdout and "not compared: mixed steps" in dom.stdout
    text = md.read_text()
    assert "**pairing**" in text and "paired by engine steps" in text


def test_plots_have_axes_with_round_ticks_covering_the_data(chromium, tmp_path):
    """Every plot has labelled ticks; the timeline's y ticks span every forward's latency."""
    from align.compare.report import nice_ticks

    html = tmp_path / "report.html"
    r = run_align("report", str(EX / "hf_llama_mock"), str(EX / "hf_llama_e2e"), "--op", "attention", "-o", str(html))
    assert r.returncode == 0, r.stderr
    dom = _browse(chromium, html, tmp_path, "--dump-dom").stdout
    svgs = re.findall(r"<svg.*?</svg>", dom, re.S)
    assert len(svgs) == 6
    for svg in svgs:
        ticks = re.findall(r'<text class="tick"[^>]*text-anchor="(end|middle)">([\d,.]+)</text>', svg)
        numbers = {a: [float(v.replace(",", "")) for k, v in ticks if k == a] for a in ("end", "middle")}
        if 'class="kernels"' in svg:  # start offsets in us from 0 past the last kernel's end
            ends = [float(a.replace(",", "")) + float(b.replace(",", ""))
                    for a, b in re.findall(r": \+([\d,.]+) us, ([\d,.]+) us \(", svg)]
            xs = numbers["middle"]
            assert len(ends) > 10 and len(xs) >= 3 and xs == sorted(xs) and xs[0] == 0 and xs[-1] >= max(ends)
        elif 'class="timeline"' in svg:  # y ticks end-anchored left of the axis, forward numbers under it
            values = [float(x.replace(",", "")) for x in re.findall(r"<title>(?:mock|e2e): ([\d,]+) ns", svg)]
            ys, xs = numbers["end"], numbers["middle"]
            assert len(ys) >= 3 and ys == sorted(ys) and ys[0] <= min(values) and ys[-1] >= max(values)
            assert len(xs) >= 2 and all(x == int(x) for x in xs)
        else:  # the value axis of the bars starts at 0 and passes the longest bar
            values = [float(x.replace(",", "")) for x in re.findall(r"<title>(?:mock|e2e): ([\d,]+) ns", svg)]
            xs = numbers["middle"]
            assert len(xs) >= 3 and xs == sorted(xs) and xs[0] == 0 and xs[-1] >= max(values)
    assert nice_ticks(0, 97) == [0, 20, 40, 60, 80, 100] and nice_ticks(1234, 1290, 4) == [1220, 1240, 1260, 1280, 1300]
