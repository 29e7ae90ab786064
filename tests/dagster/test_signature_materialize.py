"""``image_signed`` and ``image_vulnerabilities`` through a real ``dg.materialize()`` on the local Docker Engine, with
signatures and vulnerability attestations made by the REAL cosign (v3.1.3, bundle format) in the local registry:
unsigned → refused, the check failed with its metadata, no container; signed → launched, the check passed with who
signed; a signed scan with a critical finding → refused, the check failed listing it; a clean scan → passed.

Needs the local stack and cosign (see tests/integration/test_cosign_stack.py); under CI=true a missing one fails.
"""

import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from dagster_integration import ImagegateDockerClient, ImagegateResource, image_check_specs
from tests.dagster.conftest import build_and_push, engine_containers, unique
from tests.integration.conftest import Stack
from tests.integration.test_cosign_stack import _sign, cosign, keys  # noqa: F401 - fixtures
from tests.support.vuln_attestation import CRITICAL, attest

pytestmark = pytest.mark.integration

CHECKS = ["image_pinned", "image_non_root", "image_signed"]


@pytest.fixture(scope="module")
def images(stack: Stack, docker_client: Any, cosign: Path, keys: dict[str, Path]) -> dict[str, str]:
    """Two runnable images in one repository, the first signed by the ``good`` key, the second not."""
    repo = f"dagster/{unique('signed')}"
    dockerfile = 'FROM {base}\nUSER 10001\nCMD ["echo", "signed-asset-ran"]\n'
    signed = build_and_push(docker_client, stack, dockerfile, repo, "1.0.0")
    unsigned = build_and_push(docker_client, stack, dockerfile + "LABEL unsigned=1\n", repo, "1.0.1")
    _sign(cosign, keys["good.key"], f"{stack.registry}/{repo}@{signed}", legacy=False)
    base = f"{stack.registry}/{repo}"
    return {"repo": base, "signed": f"{base}:1.0.0", "signed_digest": signed, "unsigned": f"{base}:1.0.1",
            "unsigned_digest": unsigned}


