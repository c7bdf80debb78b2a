"""Config values that would turn checks off or hang (issue 29 item 6): a user's ops file, verdict
config, causes file or top-k hooks file with a misspelt key or table, a value of the wrong type or out
of range, a duplicate op, an unknown {placeholder}, a regex that backtracks for hours, an empty file,
a TOML syntax error; and ``--columns`` naming a column twice. Each is one line on stderr and exit 2,
never a traceback, never a run that does not finish, nothing recorded."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from align import datafiles, regexes
from align.errors import AlignError

from .conftest import ROOT

EX = ROOT / "profiles/examples"
GUARD_S = 60  # a hang guard, not a timing: each case finishes in seconds


def align(*args: str, cwd=None, env: dict | None = None) -> subprocess.CompletedProcess:
    """The CLI in a child process with a scratch store, stopped if it runs past GUARD_S."""
    return subprocess.run([sys.executable, "-m", "align", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=GUARD_S)


def one_line(r: subprocess.CompletedProcess, *says: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) <= 2, r.stderr
    for s in says:
        assert s in r.stderr, (s, r.stderr)
    return r.stderr


# ---- ops files: align ops PROFILE --op attention --ops-file F --------------------------------------
NESTED = "repeats a part that itself repeats"
OPS_FILES = {
    "misspelt-key": ("familes = []\n", ["unknown key 'familes'", "did you mean 'families'", "known keys: ops, families"]),
    "misspelt-table": ('[[ops]]\nname = "x"\nnvtx = ["a"]\n[op.attention]\nnvtx = ["b"]\n',
                       ["unknown table [op]", "did you mean 'ops'"]),
    "misspelt-families-table": ('[[familes]]\nmatch = "a"\nfamily = "b"\n',
                                ["unknown array of tables [[familes]]", "did you mean 'families'"]),
    "misspelt-op-key": ('[[ops]]\nname = "x"\nnvtxx = ["a"]\n',
                        ["unknown key 'nvtxx' in op 'x'", "did you mean 'nvtx'", "known keys: name, description, nvtx"]),
    "misspelt-kernels": ('[[ops]]\nname = "x"\n[ops.kernel]\npytorch = ["a"]\n', ["unknown table [kernel] in op 'x'",
                                                                                  "did you mean 'kernels'"]),
    "markers-not-read": ("[markers]\ntokens = []\n", ["unknown table [markers]"]),
    "unknown-phase": ("[phases]\ndecode = 'decode'\n", ["unknown key 'decode' in [phases]", "known keys: context, generation"]),
    "duplicate-op": ('[[ops]]\nname = "x"\nnvtx = ["a"]\n[[ops]]\nname = "x"\nnvtx = ["b"]\n',
                     ["op 'x' is defined twice"]),
    "unknown-placeholder": ('[[families]]\nmatch = \'(?P<k>gemm)\'\nfamily = "{kind}_x"\n',
                            ["names {kind}", "does not capture", "named groups there: k"]),
    "positional-placeholder": ('[[families]]\nmatch = "gemm"\nfamily = "{}_x"\n', ["names {}", "does not capture"]),
    "broken-format": ('[[families]]\nmatch = \'(?P<k>gemm)\'\nfamily = "{k"\n', ["is not a format"]),
    "family-without-family": ('[[families]]\nmatch = "x"\n', ["[[families]]", "lacks family"]),
    "shared-not-bool": ('[[ops]]\nname = "x"\nshared = "yes"\n', ["op 'x' shared = 'yes'", "is not true or false"]),
    "nested-plus": ("[[families]]\nmatch = '(a+)+$'\nfamily = 'x'\n", [NESTED, "(a+)+$"]),
    "nested-x": ("[[families]]\nmatch = '(x+x+)+y'\nfamily = 'x'\n", [NESTED]),
    "nested-word": ("[[families]]\nmatch = '(\\w+)+$'\nfamily = 'x'\n", [NESTED]),
    "nested-optional": ("[[ops]]\nname = 'x'\nnvtx = ['(\\w+\\s?)+$']\n", [NESTED, "op 'x' nvtx"]),
    "nested-kernels": ("[[ops]]\nname = 'x'\n[ops.kernels]\nmine = ['(?:(gemm)+_?)+!']\n", [NESTED, "kernels.mine"]),
    "nested-iteration": ("[iterations]\nmine = '^step (\\d+_?)*$'\n", [NESTED, "[iterations] mine"]),
    "bad-regex": ('[[ops]]\nname = "x"\nnvtx = ["(a"]\n', ["bad regex in op 'x' nvtx", "'(a' is not a regex",
                                                           "missing )"]),
    "bad-family-regex": ("[[families]]\nmatch = '[z-a]'\nfamily = 'x'\n", ["bad regex in [[families]] match",
                                                                            "bad character range"]),
    "empty": ("", ["is empty"]),
    "only-comments": ("# my ops\n\n# nothing yet\n", ["is empty"]),
    "syntax": ("[[ops]\nname = 'x'\n", ["cannot read ops file", "line 1"]),
    "unclosed-array": ("[[ops]]\nname = 'x'\nnvtx = ['a'\n", ["cannot read ops file", "Unclosed array",
                                                                "ends at line 3"]),
}


@pytest.mark.parametrize("case", sorted(OPS_FILES))
def test_ops_file_is_checked_on_load(tmp_path, case):
    text, says = OPS_FILES[case]
    f = tmp_path / "my-ops.toml"
    f.write_text(text)
    err = one_line(align("ops", str(EX / "attn_mock"), "--op", "attention", "--ops-file", str(f)), *says)
    assert "my-ops.toml" in err  # the line names the file


def test_a_regex_no_shape_test_catches_stops_at_its_budget(tmp_path):
    """(\\w|\\w)+$ is exponential on every kernel name of word characters, but holds no repeat inside a
    repeat: the search's time budget stops it with one line naming the rule and the file."""
    f = tmp_path / "slow.toml"
    f.write_text("[[families]]\nmatch = '(\\w|\\w)+$'\nfamily = 'slow'\n")
    one_line(align("ops", str(EX / "attn_mock"), "--op", "attention", "--ops-file", str(f)),
             "the rule of family 'slow' of ops file", "slow.toml", "backtracks catastrophically")


