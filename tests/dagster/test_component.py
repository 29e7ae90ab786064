"""The dg component: discovered through the entry point, strict when definitions load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from dagster_integration.components import ContainerAssetComponent
from tests.dagster.conftest import load_component_defs

PINNED = "127.0.0.1:5000/team/etl:1.4.2@sha256:" + "a" * 64


def test_registered_through_the_dg_entry_point():
    # the function `dg list components` uses to find component types in the environment
    from dagster.components.core.package_entry import DG_PLUGIN_ENTRY_POINT_GROUP, discover_entry_point_package_objects

    assert DG_PLUGIN_ENTRY_POINT_GROUP == "dagster_dg_cli.registry_modules"
    keys = {(key.namespace, key.name) for key in discover_entry_point_package_objects()}
    assert ("dagster_integration.components", "ContainerAssetComponent") in keys


def _load(tmp_path: Path, attributes: str) -> dg.Definitions:
    return load_component_defs(tmp_path, attributes)


def test_valid_spec_declares_the_asset_and_its_checks(tmp_path):
    defs = _load(tmp_path, f"""
        asset_key: team/etl
        image: "{PINNED}"
        command: ["/app/job.py"]
        checks: [image_pinned, image_non_root]
        group_name: etl
    """)
    graph = defs.resolve_asset_graph()
    key = dg.AssetKey(["team", "etl"])
    assert key in graph.get_all_asset_keys()
    assert {k.name for k in graph.asset_check_keys if k.asset_key == key} == {"image_pinned", "image_non_root"}


def test_a_built_image_can_declare_the_lint_check(tmp_path):
    defs = _load(tmp_path, """
        asset_key: built
        job_directory: jobs/etl
        repository: 127.0.0.1:5000/team/etl
        checks: [image_pinned, image_non_root, dockerfile_lint]
    """)
    key = dg.AssetKey("built")
    assert {k.name for k in defs.resolve_asset_graph().asset_check_keys if k.asset_key == key} == {
        "image_pinned", "image_non_root", "dockerfile_lint"}


def test_kubernetes_settings_load_with_the_kubernetes_backend(tmp_path):
    defs = _load(tmp_path, f"""
        asset_key: on_k8s
        image: "{PINNED}"
        backend: kubernetes
        namespace: etl
        kubeconfig_file: kube/config
        kube_context: prod
        poll_interval: 0.5
    """)
    assert dg.AssetKey("on_k8s") in defs.resolve_asset_graph().get_all_asset_keys()
    spec = ContainerAssetComponent.model_validate(
        {"asset_key": "k", "image": PINNED, "backend": "kubernetes", "kubeconfig_file": "kube/config", "kube_context": "prod",
         "poll_interval": 0.5})
    settings = spec._k8s_settings(tmp_path)
    assert settings == {"load_incluster_config": False, "kube_context": "prod",
                        "kubeconfig_file": str(tmp_path / "kube" / "config"), "poll_interval": 0.5}
    assert ContainerAssetComponent.model_validate({"asset_key": "k", "image": PINNED, "backend": "kubernetes"})._k8s_settings(tmp_path) == {}


@pytest.mark.parametrize(
    "attributes, expected",
    [
        (f'asset_key: etl\nimage: "{PINNED}"\nimagee: x', "attributes.imagee"),  # unknown key, by its path
        (f'asset_key: etl\nimage: "{PINNED}"\ncheckz: []', "checkz"),
        ("asset_key: etl", "exactly one of image, lock_name, job_directory"),
        (f'asset_key: etl\nimage: "{PINNED}"\nlock_name: etl', "exactly one of image, lock_name, job_directory"),
        ('asset_key: etl\nimage: "Not A/Ref:::"', "Not A/Ref:::"),  # the reference and why it is invalid
        (f'asset_key: etl\nimage: "{PINNED}"\nbackend: nomad', "backend"),
        (f'asset_key: etl\nimage: "{PINNED}"\nchecks: [image_scanned]', "checks"),
        # image_signed where no [[signatures]] rule exists would verify nothing: refused, never reported as passed
        (f'asset_key: etl\nimage: "{PINNED}"\nchecks: [image_signed]', "has no [[signatures]] rule"),
        (f'asset_key: etl\nimage: "{PINNED}"\ncheck_modes: {{non-root: later}}', "check_modes"),
        ("asset_key: etl\njob_directory: jobs/etl", "repository"),
        # dockerfile_lint where nothing is built could never run: refused, never reported as passed
        (f'asset_key: etl\nimage: "{PINNED}"\nchecks: [image_pinned, dockerfile_lint]', "checks: dockerfile_lint needs job_directory; with image"),
        ("asset_key: etl\nlock_name: etl\nchecks: [dockerfile_lint]", "checks: dockerfile_lint needs job_directory; with lock_name"),
        ("asset_key: etl\njob_directory: jobs/etl\nrepository: r.example.com/etl\nchecks: [dockerfile_lint]\n"
         "check_modes: {lint: 'off'}", "dockerfile_lint cannot run with check_modes {lint: off}"),
        (f'asset_key: etl\nimage: "{PINNED}"\nnamespace: etl', "namespace: only for backend: kubernetes"),
        (f'asset_key: etl\nimage: "{PINNED}"\nkube_context: prod\npoll_interval: 1', "kube_context, poll_interval: only for backend: kubernetes"),
        (f'asset_key: etl\nimage: "{PINNED}"\nbackend: kubernetes\npoll_interval: 0', "poll_interval: 0.0 is not a positive"),
    ],
)
def test_bad_spec_fails_when_definitions_load(tmp_path, attributes, expected):
    with pytest.raises(Exception) as info:
        _load(tmp_path, attributes)
    text = "".join(str(e) for e in _chain(info.value))
    assert expected in text, text


def _chain(exc: BaseException):
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def test_component_model_is_strict():
    with pytest.raises(Exception, match="imagee"):
        ContainerAssetComponent.model_validate({"asset_key": "etl", "image": PINNED, "imagee": "x"})


def test_import_does_not_load_dagster_k8s():
    code = (
        "import sys, dagster_integration\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('dagster_k8s', 'kubernetes'))\n"
        "assert not bad, bad\n"
        "dagster_integration.ImagegateK8sClient\n"
        "assert 'dagster_k8s' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_dg_list_components_shows_it(tmp_path):
    """`dg list components` (dagster-dg-cli, not in the lock: runs where it is installed)."""
    dg_cli = Path(sys.executable).with_name("dg")
    if not dg_cli.exists():
        pytest.skip("dagster-dg-cli is not installed in this environment (pip install dagster-dg-cli==1.13.27)")
    proc = subprocess.run([str(dg_cli), "list", "components", "--json"], capture_output=True, text=True, cwd=tmp_path, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "dagster_integration.components.ContainerAssetComponent" in proc.stdout
