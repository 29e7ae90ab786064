"""One fetch per image per host: separate ``imagegate`` processes against the real registry share the disk cache.

Each test gives the processes a cache directory of its own (``IMAGEGATE_REGISTRY_CACHE_DIR``) and counts,
in the registry's own access log, the requests for a repository pushed for the test alone.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT, Stack, run_cli, unique
from tests.support.oci import make_image
from tests.support.push import push_image

pytestmark = pytest.mark.integration

_LINE = re.compile(r'"(?P<method>[A-Z]+) /v2/(?P<path>\S+) HTTP/[\d.]+" (?P<status>\d+)')


def _read(stack: Stack, repo: str, offset: int) -> list[tuple[str, str]]:
    with stack.access_log.open("rb") as handle:
        handle.seek(offset)
        text = handle.read().decode(errors="replace")
    return [(m["method"], "manifests" if "/manifests/" in m["path"] else "blobs" if "/blobs/" in m["path"] else "other")
            for m in _LINE.finditer(text) if m["path"].startswith(f"{repo}/")]


def requests_for(stack: Stack, repo: str, offset: int, *, expect_heads: int) -> list[tuple[str, str]]:
    """(method, kind) of each request for *repo* logged after *offset*. The registry writes a line after
    its response: wait (bounded) until *expect_heads* HEADs are there, then a little longer for the rest."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _read(stack, repo, offset).count(("HEAD", "manifests")) < expect_heads:
        time.sleep(0.1)
    time.sleep(0.3)
    return _read(stack, repo, offset)


def check_env(cache: Path) -> dict[str, str]:
    return {"IMAGEGATE_REGISTRY_CACHE_DIR": str(cache), "IMAGEGATE_REGISTRY_CACHE": "on"}


def test_separate_processes_fetch_manifest_and_config_once(stack: Stack, tmp_path: Path) -> None:
    repo = f"it-cache/{unique('once')}"
    digest = push_image(stack.registry_url, repo, make_image(user="1000"), tag="1.0.0")
    ref = f"{stack.registry}/{repo}:1.0.0"
    cache = tmp_path / "cache"
    offset = stack.access_log.stat().st_size
    first = run_cli("check", ref, "--json", env=check_env(cache))
    assert first.returncode == 0, first.stderr
    # then eight more processes, four at a time: readers and writers of the same entries at once
    procs = []
    for _ in range(2):
        batch = [subprocess.Popen([sys.executable, "-m", "imagegate", "check", ref, "--json"], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, **check_env(cache)}) for _ in range(4)]
        procs += [(p, *p.communicate(timeout=120)) for p in batch]
    for proc, out, err in procs:
        assert proc.returncode == 0, err
        assert json.loads(out)["pinned"] == f"{ref}@{digest}"
    seen = requests_for(stack, repo, offset, expect_heads=9)
    assert seen.count(("HEAD", "manifests")) == 9  # each process asks for the tag's digest
    assert seen.count(("GET", "manifests")) == 1 and seen.count(("GET", "blobs")) == 1, seen
    assert len(seen) == 11


def test_a_corrupted_entry_is_refetched_and_the_answer_is_right(stack: Stack, tmp_path: Path) -> None:
    repo = f"it-cache/{unique('corrupt')}"
    push_image(stack.registry_url, repo, make_image(user="1000"), tag="1.0.0")
    ref = f"{stack.registry}/{repo}:1.0.0"
    cache = tmp_path / "cache"
    assert run_cli("check", ref, "--json", env=check_env(cache)).returncode == 0
    entries = [p for p in (cache / "v1").rglob("*") if p.is_file()]
    config = next(p for p in entries if b'"kind":"config"' in p.read_bytes()[:2000])
    data = config.read_bytes()
    config.write_bytes(data.replace(b'"User":"1000"', b'"User":"0"   ') if b'"User":"1000"' in data else data[:-1] + b" ")
    offset = stack.access_log.stat().st_size
    result = run_cli("check", ref, "--json", env=check_env(cache))
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["user"] == "1000"  # the altered entry was not believed
    seen = requests_for(stack, repo, offset, expect_heads=1)
    assert seen == [("HEAD", "manifests"), ("GET", "blobs")]  # the config again, the manifest from the cache


def test_with_the_cache_off_every_process_fetches(stack: Stack, tmp_path: Path) -> None:
    repo = f"it-cache/{unique('off')}"
    push_image(stack.registry_url, repo, make_image(user="1000"), tag="1.0.0")
    ref = f"{stack.registry}/{repo}:1.0.0"
    env = {"IMAGEGATE_REGISTRY_CACHE_DIR": str(tmp_path / "cache"), "IMAGEGATE_REGISTRY_CACHE": "off"}
    offset = stack.access_log.stat().st_size
    for _ in range(3):
        assert run_cli("check", ref, "--json", env=env).returncode == 0
    time.sleep(0.5)
    seen = requests_for(stack, repo, offset, expect_heads=0)
    assert seen.count(("GET", "manifests")) == 3 and seen.count(("GET", "blobs")) == 3
    assert not (tmp_path / "cache").exists()


def test_cache_info_and_clear(stack: Stack, tmp_path: Path) -> None:
    repo = f"it-cache/{unique('info')}"
    push_image(stack.registry_url, repo, make_image(user="1000"), tag="1.0.0")
    env = check_env(tmp_path / "cache")
    assert run_cli("check", f"{stack.registry}/{repo}:1.0.0", env=env).returncode == 0
    info = json.loads(run_cli("cache", "info", "--json", env=env).stdout)
    assert info["directory"] == str(tmp_path / "cache") and info["enabled"] is True
    assert info["entries"] >= 2 and info["bytes"] > 0
    cleared = run_cli("cache", "clear", "--json", env=env)
    assert cleared.returncode == 0 and json.loads(cleared.stdout)["removed"] == info["entries"]
    assert json.loads(run_cli("cache", "info", "--json", env=env).stdout)["entries"] == 0
