"""The public surface: a sorted __all__ that resolves, and a cheap, orchestrator-free import."""

from __future__ import annotations

import json
import subprocess
import sys

import imagegate


def test_all_is_sorted_and_complete() -> None:
    assert imagegate.__all__ == sorted(imagegate.__all__, key=lambda n: (not n.isupper(), n))
    for name in imagegate.__all__:
        assert getattr(imagegate, name) is not None, name


def test_exceptions_form_one_tree() -> None:
    for name in imagegate.__all__:
        obj = getattr(imagegate, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, imagegate.ImagegateError), name


def test_import_pulls_in_no_orchestrator_or_http_stack() -> None:
    code = (
        "import sys, json, imagegate; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('docker','kubernetes','airflow','dagster','dagster_docker','dagster_k8s','httpx','airflow_plugin','dagster_integration'))))"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert loaded == []
