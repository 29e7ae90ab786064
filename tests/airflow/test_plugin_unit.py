"""The plugin, provider metadata and PSS helpers as plain Python (no engine, no registry)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import imagegate
from airflow_plugin import plugin, provider
from airflow_plugin._gate import manifest_url

DIGEST = "sha256:" + "ab" * 32


def test_macros_read_the_lock_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lock = imagegate.LockFile(tmp_path / imagegate.LOCK_FILE)
    lock.set("etl", imagegate.parse_reference(f"registry.example.com/team/etl:1.4.2@{DIGEST}"))
    lock.save()
    assert plugin.pinned("etl", lock_file=str(lock.path)) == f"registry.example.com/team/etl:1.4.2@{DIGEST}"
    monkeypatch.setenv("IMAGEGATE_LOCK_FILE", str(lock.path))
    assert plugin.digest("etl") == DIGEST
    with pytest.raises(imagegate.LockFileError, match="no image named 'nope'"):
        plugin.pinned("nope")


def test_provider_info_matches_airflows_schema() -> None:
    import jsonschema
    from importlib.resources import files

    schema = json.loads(files("airflow").joinpath("provider_info.schema.json").read_text())
    info = provider.get_provider_info()
    jsonschema.validate(info, schema)
    assert info["package-name"] == "imagegate" and info["config"]["imagegate"]["options"]["cluster_policy"]["default"] == "off"


def test_the_link_drops_the_tag() -> None:
    report_pinned = f"127.0.0.1:5000/team/etl:1.4.2@{DIGEST}"
    assert imagegate.launch_reference(report_pinned) == f"127.0.0.1:5000/team/etl@{DIGEST}"
    assert manifest_url(report_pinned) == f"http://127.0.0.1:5000/v2/team/etl/manifests/{DIGEST}"
    assert manifest_url(f"registry.example.com/etl@{DIGEST}") == f"https://registry.example.com/v2/etl/manifests/{DIGEST}"


def test_plugin_registers_macros_and_link() -> None:
    assert plugin.ImagegatePlugin.name == "imagegate"
    assert {m.__name__ for m in plugin.ImagegatePlugin.macros} == {"pinned", "digest"}
    assert [link.name for link in plugin.ImagegatePlugin.operator_extra_links] == ["Launched image"]