@pytest.fixture(scope="module")
def policy(stack: Stack, keys: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("signed-policy")
    (directory / "cosign.pub").write_bytes(keys["good"].read_bytes())
    (directory / "imagegate.toml").write_text(f'[[signatures]]\nimages = ["{stack.registry}/dagster/**"]\n'
                                              'keys = ["cosign.pub"]\n')
    return directory / "imagegate.toml"


def _asset(name: str, image: str) -> dg.AssetsDefinition:
    @dg.asset(name=name, check_specs=image_check_specs(name, CHECKS))
    def _a(context: dg.AssetExecutionContext, docker_pipes: ImagegateDockerClient) -> dg.MaterializeResult:
        return docker_pipes.run(context=context, image=image).get_materialize_result()

    return _a


def _checks(instance: dg.DagsterInstance, run_id: str) -> dict[str, Any]:
    """check name -> the stored AssetCheckEvaluation (what the UI shows; a refused step logs them directly)."""
    found = {}
    for record in instance.get_records_for_run(run_id).records:
        event = record.event_log_entry.dagster_event
        if event is not None and event.event_type_value == "ASSET_CHECK_EVALUATION":
            found[event.event_specific_data.check_name] = event.event_specific_data
    return found


def test_unsigned_image_is_refused_with_the_check_failed_and_nothing_launched(
        dagster_home: Path, images: dict[str, str], policy: Path, docker_client: Any) -> None:
    client = ImagegateDockerClient(ImagegateResource(policy_file=str(policy)))
    since = int(time.time()) - 1
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize([_asset("unsigned", images["unsigned"])], resources={"docker_pipes": client},
                                instance=instance, raise_on_error=False)
        assert not result.success
        (failure,) = result.get_step_failure_events()
        assert failure.event_specific_data.error.cls_name == "ImageRefused"
        metadata = failure.event_specific_data.user_failure_data.metadata
        assert metadata["imagegate/check/signature"].value.startswith("fail: ")
        assert "no cosign signature found" in metadata["imagegate/check/signature"].value

        checks = _checks(instance, result.run_id)
        assert {n: c.passed for n, c in checks.items()} == {"image_pinned": True, "image_non_root": True,
                                                            "image_signed": False}
        signed = checks["image_signed"]
        assert signed.severity == dg.AssetCheckSeverity.ERROR
        assert signed.metadata["digest"].value == images["unsigned_digest"]  # the digest that would have launched
        assert signed.metadata["verified"].value is False
        assert "cosign sign --key" in signed.metadata["fix"].value
    # the engine is the oracle: no container from that repository, none created meanwhile
    assert not engine_containers(docker_client, images["repo"])
    events = docker_client.events(since=since, until=int(time.time()) + 1, filters={"type": "container", "event": "create"},
                                  decode=True)
    assert [e for e in events if (e.get("Actor", {}).get("Attributes", {}).get("image") or "").startswith(images["repo"])] == []


def test_signed_image_launches_and_the_check_says_who_signed(
        dagster_home: Path, images: dict[str, str], policy: Path, keys: dict[str, Path]) -> None:
    client = ImagegateDockerClient(ImagegateResource(policy_file=str(policy)))
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize([_asset("signed", images["signed"])], resources={"docker_pipes": client},
                                instance=instance)
        assert result.success
        metadata = result.asset_materializations_for_node("signed")[0].metadata
        assert metadata["imagegate/launched"].value == f"{images['repo']}@{images['signed_digest']}"
        assert "signed-asset-ran" in metadata["imagegate/output"].value
        assert metadata["imagegate/check/signature"].value.startswith("pass: signed by 1 of 1 key(s)")

        checks = _checks(instance, result.run_id)
        assert {n: c.passed for n, c in checks.items()} == {name: True for name in CHECKS}
        signed = checks["image_signed"]
        assert signed.metadata["verified"].value is True
        assert signed.metadata["digest"].value == images["signed_digest"]
        assert "cosign.pub" in signed.metadata["signed_by"].value
        assert signed.metadata["format"].value == "bundle"


# -- image_vulnerabilities ----------------------------------------------------------------------------------------


def test_vulnerability_attestations_decide_image_vulnerabilities(
        dagster_home: Path, stack: Stack, docker_client: Any, cosign: Path, keys: dict[str, Path],
        tmp_path: Path) -> None:
    repo = f"dagster/{unique('vulns')}"
    dockerfile = 'FROM {base}\nUSER 10001\nCMD ["echo", "scanned-asset-ran"]\n'
    clean = build_and_push(docker_client, stack, dockerfile, repo, "1.0.0")
    critical = build_and_push(docker_client, stack, dockerfile + "LABEL critical=1\n", repo, "1.0.1")
    for digest, is_clean in ((clean, True), (critical, False)):
        ref = f"{stack.registry}/{repo}@{digest}"
        _sign(cosign, keys["good.key"], ref, legacy=False)
        attest(cosign, keys["good.key"], ref, clean=is_clean)
    (tmp_path / "cosign.pub").write_bytes(keys["good"].read_bytes())
    rules = f'images = ["{stack.registry}/dagster/**"]\nkeys = ["cosign.pub"]\n'
    (tmp_path / "imagegate.toml").write_text(f'[[signatures]]\n{rules}\n[[vulnerabilities]]\n{rules}max-severity = "high"\n')
    client = ImagegateDockerClient(ImagegateResource(policy_file=str(tmp_path / "imagegate.toml")))
    checks = ["image_signed", "image_vulnerabilities"]

    def asset(name: str, image: str) -> dg.AssetsDefinition:
        @dg.asset(name=name, check_specs=image_check_specs(name, checks))
        def _a(context: dg.AssetExecutionContext, docker_pipes: ImagegateDockerClient) -> dg.MaterializeResult:
            return docker_pipes.run(context=context, image=image).get_materialize_result()

        return _a

    since = int(time.time()) - 1
    with dg.DagsterInstance.get() as instance:
        refused = dg.materialize([asset("critical", f"{stack.registry}/{repo}:1.0.1")], resources={"docker_pipes": client},
                                 instance=instance, raise_on_error=False)
        assert not refused.success
        found = _checks(instance, refused.run_id)
        assert {n: c.passed for n, c in found.items()} == {"image_signed": True, "image_vulnerabilities": False}
        vulns = found["image_vulnerabilities"]
        assert vulns.severity == dg.AssetCheckSeverity.ERROR and vulns.metadata["verified"].value is False
        assert [f["id"] for f in vulns.metadata["findings"].value] == [CRITICAL]
        assert vulns.metadata["counts"].value["critical"] >= 1 and vulns.metadata["max_severity"].value == "high"
        assert vulns.metadata["signed_by"].value == str(tmp_path / "cosign.pub")
        assert "trivy" in vulns.metadata["scanner"].value

        passed = dg.materialize([asset("clean", f"{stack.registry}/{repo}:1.0.0")], resources={"docker_pipes": client},
                                instance=instance)
        assert passed.success
        found = _checks(instance, passed.run_id)
        assert {n: c.passed for n, c in found.items()} == {"image_signed": True, "image_vulnerabilities": True}
        assert "findings" not in found["image_vulnerabilities"].metadata
        assert found["image_vulnerabilities"].metadata["blocking"].value == 0
    created = docker_client.events(since=since, until=int(time.time()) + 1, filters={"type": "container", "event": "create"},
                                   decode=True)
    images = [(e.get("Actor", {}).get("Attributes", {}).get("image") or "") for e in created]
    assert [i for i in images if i.startswith(f"{stack.registry}/{repo}")] == [f"{stack.registry}/{repo}@{clean}"]
