"""Every test session gets a registry cache of its own, never the user's (~/.cache/imagegate/registry).

Tests count registry requests; entries a previous run (or the user) left would answer for them. The
variable is set in ``os.environ`` so the processes tests start (the CLI, Airflow, Dagster) inherit it.
Only this directory is replaced: the rest of ``~/.cache/imagegate`` (Kubernetes binaries, base images)
stays shared.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_KEY = "IMAGEGATE_REGISTRY_CACHE_DIR"


def pytest_configure(config: pytest.Config) -> None:
    directory = tempfile.mkdtemp(prefix="imagegate-test-registry-cache-")  # mode 0700
    config._imagegate_cache = (directory, os.environ.get(_KEY))  # type: ignore[attr-defined]
    os.environ[_KEY] = os.path.join(directory, "registry")


def pytest_unconfigure(config: pytest.Config) -> None:
    directory, previous = getattr(config, "_imagegate_cache", (None, None))
    if directory is None:
        return
    if previous is None:
        os.environ.pop(_KEY, None)
    else:
        os.environ[_KEY] = previous
    shutil.rmtree(directory, ignore_errors=True)
