"""The dg component: discovered through the entry point, strict when definitions load."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest

from dagster_integration.components import ContainerAssetComponent

PINNED = "127.0.0.1:5000/team/etl:1.4.2@sha256:" + "a" * 64


def test_registered_through_the_dg_entry_point():
    # the function `dg list components` uses to find component types in the environment
    from dagster.components.core.package_entry import DG_PLUGIN_ENTRY_POINT_GROUP, discover_entry_point_package_objects

    assert DG_PLUGIN_ENTRY_POINT_GROUP == "dagster_dg_cli.registry_modules"
    keys = {(key.namespace, key.name) for key in discover_entry_point_package_objects()}
    assert ("dagster_integration.components", "ContainerAssetComponent") in keys


def _load(tmp_path: Path, attributes: str) -> dg.Definitions:
    """Write a defs folder with one defs.yaml and load it as dagster does."""
    package = tmp_path / f"defs_{abs(hash(attributes)) % 10**8}"
    (package / "etl").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "etl" / "defs.yaml").write_text(
        "type: dagster_integration.components.ContainerAssetComponent\nattributes:\n"
        + textwrap.indent(textwrap.dedent(attributes).strip(), "  ")
        + "\n"
    )
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import importlib

        module = importlib.import_module(package.name)
        return dg.ComponentTree.from_module(defs_module=module, project_root=tmp_path).build_defs()
    finally:
        sys.path.remove(str(tmp_path))


def test_valid_spec_declares_the_asset_and_its_checks(tmp_path):
    defs = _load(tmp_path, f"""
        asset_key: team/etl
        image: "{PINNED}"
        command: ["/app/job.py"]
        checks: [image_pinned, image_non_root, dockerfile_lint]
        group_name: etl
    """)
    graph = defs.resolve_asset_graph()
    key = dg.AssetKey(["team", "etl"])
    assert key in graph.get_all_asset_keys()
    assert {k.name for k in graph.asset_check_keys if k.asset_key == key} == {"image_pinned", "image_non_root", "dockerfile_lint"}


@pytest.mark.parametrize(
    "attributes, expected",
    [
        (f'asset_key: etl\nimage: "{PINNED}"\nimagee: x', "attributes.imagee"),  # unknown key, by its path
        (f'asset_key: etl\nimage: "{PINNED}"\ncheckz: []', "checkz"),
        ("asset_key: etl", "exactly one of image, lock_name, job_directory"),
        (f'asset_key: etl\nimage: "{PINNED}"\nlock_name: etl', "exactly one of image, lock_name, job_directory"),
        ('asset_key: etl\nimage: "Not A/Ref:::"', "Not A/Ref:::"),  # the reference and why it is invalid
        (f'asset_key: etl\nimage: "{PINNED}"\nbackend: nomad', "backend"),
        (f'asset_key: etl\nimage: "{PINNED}"\nchecks: [image_signed]', "checks"),
        (f'asset_key: etl\nimage: "{PINNED}"\ncheck_modes: {{non-root: later}}', "check_modes"),
        ("asset_key: etl\njob_directory: jobs/etl", "repository"),
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
