"""Loading policies from imagegate.toml and pyproject.toml; bad input names its key."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from imagegate import Mode, Platform, Policy, PolicyError, TagClass, Waiver


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_enforce_every_check() -> None:
    policy = Policy()
    assert {c: policy.mode(c) for c in ("registry", "pinned", "non-root")} == dict.fromkeys(("registry", "pinned", "non-root"), Mode.ENFORCE)
    assert policy.platform == Platform("linux", "amd64") and not policy.resolve_mutable_tags


def test_full_policy_file(tmp_path: Path) -> None:
    policy = Policy.load(write(tmp_path / "imagegate.toml", '''
platform = "linux/arm64"
resolve-mutable-tags = true
allowed-registries = ["registry.example.com"]
insecure-registries = ["build-cache:5000"]
mutable-tags = ["prod"]
immutable-tags = ["rel-[0-9]+"]

[checks]
non-root = "warn"

[[waivers]]
reference = "registry.example.com/vendor/*"
checks = ["non-root"]
reason = "vendor image"
expires = 2027-01-31
'''))
    assert policy.platform == Platform("linux", "arm64")
    assert policy.resolve_mutable_tags and policy.allowed_registries == ("registry.example.com",)
    assert policy.insecure_registries == ("build-cache:5000",)
    assert policy.mode("non-root") is Mode.WARN and policy.mode("pinned") is Mode.ENFORCE
    assert policy.tag_rules.classify("prod")[0] is TagClass.MUTABLE
    assert policy.tag_rules.classify("rel-42")[0] is TagClass.IMMUTABLE
    assert policy.waivers[0].expires == dt.date(2027, 1, 31)
    assert policy.source == str(tmp_path / "imagegate.toml")


def test_pyproject_table_and_discovery(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n\n[tool.imagegate.checks]\npinned = "off"\n')
    nested = tmp_path / "dags" / "team"
    nested.mkdir(parents=True)
    policy = Policy.discover(nested)
    assert policy.mode("pinned") is Mode.OFF
    assert "[tool.imagegate]" in (policy.source or "")


def test_discovery_prefers_imagegate_toml_and_falls_back_to_defaults(tmp_path: Path) -> None:
    assert Policy.discover(tmp_path) == Policy()
    write(tmp_path / "pyproject.toml", '[tool.imagegate.checks]\npinned = "off"\n')
    write(tmp_path / "imagegate.toml", '[checks]\npinned = "warn"\n')
    assert Policy.discover(tmp_path).mode("pinned") is Mode.WARN


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('pined = true', "unknown key 'pined'"),
        ('[checks]\nnonroot = "warn"', "unknown check 'nonroot'"),
        ('[checks]\nnon-root = "strict"', "mode 'strict'"),
        ('allowed-registries = "x"', "[allowed-registries] must be a list"),
        ('resolve-mutable-tags = "yes"', "[resolve-mutable-tags] must be true or false"),
        ('platform = "amd64"', "invalid platform 'amd64'"),
        ('mutable-tags = ["(unclosed"]', "(unclosed"),
        ('[[waivers]]\nreference = "x/*"', "needs a non-empty 'reason'"),
        ('[[waivers]]\nreference = "x/*"\nreason = "r"\nexpire = 2027-01-01', "[waivers[0]] unknown key 'expire'"),
        ('[[waivers]]\nreference = "x/*"\nreason = "r"\nchecks = ["pinnned"]', "unknown check 'pinnned'"),
        ('this is not toml', "cannot read TOML"),
    ],
)
def test_bad_policy_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "imagegate.toml", text)
    with pytest.raises(PolicyError) as info:
        Policy.load(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_missing_file_and_missing_table(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="file not found"):
        Policy.load(tmp_path / "nope.toml")
    with pytest.raises(PolicyError, match=r"no \[tool.imagegate\] table"):
        Policy.load(write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n'))


def test_with_modes_validates() -> None:
    assert Policy().with_modes(non_root="off").mode("non-root") is Mode.OFF
    with pytest.raises(PolicyError):
        Policy().with_modes(unknown="off")
    with pytest.raises(PolicyError):
        Policy().with_modes(pinned="sometimes")


# -- patterns, waivers that explain themselves ---------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "registry", "allowed"),
    [
        ("[::1]:5000", "[::1]:5000", True),  # a literal IPv6 registry, not a character class
        ("[::1]:5000", ":", False),
        ("[::1]:5000", "1", False),
        ("registry.example.com", "registry.example.com", True),
        ("registry.example.com", "registry.example.com:5000", False),
        ("registry.example.com", "REGISTRY.example.com", True),
        ("*.example.com", "eu.example.com", True),
        ("*.example.com", "evil.com", False),
        ("*.dkr.ecr.*.amazonaws.com", "123.dkr.ecr.eu-west-1.amazonaws.com", True),
        ("reg?.example.com", "reg1.example.com", False),  # ? is literal
        ("127.0.0.1:*", "127.0.0.1:5000", True),
    ],
)
def test_allowed_registries_match_literally_except_star(pattern: str, registry: str, allowed: bool) -> None:
    assert Policy(allowed_registries=(pattern,)).registry_allowed(registry) is allowed


def test_a_backtracking_glob_cannot_hang() -> None:
    import time

    policy = Policy(allowed_registries=("*a*a*a*a*a*a*a*a*a*a*a*a*b",))
    started = time.perf_counter()
    assert not policy.registry_allowed("a" * 250)
    assert time.perf_counter() - started < 0.5


def test_waiver_reference_star_stays_within_a_path_component() -> None:
    from imagegate import parse_reference

    waiver = Waiver("registry.example.com/vendor/*", ("non-root",), "r")
    assert waiver.matches(parse_reference("registry.example.com/vendor/db:1.0"), "non-root")
    assert not waiver.matches(parse_reference("registry.example.com/vendor/sub/db:1.0"), "non-root")
    deep = Waiver("registry.example.com/vendor/**", ("non-root",), "r")
    assert deep.matches(parse_reference("registry.example.com/vendor/sub/db:1.0"), "non-root")


def test_a_waiver_must_list_its_checks(tmp_path: Path) -> None:
    path = write(tmp_path / "imagegate.toml", '[[waivers]]\nreference = "x/*"\nreason = "r"\n')
    with pytest.raises(PolicyError, match=r"needs 'checks'.*checks = \[\"\*\"\]") as info:
        Policy.load(path)
    assert info.value.key == "waivers[0]"
    with pytest.raises(PolicyError, match="waives nothing"):
        Policy.load(write(tmp_path / "imagegate.toml", '[[waivers]]\nreference = "x/*"\nreason = "r"\nchecks = []\n'))


def test_waivers_that_cover_everything_are_announced_in_every_report() -> None:
    policy = Policy.from_mapping(
        {"waivers": [{"reference": "**", "checks": ["non-root"], "reason": "lazy"},
                     {"reference": "reg.example.com/team/*", "checks": ["*"], "reason": "lazier"}]}
    )
    notices = policy.notices()
    assert len(notices) == 2
    assert "matches every image" in notices[0] and "waives every check" in notices[1]
    assert Policy().notices() == ()


def test_an_expired_waiver_says_when_it_expired() -> None:
    import datetime as dt

    from imagegate import Backend, CheckInput, ImageFacts, Outcome, Platform, evaluate, parse_reference

    ref = parse_reference("reg.example.com/vendor/db:1.0.0")
    policy = Policy.from_mapping(
        {"waivers": [{"reference": "reg.example.com/vendor/*", "checks": ["non-root"], "reason": "OPS-12", "expires": dt.date(2026, 1, 31)}]}
    )
    facts = ImageFacts(ref, "sha256:" + "a" * 64, "m", "sha256:" + "a" * 64, "sha256:" + "b" * 64, Platform("linux", "amd64"), user="0")
    result = next(r for r in evaluate(CheckInput(ref, facts, Backend.DOCKER, policy), dt.date(2026, 11, 29)) if r.check == "non-root")
    assert result.outcome is Outcome.FAIL
    assert result.note and "expired on 2026-01-31" in result.note and "OPS-12" in result.note


@pytest.mark.parametrize("value", ["NET_BIND_SERVICE", "net_bind_service", "CAP_NET_BIND_SERVICE"])
def test_allowed_capabilities_are_normalised(value: str) -> None:
    assert Policy.from_mapping({"allowed-capabilities": [value]}).allowed_capabilities == ("NET_BIND_SERVICE",)


@pytest.mark.parametrize("value", ["ALL", "net bind", "1CAP"])
def test_bad_capabilities_are_refused(value: str) -> None:
    with pytest.raises(PolicyError, match="not a capability"):
        Policy.from_mapping({"allowed-capabilities": [value]})


def test_resolve_user_names_is_a_boolean(tmp_path: Path) -> None:
    assert Policy.from_mapping({"resolve-user-names": False}).resolve_user_names is False
    with pytest.raises(PolicyError, match="resolve-user-names"):
        Policy.from_mapping({"resolve-user-names": "no"})


def test_allowed_host_paths_load_from_a_file_and_are_announced(tmp_path: Path) -> None:
    policy = Policy.load(write(tmp_path / "imagegate.toml", 'allowed-host-paths = ["/var/run/docker.sock", "/"]\n'))
    assert policy.allowed_host_paths == ("/var/run/docker.sock", "/")
    notices = policy.notices()
    assert len(notices) == 2 and "bind-mount '/var/run/docker.sock'" in notices[0] and "every host path" in notices[1]
    assert Policy(allowed_host_paths=("/srv/data",)).allowed_host_paths == ("/srv/data",)


@pytest.mark.parametrize(
    ("value", "key", "message"),
    [
        (["var/run/docker.sock"], "allowed-host-paths[0]", "not an absolute host path"),
        (["/ok", "./data"], "allowed-host-paths[1]", "not an absolute host path"),
        (["/a\x00b"], "allowed-host-paths[0]", "not an absolute host path"),
        ([""], "allowed-host-paths[0]", "non-empty string"),
        ([3], "allowed-host-paths[0]", "non-empty string"),
        ("/var/run/docker.sock", "allowed-host-paths", "must be a list"),
    ],
)
def test_bad_allowed_host_paths_name_the_entry(value: object, key: str, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        Policy.from_mapping({"allowed-host-paths": value}, source="imagegate.toml")
    assert caught.value.key == key and message in str(caught.value) and caught.value.source == "imagegate.toml"
    with pytest.raises(PolicyError):
        Policy(allowed_host_paths=("relative/path",))
