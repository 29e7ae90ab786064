"""Structure facts of the source tree: modules and sizes, the longest functions, import cycles.

    .venv/bin/python benchmarks/structure.py [--json]

Reads the source with ``ast`` (nothing is imported). Import cycles are counted between modules of
``imagegate`` (module-level imports, ``TYPE_CHECKING`` blocks included: a cycle there still ties
the modules together for a reader); the integrations' line counts are physical lines of ``.py`` files.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("imagegate", "airflow_plugin", "dagster_integration")
SCRIPTS = ("scripts",)


def modules(package: str) -> dict[str, Path]:
    base = ROOT / package
    out = {}
    for path in sorted(base.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts)
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        out[name] = path
    return out


def functions(path: Path) -> list[tuple[str, int, int]]:
    """(qualified name, lines, parameters) of every function in *path*."""
    tree = ast.parse(path.read_text())
    found: list[tuple[str, int, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = child.args
                count = len(args.posonlyargs) + len(args.args) + len(args.kwonlyargs)
                count -= 1 if args.args and args.args[0].arg in ("self", "cls") else 0
                lines = (child.end_lineno or child.lineno) - child.lineno + 1
                found.append((f"{prefix}{child.name}", lines, count))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")

    visit(tree, "")
    return found


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{a.name}" for a in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            strong(v)
    return out


def facts() -> dict:
    result: dict = {"packages": {}, "longest_functions": [], "most_parameters": []}
    every: list[tuple[str, int, int]] = []
    for package in PACKAGES:
        mods = modules(package)
        sizes = {name: len(path.read_text().splitlines()) for name, path in mods.items()}
        result["packages"][package] = {
            "modules": len(mods),
            "lines": sum(sizes.values()),
            "largest": sorted(sizes.items(), key=lambda kv: -kv[1])[:5],
        }
        for name, path in mods.items():
            every += [(f"{name}.{f}", lines, params) for f, lines, params in functions(path)]
    for script in sorted((ROOT / "scripts").rglob("*.py")):
        name = ".".join(script.relative_to(ROOT).with_suffix("").parts)
        result["packages"].setdefault("scripts", {"modules": 0, "lines": 0, "largest": []})
        entry = result["packages"]["scripts"]
        size = len(script.read_text().splitlines())
        entry["modules"] += 1
        entry["lines"] += size
        entry["largest"] = sorted([*entry["largest"], (name, size)], key=lambda kv: -kv[1])[:5]
        every += [(f"{name}.{f}", lines, params) for f, lines, params in functions(script)]
    result["longest_functions"] = sorted(every, key=lambda f: -f[1])[:8]
    result["most_parameters"] = sorted(every, key=lambda f: -f[2])[:5]
    core = modules("imagegate")
    graph = {name: imports(path, name, set(core)) for name, path in core.items()}
    # a package's __init__ re-exporting its submodules is not a cycle a reader has to untangle
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".") or t not in core}
    result["import_cycles"] = cycles(graph)
    result["integration_lines"] = sum(result["packages"][p]["lines"] for p in ("airflow_plugin", "dagster_integration"))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    data = facts()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    for package, entry in data["packages"].items():
        largest = ", ".join(f"{n.split('.')[-1]} {s}" for n, s in entry["largest"][:3])
        print(f"{package:20} {entry['modules']:3} modules {entry['lines']:6} lines  (largest: {largest})")
    print(f"integrations (airflow_plugin + dagster_integration): {data['integration_lines']} lines")
    print("longest functions:")
    for name, lines, params in data["longest_functions"]:
        print(f"  {lines:4} lines {params:3} params  {name}")
    print(f"import cycles in imagegate: {len(data['import_cycles'])} {data['import_cycles']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