def test_the_ops_file_an_environment_variable_names_is_checked_too(tmp_path):
    f = tmp_path / "env-ops.toml"
    f.write_text("familes = []\n")
    one_line(align("ops", str(EX / "attn_mock"), "--op", "attention", env={"ALIGN_OPS_FILE": str(f)}),
             "unknown key 'familes'", "env-ops.toml")


def test_a_good_ops_file_still_extends_the_registry(tmp_path):
    f = tmp_path / "good.toml"
    f.write_text("[[families]]\nmatch = '(?P<fn>cudnn_generated_fort_native_sdpa)_(?P<arch>sm\\d+)'\n"
                 "family = 'sdpa_{arch}'\n[[ops]]\nname = 'mine'\nnvtx = ['(\\w+::)+forward', '(\\d+\\.)+x']\n")
    r = align("ops", str(EX / "attn_mock"), "--op", "attention", "--ops-file", str(f), "-f", "csv")
    assert r.returncode == 0, r.stderr
    assert "sdpa_sm" in r.stdout or "family" in r.stdout.splitlines()[0]


# ---- verdict configs: align verdict MOCK E2E --op attention --config F -----------------------------
CONFIGS = {
    "misspelt-key": ("[verdict]\nnames_shar = 0.9\n", ["unknown key 'names_shar' in [verdict]", "did you mean 'names_share'"]),
    "misspelt-table": ("[verdikt]\nnames_share = 0.9\n", ["unknown table [verdikt]", "did you mean 'verdict'"]),
    "key-outside-its-table": ("names_share = 0.9\n", ["unknown key 'names_share'", "it belongs in [verdict]"]),
    "string-number": ('[verdict]\nnames_share = "0.9"\n', ["names_share = '0.9'", "is not a number"]),
    "negative-ratio": ("[diff]\nlatency_ratio = -1.5\n", ["[diff] latency_ratio = -1.5", "out of range", ">= 1"]),
    "share-above-one": ("[verdict]\nmissing_share = 1.5\n", ["missing_share = 1.5", "out of range", "<= 1"]),
    "zero-names-share": ("[verdict]\nnames_share = 0\n", ["names_share = 0", "out of range", "> 0"]),
    "nan": ("[pairing]\nshape_weight = nan\n", ["shape_weight = nan", "not a finite number"]),
    "graph-string": ('[verdict]\ngraph = "yes"\n', ["graph = 'yes'", "is not true or false"]),
    "unknown-op": ('[e2e]\nattn = "self_attn"\n', ["[e2e] attn", "names no op", "did you mean 'attention'"]),
    "op-path": ('[e2e]\n"../x" = "self_attn"\n', ["'../x'", "is not an op name"]),
    "accept-not-string": ('[accept]\n"x" = 3\n', ["[accept] x = 3", "is not a string"]),
    "nested-range": ("[mock]\nrange = '^(mock_\\w+)+$'\n", [NESTED, "[mock] range"]),
    "nested-e2e": ("[e2e]\nattention = '(\\w+\\.?)+self_attn$'\n", [NESTED, "[e2e] attention"]),
    "empty": ("\n", ["is empty"]),
    "syntax": ("[verdict\nnames_share = 0.9\n", ["cannot read config", "line 1"]),
}


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_verdict_config_is_checked_and_nothing_recorded(tmp_path, case):
    text, says = CONFIGS[case]
    f = tmp_path / "v.toml"
    f.write_text(text)
    store = tmp_path / "store"
    one_line(align("verdict", str(EX / "attn_mock"), str(EX / "llama_e2e"), "--op", "attention", "--config", str(f),
                   "--store", str(store)), *says)
    assert not store.exists()


