"""One side object through compare (align.ProfileSide), and library errors that name parameters,
not CLI flags (align.errors.arg), on the shipped real profiles."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pandas as pd
import pytest

import align
from align.compare.diff import compare
from align.errors import AlignError, arg, render
from tests.conftest import ROOT, run_align

EX = ROOT / "profiles" / "examples"
SELF_ATTN = r"^layers\.\d+\.self_attn$"


def _same(a, b) -> None:
    pd.testing.assert_frame_equal(a.table.reset_index(drop=True), b.table.reset_index(drop=True))
    assert (a.mock.range_used, a.e2e.range_used, a.op) == (b.mock.range_used, b.e2e.range_used, b.op)


def test_a_side_object_compares_like_the_keyword_shorthands():
    """An opened Profile with its own range is the same comparison as paths plus e2e_range=."""
    mock, e2e = EX / "hf_llama_mock", EX / "hf_llama_e2e" / "report.sqlite"
    by_words = compare(mock, e2e, e2e_range=SELF_ATTN)
    side = align.ProfileSide(align.load(e2e), range=SELF_ATTN)
    by_side = compare(mock, side)
    _same(by_words, by_side)
    assert by_side.e2e.range_used == SELF_ATTN and len(by_side.table)


def test_a_side_carries_its_process_selection():
    """select={rank: 1} on the side keeps rank 1 of the two-process E2E, as e2e_select= does."""
    mock, e2e = EX / "hf_dsa_mock", EX / "hf_dsa_e2e_ranks"
    by_words = compare(mock, e2e, op="dsa", e2e_select={"rank": 1})
    by_side = compare(mock, align.ProfileSide(e2e, select={"rank": 1}), op="dsa")
    _same(by_words, by_side)
    assert set(by_side.e2e.items["pid"]) == set(by_words.e2e.items["pid"]) and \
        by_side.e2e.items["pid"].nunique() == 1


def test_a_setting_given_twice_is_an_error():
    side = align.ProfileSide(EX / "hf_llama_e2e", range=SELF_ATTN)
    with pytest.raises(AlignError, match="set it in one place") as exc:
        compare(EX / "hf_llama_mock", side, e2e_range="attn")
    assert "e2e_range" in str(exc.value)


def test_a_side_that_is_not_a_profile_is_one_line():
    with pytest.raises(AlignError, match="the mock side is a int"):
        compare(42, EX / "llama_e2e", op="attention")


def test_marked_parameters_read_as_keywords_in_python_and_flags_in_the_cli():
    from align.cli.main import cli_flag

    text = f"pass {arg('mock_range', 'REGEX')} or {arg('forced', 'True')}; {arg('timing', 'False')}; {arg('subset')}"
    assert render(text) == "pass mock_range=REGEX or forced=True; timing=False; subset"
    assert render(text, cli_flag) == "pass --mock-range REGEX or --force; --check-only; --cases"


def test_one_library_error_two_faces():
    with pytest.raises(AlignError) as exc:
        align.diff(EX / "attn_mock", EX / "llama_e2e", op="attention", skip=-1)
    assert str(exc.value).startswith("skip=-1 is negative") and "--" not in str(exc.value)
    r = run_align("diff", str(EX / "attn_mock"), str(EX / "llama_e2e"), "--op", "attention", "--skip", "-1")
    assert r.returncode == 2 and "align: error: --skip -1 is negative" in r.stderr, r.stderr
    assert "\x1f" not in r.stderr


# "align ops --list", "nsys export --type sqlite": naming a command to run is not a library flag
COMMAND = re.compile(r"\b(?:align|nsys) [a-z][a-z-]*(?: (?!--)[a-z0-9]+)*(?: --?[a-z][a-z-]*(?: (?!--)[^\s,;)]+)?)*")
ERRORS = {"AlignError", "ServeFailed", "NsysFailed", "ProfileError", "NsysNotFound"}


def test_library_errors_spell_no_cli_flags():
    """Outside the CLI (cli/, output.py), an error's literal text holds no --flag: parameters go
    through arg(), which the CLI words as its flags."""
    found = []
    for path in sorted((ROOT / "align").rglob("*.py")):
        if "cli" in path.parts or path.name == "output.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            name = getattr(node.func, "id", getattr(node.func, "attr", None)) if isinstance(node, ast.Call) else None
            if name in ERRORS:
                text = " ".join(c.value for a in node.args for c in ast.walk(a)
                                if isinstance(c, ast.Constant) and isinstance(c.value, str))
                if re.search(r"(?<![\w-])--[a-z]", COMMAND.sub("", text)):
                    found.append(f"{Path(path).relative_to(ROOT)}:{node.lineno}")
    assert not found, found


def test_the_readmes_python_section_runs(tmp_path):
    """Every line of the README's Python block but the capture (which needs a program to profile),
    against a store whose examples/ are the shipped ones."""
    import subprocess
    import sys

    text = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(import align\n.*?)```", text, re.S).group(1)
    code = "\n".join(line for line in block.splitlines() if "align.capture(" not in line)
    assert "align.ProfileSide(" in code and "align.verdict(" in code
    store = tmp_path / "store"
    store.mkdir()
    (store / "examples").symlink_to(EX)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "ALIGN_STORE": str(store)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert list((store / "verdicts").rglob("*.json")), "align.verdict() recorded nothing"
