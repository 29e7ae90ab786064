"""check / enforce / resolve end to end over the fake registry, and the report they return."""

from __future__ import annotations

import json

import pytest

import imagegate
from imagegate import CheckFailed, DockerConfig, Outcome, Policy, RegistryClient
from tests.support.fakeregistry import FakeRegistry
from tests.support.oci import make_image


@pytest.fixture
def registry() -> FakeRegistry:
    reg = FakeRegistry(negotiation="distribution")
    reg.put_image("team/etl", make_image(user="1000", env={"API_KEY": "do-not-print"}), tag="1.4.2")
    reg.put_image("team/etl", make_image(user="0"), tag="latest")
    passwd = b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/app:/bin/sh\ntoor:x:0:0::/:/bin/sh\n"
    reg.put_image("team/app", make_image(user="app", layers=[{"etc/passwd": passwd}]), tag="2.0.0")
    reg.put_image("team/app", make_image(user="toor", layers=[{"etc/passwd": passwd}]), tag="2.0.1")
    reg.put_image("team/app", make_image(user="ghost", layers=[{"etc/passwd": passwd}]), tag="2.0.2")
    reg.put_image("team/app", make_image(user="app"), tag="2.0.3")  # no /etc/passwd at all
    return reg


@pytest.fixture
def client(registry: FakeRegistry) -> RegistryClient:
    return RegistryClient(transport=registry.transport, docker_config=DockerConfig({}))


def test_passing_image_report(client: RegistryClient, registry: FakeRegistry) -> None:
    report = imagegate.check("registry.test/team/etl:1.4.2", client=client)
    digest = registry.repositories["team/etl"].tags["1.4.2"]
    assert report.passed and report.reference == "registry.test/team/etl:1.4.2"
    assert report.pinned == f"registry.test/team/etl:1.4.2@{digest}"
    assert [r.check for r in report.results] == ["registry", "pinned", "non-root"]
    data = json.loads(report.to_json())
    assert data["passed"] is True and data["pinned"] == report.pinned
    assert data["image"]["env_names"] == ["API_KEY"]
    text = report.render_text()
    assert "do-not-print" not in report.to_json() + text
    assert "passed" in text and digest in text


def test_latest_root_image_is_refused_with_both_reasons(client: RegistryClient) -> None:
    with pytest.raises(CheckFailed) as info:
        imagegate.enforce("registry.test/team/etl:latest", client=client)
    report = info.value.report
    assert {r.check for r in report.failures} == {"pinned", "non-root"}
    assert "REFUSED" in report.render_text() and "fix:" in report.render_text()
    assert "pinned" in str(info.value) and "non-root" in str(info.value)


def test_backend_changes_the_non_root_verdict(client: RegistryClient) -> None:
    docker = imagegate.check("registry.test/team/app:2.0.0", client=client)
    assert docker.passed and "uid 1000" in docker.result("non-root").message
    k8s = imagegate.check("registry.test/team/app:2.0.0", backend="kubernetes", client=client)
    assert k8s.result("non-root").outcome is Outcome.FAIL
    assert imagegate.check("registry.test/team/app:2.0.0", backend="kubernetes", user="1000", client=client).passed


def test_refused_registry_is_never_contacted(client: RegistryClient, registry: FakeRegistry) -> None:
    report = imagegate.check("registry.test/team/etl:1.4.2", policy=Policy(allowed_registries=("registry.example.com",)), client=client)
    assert not report.passed and report.pinned is None
    assert registry.count() == 0


def test_resolve_keeps_the_tag_and_adds_the_digest(client: RegistryClient, registry: FakeRegistry) -> None:
    pinned = imagegate.resolve("registry.test/team/etl:1.4.2", client=client)
    assert pinned.digest == registry.repositories["team/etl"].tags["1.4.2"] and pinned.tag == "1.4.2"
    with_platform = imagegate.resolve("registry.test/team/etl:1.4.2", platform="linux/amd64", client=client)
    assert with_platform == pinned


def test_bad_backend_and_reference() -> None:
    with pytest.raises(imagegate.PolicyError, match="unknown backend 'podman'"):
        imagegate.check("registry.test/team/etl:1.4.2", backend="podman", client=RegistryClient(transport=FakeRegistry().transport))
    with pytest.raises(imagegate.InvalidReference) as info:
        imagegate.check("Registry.test/Team/ETL:1", client=RegistryClient(transport=FakeRegistry().transport))
    assert info.value.reference == "Registry.test/Team/ETL:1"


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ("2.0.1", "maps to uid 0: the engine runs it as root"),
        ("2.0.2", "not in the image's /etc/passwd"),
        ("2.0.3", "the image has no /etc/passwd"),
    ],
)
def test_a_named_user_is_resolved_in_the_images_passwd(client: RegistryClient, tag: str, message: str) -> None:
    report = imagegate.check(f"registry.test/team/app:{tag}", client=client)
    assert report.result("non-root").outcome is Outcome.FAIL
    assert message in report.result("non-root").message


def test_names_can_be_refused_by_policy(client: RegistryClient) -> None:
    report = imagegate.check("registry.test/team/app:2.0.0", client=client, policy=Policy(resolve_user_names=False))
    assert report.result("non-root").outcome is Outcome.FAIL
    assert "resolve-user-names = false" in report.result("non-root").message