def test_a_good_verdict_config_still_applies(tmp_path):
    f = tmp_path / "v.toml"
    f.write_text("[verdict]\nlatency_ratio = 3\n[e2e]\nattention = 'self_attn'\n")
    r = align("verdict", str(EX / "attn_mock"), str(EX / "llama_e2e"), "--op", "attention", "--config", str(f),
              "--no-record")
    assert r.returncode in (0, 1) and "Traceback" not in r.stderr, r.stderr


# ---- causes files: align verdict ... --causes F ------------------------------------------------------
CAUSES = {
    "misspelt-table": ("[dtypes]\nmin_share = 0.5\n", ["unknown table [dtypes]", "did you mean 'dtype'"]),
    "misspelt-key": ("[dtype]\nmin_shar = 0.5\n", ["unknown key 'min_shar' in [dtype]", "did you mean 'min_share'"]),
    "share-negative": ("[dtype]\nmin_share = -0.5\n", ["min_share = -0.5", "out of range"]),
    "share-string": ('[dtype]\nmin_share = "half"\n', ["is not a number"]),
    "misspelt-kind": ('[words.dtyp]\nsays = "x"\n', ["unknown table [dtyp] in [words]", "did you mean 'dtype'"]),
    "misspelt-wording": ('[words.dtype]\nsay = "x"\n', ["unknown key 'say' in [words.dtype]", "did you mean 'says'"]),
    "misspelt-required": ('[[implementations]]\nof = "attention"\nname = "x"\napi = "y"\nkernel = ["z"]\n',
                          ["unknown key 'kernel' in [[implementations]]", "did you mean 'kernels'"]),
    "missing-required": ('[[implementations]]\nof = "attention"\nname = "x"\nkernels = ["z"]\n', ["lacks api"]),
    "grid-dim": ('[[batch_grids]]\nkernels = ["z"]\ndim = "w"\n', ["dim = 'w'", "is not one of x, y, z"]),
    "width-fraction": ('[[dtype.tokens]]\ndtype = "fp4"\nwidth = 4.5\npattern = "fp4"\n', ["is not a whole number"]),
    "subop-matches-nothing": ('[[subops]]\nname = "x"\n', ["sub-module 'x'", "names no modules and no kernels"]),
    "prep-string": ('prep = "randn"\n', ["prep = 'randn'", "is not a list of strings"]),
    "tokens-half": ('[tokens.moe]\nwhat = "routed tokens"\n', ["[tokens.moe]", "lacks knobs"]),
    "nested": ('[[subops]]\nname = "x"\nkernels = [\'(rope\\w+)+x\']\n', [NESTED, "[[subops]] kernels"]),
    "bad-regex": ('[[subops]]\nname = "x"\nkernels = ["("]\n', ["bad regex in [[subops]] kernels"]),
    "empty": ("# nothing\n", ["is empty"]),
    "syntax": ('[[subops]]\nname = "x\n', ["cannot read causes file", "line 2"]),
}


@pytest.mark.parametrize("case", sorted(CAUSES))
def test_causes_file_is_checked(tmp_path, case):
    text, says = CAUSES[case]
    f = tmp_path / "c.toml"
    f.write_text(text)
    err = one_line(align("verdict", str(EX / "hf_llama_mock_fp32"), str(EX / "hf_llama_e2e"), "--op", "attention",
                         "--no-record", "--causes", str(f)), *says)
    assert "c.toml" in err


