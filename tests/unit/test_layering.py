"""The one-way import graph of the core, checked on the source (no imports executed)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "imagegate"

# module -> the imagegate modules and third-party packages it may import.
# The check path (everything outside build/) never imports the build wing.
ALLOWED: dict[str, set[str]] = {
    "_errors": {"_report"},  # type-checking only
    "_reference": {"_errors"},
    "_patterns": {"_errors", "re2"},
    "_tags": {"_errors", "_patterns"},
    "_facts": {"_errors", "_reference"},
    "_report": set(),
    # _cosign: [[signatures]] / [[vulnerabilities]] keys; _predicates, _vulns: [[vulnerabilities]] types and levels
    "_policy": {"_cosign", "_errors", "_facts", "_patterns", "_predicates", "_reference", "_tags", "_vulns"},
    "_checks": {"_cosign", "_facts", "_policy", "_reference", "_report", "_tags", "_user", "_vulns"},
    "_predicates": set(),  # the predicate types attestations carry (one table for writers and readers)
    "_vulns": {"_json", "_predicates"},  # vulnerability reports read from verified predicates; the rule's verdict
    # cosign signatures: keys, finding and verifying (the client's request path; _registry/_transport for types)
    "_cosign": {"_documents", "_errors", "_json", "_reference", "_registry", "_transport", "cryptography"},
    # imagegate verify, verify-attestation (--policy: the [[vulnerabilities]] verdict and its report lines)
    "_cosign_cli": {"_cosign", "_errors", "_policy", "_predicates", "_reference", "_registry", "_report", "_vulns"},
    # signing: private keys (scrypt + nacl secretbox), registry writes, cosign's formats, predicate files, the CLI
    "_cosign_keys": {"_cosign", "_errors", "_json", "cryptography", "nacl"},
    "_push": {"_errors", "_reference", "_transport"},
    "_cosign_write": {"_cosign", "_cosign_keys", "_documents", "_errors", "_json", "_push", "_reference", "_registry"},
    "_predicate_files": {"_errors", "_json", "_predicates", "_vulns"},
    "_sign_cli": {"_cosign_cli", "_cosign_keys", "_cosign_write", "_errors", "_predicate_files", "_reference", "_registry"},
    "_user": set(),
    "_json": set(),
    "_secrets": set(),
    "_layers": set(),
    "_documents": {"_errors", "_facts", "_json", "_reference"},
    "_auth": {"_errors"},
    "_diskcache": set(),
    "_netio": {"_reference", "httpx"},
    "_transport": {"_auth", "_errors", "_json", "_netio", "_reference", "httpx"},
    "_registry": {
        "_auth", "_diskcache", "_documents", "_errors", "_facts", "_json", "_layers", "_reference", "_secrets", "_transport", "_user",
        "httpx",
    },
    "_api": {"_checks", "_cosign", "_errors", "_facts", "_policy", "_reference", "_report", "_registry", "_user",
             "_vulns"},
    "_hardening": {"_errors", "_policy"},
    "_evidence": set(),  # a signature / vulnerabilities result's details as readable lines (log, page, audit)
    "_audit": {"_errors", "_evidence", "_reference", "httpx"},  # the audit: records, filters, the api-server over HTTP
    "_audit_cli": {"_audit", "_errors"},  # `imagegate audit`'s options, and the command
    "_owner": set(),  # who launched a container: the task's ids, the launching process (/proc only)
    "_gate": {
        "_api", "_checks", "_errors", "_hardening", "_owner", "_policy", "_reference", "_registry", "_report",
        "build._builder", "build._lint", "build._lockfile",
    },
    "_gc": {"_errors", "_gate", "_hardening", "_owner", "_policy", "docker"},  # retries' predecessors, imagegate gc
    "_runspec": {"_errors", "_gate", "_hardening", "_policy"},
    "_spark": {"_errors", "_gate", "_hardening", "_owner", "_policy", "_registry", "yaml"},  # SparkApplication, spark-submit
    "_run": {"_errors", "_gate", "_hardening", "_policy", "_runspec", "docker"},
    "cli": {
        "imagegate", "_api", "_audit_cli", "_cosign_cli", "_sign_cli", "_diskcache", "_errors", "_gate", "_gc", "_policy", "_registry", "_run", "_runspec",
        "build._builder", "build._context", "build._lint",
    },
    "build": set(),
    "build._lockfile": {"_errors", "_reference"},
    "build._files": {"_errors"},
    "build._context": {"_errors", "build._files"},
    "build._dockerfile": {"_errors", "build._files", "dockerfile"},
    "build._lint": {"_errors", "_reference", "_secrets", "_user", "build._context", "build._dockerfile", "build._files"},
    "build._builder": {
        "_api", "_errors", "_policy", "_reference", "_registry", "build._context", "build._dockerfile",
        "build._files", "build._lint", "build._lockfile", "docker",
    },
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
                found.add(".".join(parts[1:3]) if parts[1:2] == ["build"] and len(parts) > 2 else (parts[1] if len(parts) > 1 else "imagegate"))
            elif parts[0] not in _stdlib():
                found.add(parts[0])
    return found


def _stdlib() -> frozenset[str]:
    import sys

    return frozenset(sys.stdlib_module_names) | {"__future__"}


def _path(module: str) -> Path:
    if module == "build":
        return CORE / "build" / "__init__.py"
    return CORE / (module.replace(".", "/") + ".py")


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_module_imports_only_what_its_layer_allows(module: str) -> None:
    extra = imports_of(_path(module)) - ALLOWED[module]
    assert not extra, f"imagegate/{module}.py imports {sorted(extra)}"


def test_every_core_module_is_listed() -> None:
    modules = {p.stem for p in CORE.glob("*.py")} - {"__init__", "__main__"}
    modules |= {"build"} | {f"build.{p.stem}" for p in (CORE / "build").glob("*.py") if p.stem != "__init__"}
    assert modules == set(ALLOWED)


# -- the doors use only the core's public face -------------------------------------------------------

ROOT = CORE.parent
DOORS = ("airflow_plugin", "dagster_integration")


def _imagegate_imports(path: Path) -> set[str]:
    """Every ``imagegate…`` module a file imports, and every ``imagegate.<name>`` attribute it reads."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "imagegate")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "imagegate":
            found.add(node.module)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "imagegate":
            found.add(f"imagegate.{node.attr}")
    return found


@pytest.mark.parametrize("path", sorted(p for door in DOORS for p in (ROOT / door).rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_doors_use_only_the_public_face_of_the_core(path: Path) -> None:
    import imagegate

    for name in _imagegate_imports(path):
        parts = name.split(".")
        assert len(parts) <= 2, f"{path.name} imports the core's module {name}: use `import imagegate`"
        if len(parts) == 2:
            assert parts[1] in imagegate.__all__, f"{path.name} uses imagegate.{parts[1]}, which is not public"
