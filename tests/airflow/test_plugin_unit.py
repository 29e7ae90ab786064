"""The plugin, provider metadata and PSS helpers as plain Python (no engine, no registry)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def _configuration_reads() -> set[str]:
    """Every ``conf.get*("imagegate", KEY, ...)`` in the package's source."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    keys: set[str] = set()
    for folder in ("airflow_plugin", "dagster_integration", "imagegate"):
        for path in (root / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr.startswith("get")
                        and len(node.args) >= 2 and all(isinstance(a, ast.Constant) for a in node.args[:2])
                        and node.args[0].value == "imagegate"):
                    keys.add(node.args[1].value)
    return keys


def test_every_option_the_code_reads_is_declared_with_a_description() -> None:
    read = _configuration_reads()
    assert {"backend", "cluster_policy", "lock_file", "policy"} <= read  # the scan finds the known ones
    options = provider.get_provider_info()["config"]["imagegate"]["options"]
    assert read <= set(options), f"read but not declared: {sorted(read - set(options))}"
    for name, option in options.items():
        assert len(option["description"]) > 40, name


def test_the_deployment_policy_applies_to_tasks_that_name_none(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_plugin import _gate

    deployment = tmp_path / "deployment.toml"
    deployment.write_text('allowed-registries = ["registry.example.com"]\n')
    near = tmp_path / "dags"
    near.mkdir()
    (near / "imagegate.toml").write_text('allowed-registries = ["elsewhere.example.com"]\n')
    assert _gate.load_policy(None, near).allowed_registries == ("elsewhere.example.com",)
    monkeypatch.setenv("AIRFLOW__IMAGEGATE__POLICY", str(deployment))
    assert _gate.load_policy(None, near).allowed_registries == ("registry.example.com",)
    own = tmp_path / "own.toml"
    own.write_text('allowed-registries = ["own.example.com"]\n')
    assert _gate.load_policy(str(own), near).allowed_registries == ("own.example.com",)  # a task's own wins


def test_every_exported_name_loads_from_the_package() -> None:
    """``from airflow_plugin import X`` for each name the package lists (the Spark operators included)."""
    import importlib

    import airflow_plugin

    assert {"PinnedSparkKubernetesOperator", "PinnedSparkSubmitOperator"} <= set(airflow_plugin.__all__)
    for name in airflow_plugin.__all__:
        value = getattr(airflow_plugin, name)
        assert value is getattr(importlib.import_module(airflow_plugin._EXPORTS[name]), name), name
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        airflow_plugin.Nope  # noqa: B018
