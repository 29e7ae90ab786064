"""Tag rules: the default tables, user patterns (RE2), and that no pattern can hang a check."""

from __future__ import annotations

import pickle
import re
import time

import pytest

from imagegate._errors import PolicyError
from imagegate._tags import DEFAULT_IMMUTABLE_TAGS, DEFAULT_MUTABLE_TAGS, TagClass, TagRules


# --- tag rules ---------------------------------------------------------------------------
MUTABLE = [
    (None, "no tag"),
    ("latest", "whatever was pushed last"),
    ("latest-alpine", "'latest' variant"),
    ("alpine-latest", "'latest' variant"),
    ("3.13-latest", "'latest' variant"),
    ("main", "channel"),
    ("master", "channel"),
    ("develop", "channel"),
    ("stable", "channel"),
    ("edge", "channel"),
    ("nightly", "channel"),
    ("canary", "channel"),
    ("rc", "channel"),
    ("trunk", "channel"),
    ("stable-slim", "channel"),
    ("3", "major-only"),
    ("v2", "major-only"),
    ("2024", "major-only"),
    ("3.13", "tag '3.13' is minor-only: it moves with every patch release"),
    ("v1.25", "minor-only"),
    ("24.04", "minor-only"),
    ("slim", "variant name without a version"),
    ("alpine", "variant name without a version"),
    ("bookworm", "variant name without a version"),
    ("bookworm-slim", "variant name without a version"),
    ("alpine3.20", "variant name without a version"),
    ("3-slim", "major or minor version with a variant"),
    ("3.13-alpine", "major or minor version with a variant"),
    ("v1-bookworm", "major or minor version with a variant"),
    ("3.13-slim-bookworm", "major or minor version with a variant"),
    ("21-jdk", "major or minor version with a variant"),
]
IMMUTABLE = [
    ("c-daaf71444b03b58e9e00", "imagegate build tag"),
    ("g-0123456789ab", "imagegate build tag"),
    ("g-0123456789ab-dirty-0123456789ab", "imagegate build tag"),
    ("g-0123456789ab-c-daaf71444b03b58e9e00", "imagegate build tag"),
    ("1.2.3", "full version"),
    ("v1.2.3", "full version"),
    ("1.2.3-rc.1", "full version"),
    ("1.2.3_build.5", "full version"),
    ("3.13.1-slim-bookworm", "full version"),
    ("1.25.3-alpine3.20", "full version"),
    ("1.2.3.4", "full version"),
    ("release-1.2.3", "full version"),
    ("abc1234", "git commit"),
    ("sha-abc1234", "git commit"),
    ("gabc1234", "git commit"),
    ("main-abc1234", "git commit"),
    ("0123456789abcdef0123456789abcdef01234567", "git commit"),
    ("build-123", "build number"),
    ("b123", "build number"),
    ("123-abcdef0", "build number"),
    ("ci-4521", "build number"),
    ("12345", "build number"),
    ("20241127", "date stamp"),
    ("2024-11-27", "date stamp"),
    ("20241127T101500Z", "date stamp"),
    ("2024.11.27", "date stamp"),
    ("nightly-20241127", "date stamp"),
    ("main-2024-11-27-abc1234", "date stamp"),
]
UNKNOWN = ["foo", "deadbeef", "prod", "my-feature", "2024-13-01x", "abc123", ""]


@pytest.mark.parametrize(("tag", "reason"), MUTABLE)
def test_default_mutable(tag: str | None, reason: str) -> None:
    kind, why = TagRules.default().classify(tag)
    assert kind is TagClass.MUTABLE
    assert reason in why
    if tag is not None:
        assert repr(tag) in why


@pytest.mark.parametrize(("tag", "reason"), IMMUTABLE)
def test_default_immutable(tag: str, reason: str) -> None:
    kind, why = TagRules.default().classify(tag)
    assert kind is TagClass.IMMUTABLE
    assert reason in why and repr(tag) in why and "digest" in why


@pytest.mark.parametrize("tag", UNKNOWN)
def test_default_unknown(tag: str) -> None:
    kind, why = TagRules.default().classify(tag)
    assert kind is TagClass.UNKNOWN
    assert repr(tag) in why


