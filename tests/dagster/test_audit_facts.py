"""docs/audit.md's Dagster part, run for real: the snippet that finds "which runs launched digest X" in a
Dagster instance's event log, on real materializations against the local Docker Engine and registry —
one launched, one launched under a waiver, one refused."""

import datetime as dt
import re
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from dagster_integration import ImagegateDockerClient, ImagegateResource, image_check_specs
from tests.dagster.conftest import build_and_push, unique

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / "docs" / "audit.md"


def _documented_snippet() -> dict[str, Any]:
    """Execute the Python block of docs/audit.md that defines ``imagegate_runs``; its namespace."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    (code,) = [b for b in blocks if "def imagegate_runs" in b]
    namespace: dict[str, Any] = {}
    exec(compile(code, str(DOC), "exec"), namespace)  # noqa: S102 - our own documentation
    return namespace


def _asset(name: str, image: str) -> dg.AssetsDefinition:
    @dg.asset(name=name, check_specs=image_check_specs(name, ["image_pinned", "image_non_root"]))
    def _a(context: dg.AssetExecutionContext, docker_pipes: ImagegateDockerClient) -> dg.MaterializeResult:
        return docker_pipes.run(context=context, image=image, command=["echo", name]).get_materialize_result()

    return _a


def test_the_documented_reader_finds_the_runs_of_an_image(dagster_home: Path, stack: Any, docker_client: Any, tmp_path: Path) -> None:
    repo = f"dagster/{unique('audit')}"
    ok = build_and_push(docker_client, stack, 'FROM {base}\nUSER 1000\nCMD ["echo", "ok"]\n', f"{repo}/etl", "1.0.0")
    vendor = build_and_push(docker_client, stack, 'FROM {base}\nCMD ["echo", "root"]\n', f"{repo}/vendor", "2.0.0")
    build_and_push(docker_client, stack, 'FROM {base}\nCMD ["echo", "root"]\n', f"{repo}/rooty", "latest")
    expires = (dt.date.today() + dt.timedelta(days=30)).isoformat()
    policy = tmp_path / "imagegate.toml"
    policy.write_text(f'[[waivers]]\nreference = "{stack.registry}/{repo}/vendor"\nchecks = ["non-root"]\n'
                      f'reason = "vendor image; OPS-12"\nexpires = {expires}\n')
    client = ImagegateDockerClient(ImagegateResource(policy_file=str(policy)))
    reg = stack.registry
    assets = {"etl": f"{reg}/{repo}/etl:1.0.0", "vendor": f"{reg}/{repo}/vendor:2.0.0", "rooty": f"{reg}/{repo}/rooty:latest"}
    snippet = _documented_snippet()
    with dg.DagsterInstance.get() as instance:
        results = {name: dg.materialize([_asset(name, image)], resources={"docker_pipes": client}, instance=instance,
                                        raise_on_error=False) for name, image in assets.items()}
        assert results["etl"].success and results["vendor"].success and not results["rooty"].success
        runs = snippet["imagegate_runs"]

        (etl,) = runs(instance, ok)
        assert etl["asset"] == "etl" and etl["run_id"] == results["etl"].run_id and etl["verdict"] == "passed"
        assert etl["launched"] == f"{reg}/{repo}/etl@{ok}" and etl["pinned"].endswith(ok)
        assert etl["checks"] == {"registry": "pass", "pinned": "pass", "non-root": "pass"}
        config = docker_client.images.get(f"{reg}/{repo}/etl@{ok}").id
        assert [r["run_id"] for r in runs(instance, config)] == [results["etl"].run_id]  # by Docker's image id
        assert [r["run_id"] for r in runs(instance, config[7:19])] == [results["etl"].run_id]

        (waived,) = runs(instance, f"{reg}/{repo}/vendor")
        assert waived["verdict"] == "passed" and waived["checks"]["non-root"] == "waived"
        assert waived["waivers"] == {"non-root": f"vendor image; OPS-12 (until {expires})"}
        assert waived["launched"].endswith(vendor)

        (refused,) = runs(instance, f"{reg}/{repo}/rooty:latest")
        assert refused["verdict"] == "refused" and refused["launched"] is None
        assert refused["run_id"] == results["rooty"].run_id
        assert {k for k, v in refused["checks"].items() if v == "fail"} == {"pinned", "non-root"}

        assert runs(instance, "sha256:" + "0" * 64) == []
        assert {r["asset"] for r in runs(instance, f"{reg}/{repo}/etl")} == {"etl"}
