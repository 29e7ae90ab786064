"""The `signature` check: the [[signatures]] policy section, and the check through imagegate.check / plan_launch
over the fake registry, with signatures made here (tests/support/cosign.py)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

import imagegate
from imagegate import CheckFailed, DockerConfig, Outcome, Policy, PolicyError, RegistryClient
from imagegate._gate import ImageSource, plan_launch
from imagegate._policy import Mode
from tests.support.cosign import Signer, make_bundle, push_bundle, push_legacy
from tests.support.fakeregistry import FakeRegistry
from tests.support.oci import make_image

HOST = "registry.test"


@pytest.fixture
def registry() -> FakeRegistry:
    reg = FakeRegistry(negotiation="distribution")
    reg.put_image("team/signed", make_image(user="1000"), tag="1.0.0")
    reg.put_image("team/unsigned", make_image(user="1000"), tag="1.0.0")
    reg.put_image("vendor/tool", make_image(user="1000"), tag="2.0.0")
    return reg


@pytest.fixture
def client(registry: FakeRegistry) -> RegistryClient:
    return RegistryClient(transport=registry.transport, docker_config=DockerConfig({}))


@pytest.fixture
def signer(registry: FakeRegistry) -> Signer:
    signer = Signer.ecdsa()
    digest = registry.repositories["team/signed"].tags["1.0.0"]
    push_legacy(registry, "team/signed", digest, [signer])
    return signer


def write_key(tmp_path: Path, signer: Signer, name: str = "ci.pub") -> Path:
    path = tmp_path / "keys" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(signer.public_pem())
    return path


def policy_for(tmp_path: Path, body: str) -> Policy:
    file = tmp_path / "imagegate.toml"
    file.write_text(body)
    return Policy.load(file)


def results(report: imagegate.Report) -> dict[str, Outcome]:
    return {r.check: r.outcome for r in report.results}


# -- the policy section ------------------------------------------------------------------------------------------------


def test_signature_is_off_and_absent_from_reports_without_signature_rules(client: RegistryClient) -> None:
    assert Policy().mode("signature") is Mode.OFF
    report = imagegate.check(f"{HOST}/team/unsigned:1.0.0", client=client)
    assert report.passed and "signature" not in results(report)


def test_rules_turn_the_check_on_and_read_keys_relative_to_the_policy_file(tmp_path: Path, signer: Signer) -> None:
    write_key(tmp_path, signer)
    policy = policy_for(tmp_path, '[[signatures]]\nimages = ["registry.test/team/**"]\nkeys = ["keys/ci.pub"]\n')
    assert policy.mode("signature") is Mode.ENFORCE
    (rule,) = policy.signatures
    assert rule.required == 1 and rule.keys[0].source.endswith("keys/ci.pub") and rule.keys[0].hint == signer.hint()
    from imagegate._reference import parse_reference
    assert policy.signature_rules_for(parse_reference(f"{HOST}/team/app:1")) == (rule,)
    assert policy.signature_rules_for(parse_reference(f"{HOST}/vendor/tool:1")) == ()


def test_inline_pem_key(signer: Signer) -> None:
    policy = Policy.from_mapping({"signatures": [{"images": ["**"], "keys": [signer.public_pem().decode()]}]})
    assert policy.signatures[0].keys[0].hint == signer.hint()


@pytest.mark.parametrize("body, key, message", [
    ('[checks]\nsignature = "enforce"\n', "checks.signature", "no [[signatures]] entry"),
    ('[[signatures]]\nimages = ["**"]\n', "signatures[0].keys", "needs 'keys'"),
    ('[[signatures]]\nimages = []\nkeys = ["keys/ci.pub"]\n', "signatures[0].images", "needs 'images'"),
    ('[[signatures]]\nimages = ["**"]\nkeys = ["keys/missing.pub"]\n', "signatures[0].keys[0]", "cannot be read"),
    ('[[signatures]]\nimages = ["**"]\nkeys = ["keys/ci.pub", "keys/ci.pub"]\n', "signatures[0].keys", "same key"),
    ('[[signatures]]\nimages = ["**"]\nkeys = ["keys/ci.pub"]\nrequired = 2\n', "signatures[0].required", "from 1"),
    ('[[signatures]]\nimages = ["**"]\nkeys = ["keys/ci.pub"]\nthreshold = 1\n', "signatures[0]", "unknown key"),
])
def test_bad_signature_rules_name_their_path(tmp_path: Path, signer: Signer, body: str, key: str, message: str) -> None:
    write_key(tmp_path, signer)
    with pytest.raises(PolicyError, match=re.escape(message)) as caught:
        policy_for(tmp_path, body)
    assert caught.value.key == key


def test_waivers_accept_the_signature_check(tmp_path: Path, signer: Signer) -> None:
    write_key(tmp_path, signer)
    policy = policy_for(tmp_path, '[[signatures]]\nimages = ["**"]\nkeys = ["keys/ci.pub"]\n'
                                  '[[waivers]]\nreference = "registry.test/vendor/*"\nchecks = ["signature"]\n'
                                  'reason = "vendor image, not signed yet; OPS-7"\nexpires = 2030-01-01\n')
    assert policy.waivers[0].checks == ("signature",)


# -- the check ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def enforced(tmp_path: Path, signer: Signer) -> Policy:
    write_key(tmp_path, signer)
    return policy_for(tmp_path, '[[signatures]]\nimages = ["registry.test/team/**", "registry.test/vendor/**"]\n'
                                'keys = ["keys/ci.pub"]\n'
                                '[[waivers]]\nreference = "registry.test/vendor/*"\nchecks = ["signature"]\n'
                                'reason = "vendor image, not signed yet; OPS-7"\nexpires = 2030-01-01\n')


def test_signed_image_passes(client: RegistryClient, enforced: Policy) -> None:
    report = imagegate.check(f"{HOST}/team/signed:1.0.0", policy=enforced, client=client)
    assert report.passed and results(report)["signature"] is Outcome.PASS
    message = next(r.message for r in report.results if r.check == "signature")
    assert "signed by 1 of 1 key(s)" in message and "ci.pub" in message


def test_unsigned_image_fails_with_the_reason_and_the_fix(client: RegistryClient, enforced: Policy,
                                                          registry: FakeRegistry) -> None:
    report = imagegate.check(f"{HOST}/team/unsigned:1.0.0", policy=enforced, client=client)
    result = next(r for r in report.results if r.check == "signature")
    assert not report.passed and result.outcome is Outcome.FAIL
    assert "no cosign signature found" in result.message
    digest = registry.repositories["team/unsigned"].tags["1.0.0"]
    assert result.fix and f"cosign sign --key cosign.key {HOST}/team/unsigned@{digest}" in result.fix


def test_signed_by_an_unlisted_key_fails(client: RegistryClient, enforced: Policy, registry: FakeRegistry) -> None:
    digest = registry.repositories["team/unsigned"].tags["1.0.0"]
    push_bundle(registry, "team/unsigned", digest, make_bundle(Signer.ecdsa(), digest))
    report = imagegate.check(f"{HOST}/team/unsigned:1.0.0", policy=enforced, client=client)
    assert results(report)["signature"] is Outcome.FAIL
    assert "does not verify with any of the keys" in report.results[-1].message


def test_waived_and_warn(client: RegistryClient, enforced: Policy) -> None:
    report = imagegate.check(f"{HOST}/vendor/tool:2.0.0", policy=enforced, client=client, today=dt.date(2029, 1, 1))
    assert report.passed and results(report)["signature"] is Outcome.WAIVED
    expired = imagegate.check(f"{HOST}/vendor/tool:2.0.0", policy=enforced, client=client, today=dt.date(2031, 1, 1))
    assert results(expired)["signature"] is Outcome.FAIL
    warned = imagegate.check(f"{HOST}/team/unsigned:1.0.0", policy=enforced.with_modes(signature="warn"), client=client)
    assert warned.passed and results(warned)["signature"] is Outcome.WARN


def test_off_mode_fetches_no_signature(client: RegistryClient, enforced: Policy, registry: FakeRegistry) -> None:
    registry.reset_requests()
    report = imagegate.check(f"{HOST}/team/unsigned:1.0.0", policy=enforced.with_modes(signature="off"), client=client)
    assert report.passed and results(report)["signature"] is Outcome.SKIPPED
    assert not any(".sig" in r.path or "referrers" in r.path for r in registry.requests)


def test_image_no_rule_covers_passes(client: RegistryClient, signer: Signer, registry: FakeRegistry) -> None:
    policy = Policy.from_mapping({"signatures": [{"images": ["registry.test/team/**"],
                                                  "keys": [signer.public_pem().decode()]}]})
    registry.put_image("other/app", make_image(user="1000"), tag="1.0.0")
    report = imagegate.check(f"{HOST}/other/app:1.0.0", policy=policy, client=client)
    assert report.passed and "no [[signatures]] rule covers" in report.results[-1].message


def test_every_matching_rule_must_be_satisfied(client: RegistryClient, signer: Signer) -> None:
    other = Signer.ecdsa()
    policy = Policy.from_mapping({"signatures": [
        {"images": ["registry.test/team/**"], "keys": [signer.public_pem().decode()]},
        {"images": ["registry.test/**"], "keys": [other.public_pem().decode()]},
    ]})
    report = imagegate.check(f"{HOST}/team/signed:1.0.0", policy=policy, client=client)
    assert results(report)["signature"] is Outcome.FAIL  # the second rule's key never signed it


def test_offline_check_skips_the_signature(enforced: Policy) -> None:
    report = imagegate.check_offline(f"{HOST}/team/unsigned:1.0.0", policy=enforced)
    assert results(report)["signature"] is Outcome.SKIPPED


def test_plan_launch_refuses_an_unsigned_image(client: RegistryClient, enforced: Policy) -> None:
    with pytest.raises(CheckFailed) as caught:
        plan_launch(ImageSource(image=f"{HOST}/team/unsigned:1.0.0"), policy=enforced, client=client)
    assert results(caught.value.report)["signature"] is Outcome.FAIL
    plan = plan_launch(ImageSource(image=f"{HOST}/team/signed:1.0.0"), policy=enforced, client=client)
    assert plan.launch.startswith(f"{HOST}/team/signed@sha256:")
