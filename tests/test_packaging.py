"""Every package folder is listed in pyproject.toml, so wheels carry all of align (and align_mock)."""

from __future__ import annotations

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from .conftest import ROOT


def test_all_packages_are_listed():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    mapped = {v: k for k, v in cfg.get("package-dir", {}).items()}
    found = set()
    for init in list((ROOT / "align").rglob("__init__.py")) + list((ROOT / "mock").rglob("__init__.py")):
        rel = init.parent.relative_to(ROOT).parts
        top = mapped.get(rel[0], rel[0])
        found.add(".".join((top,) + rel[1:]))
    assert found == listed
    assert (ROOT / "align" / "data" / "ops.toml").exists() and "data/*" in cfg["package-data"]["align"]
