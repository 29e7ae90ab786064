"""The one-way import graph of the core, checked on the source (no imports executed)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "imagegate"

# module -> the imagegate modules and third-party packages it may import
ALLOWED: dict[str, set[str]] = {
    "_errors": {"_report", "_lint"},  # type-checking only
    "_reference": {"_errors"},
    "_facts": {"_errors", "_reference"},
    "_report": set(),
    "_policy": {"_errors", "_facts", "_reference"},
    "_checks": {"_facts", "_policy", "_reference", "_report"},
    "_auth": {"_errors"},
    "_lockfile": {"_errors", "_reference"},
    "_registry": {"_auth", "_errors", "_facts", "_reference", "httpx"},
    "_api": {"_checks", "_errors", "_facts", "_policy", "_reference", "_report", "_registry"},
    "_context": {"_errors"},
    "_dockerfile": {"_errors"},
    "_lint": {"_context", "_dockerfile", "_errors", "_reference"},
    "_build": {"_api", "_context", "_dockerfile", "_errors", "_lint", "_lockfile", "_policy", "_reference", "_registry", "docker"},
    "cli": {"imagegate", "_api", "_build", "_context", "_errors", "_lint", "_policy", "_registry"},
}


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "imagegate":
                found.add(parts[1] if len(parts) > 1 else "imagegate")
            elif parts[0] not in _stdlib():
                found.add(parts[0])
    return found


def _stdlib() -> frozenset[str]:
    import sys

    return frozenset(sys.stdlib_module_names) | {"__future__"}


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_module_imports_only_what_its_layer_allows(module: str) -> None:
    extra = imports_of(CORE / f"{module}.py") - ALLOWED[module]
    assert not extra, f"imagegate/{module}.py imports {sorted(extra)}"


def test_every_core_module_is_listed() -> None:
    modules = {p.stem for p in CORE.glob("*.py")} - {"__init__", "__main__"}
    assert modules == set(ALLOWED)
