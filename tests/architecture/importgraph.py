"""The import contract: rntflow's packages import each other in one direction only.

Reads the layer table from ``pyproject.toml`` (``[tool.rntflow.layers]``) and the folder
of each installed package from ``[tool.setuptools.package-dir]``, parses every module with
:mod:`ast` (imports inside functions included, ``TYPE_CHECKING`` blocks too) and reports

* a *layer violation*: a module importing a package of its own or a higher layer that is not
  its own package (siblings in one layer are independent of each other);
* a *cycle* in the package-level import graph.

import-linter does the same for ordinary layouts; it finds modules by walking the root
package's folder, so it cannot see packages that setuptools maps in from other folders
(``rntflow.flows`` lives in ``flows/``). This module is the equivalent for this layout.
"""

from __future__ import annotations

import ast
import tomllib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Import:
    """One import statement: ``importer`` (module) imports ``imported`` (module) at ``line``."""

    importer: str
    imported: str
    path: Path
    line: int


def load_contract(pyproject: Path = ROOT / "pyproject.toml") -> tuple[dict[str, Path], list[list[str]]]:
    """Package folders (``rntflow.x`` -> folder) and layers (top first) from ``pyproject.toml``."""
    data = tomllib.loads(pyproject.read_text())
    dirs = {name: pyproject.parent / folder for name, folder in data["tool"]["setuptools"]["package-dir"].items()}
    layers = [
        [f"rntflow.{p.strip()}" if p.strip() != "rntflow" else "rntflow" for p in row.split("|")]
        for row in data["tool"]["rntflow"]["layers"]["top_to_bottom"]
    ]
    return dirs, layers


def _module_name(package: str, folder: Path, path: Path) -> str:
    rel = path.relative_to(folder).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join([package, *parts])


def iter_imports(dirs: dict[str, Path]) -> list[Import]:
    """Every absolute import of an ``rntflow`` module in every installed module."""
    found: list[Import] = []
    for package, folder in dirs.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder)
            # the root package's folder holds only its own modules: mapped folders are elsewhere
            if package == "rntflow" and len(rel.parts) > 1 and f"rntflow.{rel.parts[0]}" in dirs:
                continue
            importer = _module_name(package, folder, path)
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                    names += [f"{node.module}.{a.name}" for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level > 0:
                    raise ValueError(f"{path}:{node.lineno}: relative import; use rntflow.<package>")
                for name in names:
                    if name == "rntflow" or name.startswith("rntflow."):
                        found.append(Import(importer, name, path, node.lineno))
    return found


def package_of(module: str, packages: set[str]) -> str:
    """The installed package (``rntflow.x``, or ``rntflow`` for the shell) a module belongs to."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in packages and candidate != "rntflow":
            return candidate
    return "rntflow"


def layer_violations(imports: list[Import], layers: list[list[str]]) -> list[str]:
    """Imports that point up, or sideways into a sibling package of the same layer."""
    rank = {pkg: i for i, row in enumerate(layers) for pkg in row}
    packages = set(rank)
    bad: dict[tuple, str] = {}
    for imp in imports:
        src = package_of(imp.importer, packages)
        dst = package_of(imp.imported, packages)
        if imp.imported == "rntflow" or src == dst:
            continue  # the namespace root (only __version__) and a package's own modules
        if rank[dst] <= rank[src]:
            how = "up" if rank[dst] < rank[src] else "sideways"
            where = imp.path.relative_to(ROOT) if imp.path.is_relative_to(ROOT) else imp.path
            bad.setdefault(
                (where, imp.line, dst),
                f"{where}:{imp.line}: {imp.importer} imports {imp.imported} ({how}: {src} -> {dst})",
            )
    return sorted(bad.values())


def package_cycles(imports: list[Import], packages: set[str]) -> list[list[str]]:
    """Strongly connected components with more than one package (Tarjan)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for imp in imports:
        src, dst = package_of(imp.importer, packages), package_of(imp.imported, packages)
        if src != dst and imp.imported != "rntflow":
            graph[src].add(dst)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(packages):
        if v not in index:
            visit(v)
    return out


if __name__ == "__main__":  # python tests/architecture/importgraph.py
    dirs, layers = load_contract()
    imports = iter_imports(dirs)
    problems = layer_violations(imports, layers)
    cycles = package_cycles(imports, set(dirs))
    print("\n".join(problems) or "layers: ok")
    print("\n".join(" -> ".join(c) for c in cycles) or "package cycles: none")
    raise SystemExit(1 if problems or cycles else 0)