def test_default_rules_are_the_dataclass_defaults() -> None:
    assert TagRules() == TagRules.default()
    assert TagRules.default() is TagRules.default()
    assert TagRules.default().mutable == DEFAULT_MUTABLE_TAGS
    assert TagRules.default().immutable == DEFAULT_IMMUTABLE_TAGS
    hash(TagRules.default())


def test_every_default_rule_has_a_table_row() -> None:
    rules = TagRules.default()
    for patterns, rows in ((rules.mutable, MUTABLE), (rules.immutable, IMMUTABLE)):
        for pattern in patterns:
            assert any(tag is not None and re.fullmatch(pattern, tag) for tag, _ in rows), pattern


def test_extended_rules() -> None:
    rules = TagRules.default().extended(mutable=[r"prod(-.+)?"], immutable=(r"rel-\d+", r"1\.2\.3"))
    assert rules.classify("prod") == (TagClass.MUTABLE, "tag 'prod' matches the mutable pattern 'prod(-.+)?'")
    assert rules.classify("prod-eu")[0] is TagClass.MUTABLE
    kind, why = rules.classify("rel-42")
    assert kind is TagClass.IMMUTABLE and "immutable pattern 'rel-\\\\d+'" in why
    assert rules.classify("1.2.3")[1].startswith("tag '1.2.3' is a full version")  # defaults keep their reasons
    assert rules.immutable.count(r"1\.2\.3") == 1 or r"1\.2\.3" not in DEFAULT_IMMUTABLE_TAGS
    assert rules.mutable[: len(DEFAULT_MUTABLE_TAGS)] == DEFAULT_MUTABLE_TAGS
    assert TagRules.default().classify("prod")[0] is TagClass.UNKNOWN  # the original is unchanged


def test_mutable_wins_over_immutable() -> None:
    rules = TagRules.default().extended(immutable=[r"v\d+", r"latest"])
    assert rules.classify("v3")[0] is TagClass.MUTABLE
    assert rules.classify("latest")[0] is TagClass.MUTABLE
    assert TagRules.default().classify("1.2.3-latest")[0] is TagClass.MUTABLE


def test_replacing_the_defaults() -> None:
    rules = TagRules(mutable=(), immutable=(r"v\d+",))
    assert rules.classify("v3")[0] is TagClass.IMMUTABLE
    assert rules.classify("latest")[0] is TagClass.UNKNOWN
    assert rules.classify(None)[0] is TagClass.MUTABLE


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mutable": ["ok", "("]}, "mutable tag pattern '(' is not a valid regular expression"),
        ({"immutable": ["[a-"]}, "immutable tag pattern '[a-' is not a valid regular expression"),
        ({"mutable": "latest"}, "must be a list"),
        ({"immutable": [3]}, "must be a string"),
        ({"mutable": 3}, "must be a list"),
    ],
)
def test_bad_user_patterns(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        TagRules.default().extended(**kwargs)  # type: ignore[arg-type]
    assert message in str(caught.value)


def test_bad_pattern_error_names_its_position() -> None:
    with pytest.raises(PolicyError) as caught:
        TagRules.default().extended(mutable=["ok", "("])
    assert caught.value.key == "mutable-tags[1]"
    with pytest.raises(PolicyError, match="not a valid regular expression"):
        TagRules(immutable=("(",))


def test_rules_pickle() -> None:
    rules = TagRules.default().extended(mutable=["prod"])
    assert pickle.loads(pickle.dumps(rules)).classify("prod")[0] is TagClass.MUTABLE


@pytest.mark.parametrize("pattern", [r"(a+)+b", r"(x+x+)+y", r"(a|aa)+c", r"(.*a){20}"])
def test_a_backtracking_pattern_cannot_hang_a_check(pattern: str) -> None:
    rules = TagRules.default().extended(mutable=[pattern])
    started = time.perf_counter()
    for tag in ("a" * 128, "x" * 128, "a" * 127 + "!"):
        rules.classify(tag)
    assert time.perf_counter() - started < 0.5


def test_look_around_is_refused_with_the_reason() -> None:
    with pytest.raises(PolicyError, match="no backreferences or look-around"):
        TagRules.default().extended(immutable=[r"(?<=v)\d+"])


def test_an_overlong_pattern_is_refused() -> None:
    with pytest.raises(PolicyError, match="at most 512"):
        TagRules.default().extended(mutable=["a" * 600])