# ---- top-k hooks files (./align-topk_hooks.toml or load_hooks(path)) ---------------------------------
def test_topk_hooks_file_is_checked(tmp_path):
    from align.trace.topk.engines import load_hooks

    f = tmp_path / "hooks.toml"
    entry = ('name = "mine"\nclass = "m.Indexer"\noutput = "indices"\nlayer_attr = "layer_idx"\nquery_arg = 0\n'
             'position_arg = 4\nindices_are = "positions"\nsource = "ours"\n')
    for text, says in ((f"[[engines]]\n{entry}mask_ar = 3\n", "unknown key 'mask_ar' in engine 'mine'"),
                       (f"[[engines]]\n{entry}[[engines]]\n{entry}", "engine 'mine' is defined twice"),
                       (f"[[engines]]\n{entry.replace('position_arg = 4', 'position_arg = -1')}", "out of range"),
                       (f"[[engine]]\n{entry}", "did you mean 'engines'")):
        f.write_text(text)
        with pytest.raises(AlignError, match=re.escape(says)):
            load_hooks(str(f))
    f.write_text(f"[[engines]]\n{entry}")
    assert "mine" in load_hooks(str(f))


# ---- --columns naming a column twice ------------------------------------------------------------------
@pytest.mark.parametrize("args,says", [
    (["ops", str(EX / "attn_mock"), "--op", "attention", "--columns", "family,family"], "names family twice"),
    (["ops", str(EX / "attn_mock"), "--op", "attention", "--columns", "family, phase,family", "-f", "csv"],
     "names family twice"),
    (["kernels", str(EX / "attn_mock"), "--columns", "name,name"], "names name twice"),
], ids=["ops-table", "ops-csv", "kernels"])
def test_a_column_named_twice_is_refused(args, says):
    one_line(align(*args), says)


# ---- the shipped files, and the regex shape test itself -------------------------------------------------
def test_the_shipped_files_pass_their_own_schemas():
    """What a user's file is held to, the built-in files hold to (their regexes included); the
    built-in-only tables ([markers], [[researched]]) aside."""
    from align.compare.diff import SCHEMA as VERDICT
    from align.diagnose.rules import load_rules, schema
    from align.ops.registry import SCHEMA as OPS
    from align.trace.topk.engines import SCHEMA as HOOKS

    ops = datafiles.builtin("ops")
    ops.pop("markers")
    hooks = datafiles.builtin("topk_hooks")
    hooks.pop("researched")
    for name, data, spec in (("ops", ops, OPS), ("verdict", datafiles.builtin("verdict"), VERDICT),
                             ("causes", datafiles.builtin("causes"), schema()), ("topk_hooks", hooks, HOOKS)):
        datafiles.validate(data, spec, f"align/data/{name}.toml")
    # prep once sat below the [[subops]] tables, so TOML read it as the last sub-module's key
    assert load_rules().prep is not None


@pytest.mark.parametrize("pattern", [r"(a+)+$", r"(x+x+)+y", r"(\w+)+$", r"(\w+\s?)+$", r"(?:(a+)b?)+",
                                     r"(\w+\d+)+", r"(a*)*", r"((ab)*c?)*x", r"(.*,)*z"])
def test_backtracking_shapes_are_found(pattern):
    assert regexes.backtracks(pattern, re.IGNORECASE)


@pytest.mark.parametrize("pattern", [r"(\w+::)+", r"(\d+\.)+", r"(a|b)+", r"^nvjet_(sm\d+_)?(?P<kind>[a-z]{3})_",
                                     r"(?P<base>\w*elementwise_kernel)<.*?binary_internal::(?P<fn>\w+Functor)",
                                     r"(a++)+$", r"(?>a+)+$", r"(sm\d+_)?x", r"(ab{2}){3,}"])
def test_safe_shapes_are_kept(pattern):
    assert not regexes.backtracks(pattern, re.IGNORECASE)


def test_a_search_past_its_budget_is_one_error(monkeypatch):
    monkeypatch.setattr(regexes, "BUDGET_S", 0.2)
    rx = regexes.Guarded(re.compile(r"(\w|\w)+$"), "the rule of family 'slow'", "ops file x.toml")
    with pytest.raises(AlignError, match="backtracks catastrophically"):
        rx.search("a" * 60 + "(")
    assert rx.search("abc") is not None  # the timer is off again: later searches run as ever
    import pickle

    assert pickle.loads(pickle.dumps(rx)).search("abc") is not None  # it travels to Dask workers as a regex does
