"""The import contract (README "Architecture"): imports point one way, no package cycle."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.architecture.importgraph import (
    ROOT,
    iter_imports,
    layer_violations,
    load_contract,
    package_cycles,
)


def test_imports_point_down_and_siblings_are_independent():
    dirs, layers = load_contract()
    assert layer_violations(iter_imports(dirs), layers) == []


def test_no_package_level_cycle():
    dirs, _ = load_contract()
    assert package_cycles(iter_imports(dirs), set(dirs)) == []


def test_every_installed_package_is_in_a_layer():
    dirs, layers = load_contract()
    assert set(dirs) == {pkg for row in layers for pkg in row}


def test_a_wrong_way_import_fails_the_contract(tmp_path: Path):
    """A physics module importing a flow (inside a function, as cycles used to hide) is caught."""
    dirs, layers = load_contract()
    fake = tmp_path / "physics"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "bad.py").write_text("def f():\n    from rntflow.flows.process_study import process_study\n")
    (fake / "sideways.py").write_text("import rntflow.listener.spool\n")
    problems = layer_violations(iter_imports({"rntflow.physics": fake}), layers)
    assert len(problems) == 2, problems
    assert any("bad.py:2" in p and "(up: rntflow.physics -> rntflow.flows)" in p for p in problems)
    assert any("(sideways: rntflow.physics -> rntflow.listener)" in p for p in problems)


def test_a_package_cycle_is_found(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, other in ((a, "b"), (b, "a")):
        folder.mkdir()
        (folder / "__init__.py").write_text("")
        (folder / "m.py").write_text(f"def f():\n    import rntflow.{other}.m\n")
    dirs = {"rntflow.a": a, "rntflow.b": b}
    assert package_cycles(iter_imports(dirs), set(dirs)) == [["rntflow.a", "rntflow.b"]]


def test_only_rntflow_is_installed_at_top_level():
    """``pip install .`` adds one import name: the wheel's top-level folders are only ``rntflow``."""
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert all(p == "rntflow" or p.startswith("rntflow.") for p in data["packages"])
    assert set(data["package-dir"]) == set(data["packages"])


def test_no_module_imports_the_old_generic_names():
    generic = {"listener", "harmonization", "dosimetry", "tasks", "flows", "warehouse", "simulation"}
    dirs, _ = load_contract()
    offenders = []
    for folder in {*dirs.values(), ROOT / "tests", ROOT / "benchmarks"}:
        for path in folder.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module]
                    if isinstance(node, ast.ImportFrom) and node.module and not node.level
                    else []
                )
                offenders += [f"{path}:{node.lineno} {n}" for n in names if n.split(".")[0] in generic]
    assert offenders == []
