"""The checks as pure functions over hand-built facts, and the policy step over them."""

from __future__ import annotations

import datetime as dt

import pytest

import imagegate

from imagegate._user import PasswdLookup, parse_passwd
from imagegate import (
    Backend,
    CheckInput,
    ImageFacts,
    Outcome,
    Platform,
    Policy,
    evaluate,
    is_root_user,
    parse_reference,
)

DIGEST = "sha256:" + "ab" * 32


def facts(ref: str, user: str | None) -> ImageFacts:
    return ImageFacts(
        reference=parse_reference(ref),
        digest=DIGEST,
        media_type="application/vnd.oci.image.manifest.v1+json",
        manifest_digest=DIGEST,
        config_digest="sha256:" + "cd" * 32,
        platform=Platform("linux", "amd64"),
        user=user,
    )


PASSWD = PasswdLookup(parse_passwd("root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/app:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"))


def run(ref: str, user: str | None = "1000", *, backend: str = "docker", override: str | None = None,
        policy: Policy | None = None, fetched: bool = True, passwd: PasswdLookup | None = PASSWD) -> dict[str, Outcome]:
    data = CheckInput(
        reference=parse_reference(ref),
        facts=facts(ref, user) if fetched else None,
        backend=Backend(backend),
        policy=policy or Policy(),
        user=override,
        passwd=passwd,
    )
    return {r.check: r.outcome for r in evaluate(data, today=dt.date(2026, 11, 27))}


@pytest.mark.parametrize("user", [None, "", "0", "root", "0:0", "root:root", "0:1000", "root:app", "00", " 0 "])
def test_root_users(user: str | None) -> None:
    assert is_root_user(user)
    assert run("reg.example.com/etl:1.0.0", user)["non-root"] is Outcome.FAIL


@pytest.mark.parametrize("user", ["1000", "1000:1000", "1000:0", "app", "app:app", "nobody", "65534"])
def test_non_root_users_pass_on_docker(user: str) -> None:
    assert not is_root_user(user)
    assert run("reg.example.com/etl:1.0.0", user)["non-root"] is Outcome.PASS


@pytest.mark.parametrize(("user", "outcome"), [("1000", Outcome.PASS), ("1000:app", Outcome.PASS), ("app", Outcome.FAIL), ("app:1000", Outcome.FAIL)])
def test_kubernetes_needs_a_numeric_user(user: str, outcome: Outcome) -> None:
    assert run("reg.example.com/etl:1.0.0", user, backend="kubernetes")["non-root"] is outcome


def test_runtime_override_is_checked_instead_of_the_image_user() -> None:
    assert run("reg.example.com/etl:1.0.0", "1000", override="0")["non-root"] is Outcome.FAIL
    assert run("reg.example.com/etl:1.0.0", None, override="1000")["non-root"] is Outcome.PASS
    assert run("reg.example.com/etl:1.0.0", "app", backend="kubernetes", override="1000")["non-root"] is Outcome.PASS


@pytest.mark.parametrize(
    ("ref", "outcome"),
    [
        ("reg.example.com/etl", Outcome.FAIL),
        ("reg.example.com/etl:latest", Outcome.FAIL),
        ("reg.example.com/etl:3.13", Outcome.FAIL),
        ("reg.example.com/etl:main", Outcome.FAIL),
        ("reg.example.com/etl:1.4.2", Outcome.PASS),
        ("reg.example.com/etl:3f2c1ab", Outcome.PASS),
        (f"reg.example.com/etl:latest@{DIGEST}", Outcome.PASS),
        (f"reg.example.com/etl@{DIGEST}", Outcome.PASS),
        ("reg.example.com/etl:etl-prod", Outcome.WARN),
    ],
)
def test_pinned(ref: str, outcome: Outcome) -> None:
    assert run(ref)["pinned"] is outcome


def test_mutable_tag_resolved_by_policy_warns_and_names_the_digest() -> None:
    policy = Policy(resolve_mutable_tags=True)
    data = CheckInput(parse_reference("reg.example.com/etl:latest"), facts("reg.example.com/etl:latest", "1"), Backend.DOCKER, policy)
    (result,) = [r for r in evaluate(data) if r.check == "pinned"]
    assert result.outcome is Outcome.WARN
    assert "resolve-mutable-tags" in result.message and DIGEST[:19] in result.message


def test_failure_messages_carry_a_fix() -> None:
    data = CheckInput(parse_reference("reg.example.com/etl:latest"), facts("reg.example.com/etl:latest", "0"), Backend.DOCKER, Policy())
    for result in evaluate(data):
        if result.outcome is Outcome.FAIL:
            assert result.fix, result
    pinned = next(r for r in evaluate(data) if r.check == "pinned")
    assert f"reg.example.com/etl:latest@{DIGEST}" in (pinned.fix or "")


def test_warn_mode_and_off_mode() -> None:
    policy = Policy().with_modes(non_root="warn", pinned="off")
    outcome = run("reg.example.com/etl:latest", "0", policy=policy)
    assert outcome["non-root"] is Outcome.WARN and outcome["pinned"] is Outcome.SKIPPED


def test_allowed_registries() -> None:
    policy = Policy(allowed_registries=("*.example.com",))
    assert run("reg.example.com/etl:1.0.0", policy=policy)["registry"] is Outcome.PASS
    refused = run("evil.test/etl:1.0.0", policy=policy, fetched=False)
    assert refused["registry"] is Outcome.FAIL and refused["non-root"] is Outcome.SKIPPED
    assert run("reg.example.com/etl:1.0.0")["registry"] is Outcome.PASS  # no list: any registry


def test_waivers_match_by_pattern_and_expire() -> None:
    policy = Policy.from_mapping(
        {
            "waivers": [
                {"reference": "reg.example.com/vendor/*", "checks": ["non-root"], "reason": "vendor image, OPS-12", "expires": dt.date(2027, 1, 1)},
                {"reference": "reg.example.com/old/*", "checks": ["non-root"], "reason": "gone", "expires": dt.date(2026, 1, 1)},
            ]
        }
    )
    assert run("reg.example.com/vendor/db:1.0.0", "0", policy=policy)["non-root"] is Outcome.WAIVED
    assert run("reg.example.com/vendor/db:latest", "0", policy=policy)["pinned"] is Outcome.FAIL  # other checks still apply
    assert run("reg.example.com/old/db:1.0.0", "0", policy=policy)["non-root"] is Outcome.FAIL  # expired


@pytest.mark.parametrize(
    ("user", "ids"),
    [("10001:10001", (10001, 10001)), ("10001", (10001, None)), ("app", (None, None)), ("app:10", (None, 10)), (None, (None, None)), (" 7 ", (None, None)), ("+7", (None, None)), ("07", (None, None))],
)
def test_numeric_ids(user: str | None, ids: tuple[int | None, int | None]) -> None:
    assert imagegate.numeric_ids(user) == ids
