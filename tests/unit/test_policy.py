"""Loading policies from imagegate.toml and pyproject.toml; bad input names its key."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from imagegate import Mode, Platform, Policy, PolicyError, TagClass


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
