"""imagegate._reference: tables of good and bad references, properties, tag rules.

``docker_parse`` below is a line-by-line port of distribution's
``reference.ParseNormalizedNamed`` (regexp.go + normalize.go, current
distribution/reference); the property tests check that ``parse_reference``
accepts exactly what it accepts, apart from the two documented refusals.
"""

from __future__ import annotations

import ast
import dataclasses
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import imagegate._reference as reference_module
from imagegate._errors import InvalidReference, PolicyError
from imagegate._reference import (
    Reference,
    ReferenceKind,
    parse_digest,
    parse_reference,
)

D64 = "sha256:" + "0123456789abcdef" * 4
D128 = "sha512:" + "0123456789abcdef" * 8
D96 = "sha384:" + "0123456789abcdef" * 6

# --- good references ---------------------------------------------------------------------
# input → (registry, repository, tag, digest, str, familiar)
GOOD = [
    ("busybox", "docker.io", "library/busybox", None, None, "docker.io/library/busybox", "busybox"),
    ("busybox:1.36", "docker.io", "library/busybox", "1.36", None, "docker.io/library/busybox:1.36", "busybox:1.36"),
    ("library/busybox", "docker.io", "library/busybox", None, None, "docker.io/library/busybox", "busybox"),
    ("docker.io/busybox", "docker.io", "library/busybox", None, None, "docker.io/library/busybox", "busybox"),
    ("index.docker.io/busybox:1", "docker.io", "library/busybox", "1", None, "docker.io/library/busybox:1",
     "busybox:1"),
    ("docker.io/library/busybox", "docker.io", "library/busybox", None, None, "docker.io/library/busybox", "busybox"),
    ("team/etl:1", "docker.io", "team/etl", "1", None, "docker.io/team/etl:1", "team/etl:1"),
    ("library/a/b", "docker.io", "library/a/b", None, None, "docker.io/library/a/b", "library/a/b"),
    ("docker.io/foo.com/bar", "docker.io", "foo.com/bar", None, None, "docker.io/foo.com/bar", "foo.com/bar"),
    ("127.0.0.1:5000/x:1", "127.0.0.1:5000", "x", "1", None, "127.0.0.1:5000/x:1", "127.0.0.1:5000/x:1"),
    ("localhost/x", "localhost", "x", None, None, "localhost/x", "localhost/x"),
    ("localhost:5000/team/etl:v1", "localhost:5000", "team/etl", "v1", None, "localhost:5000/team/etl:v1",
     "localhost:5000/team/etl:v1"),
    ("registry.example.com:5000/team/etl:1.4.2", "registry.example.com:5000", "team/etl", "1.4.2", None,
     "registry.example.com:5000/team/etl:1.4.2", "registry.example.com:5000/team/etl:1.4.2"),
    ("example:5000/x", "example:5000", "x", None, None, "example:5000/x", "example:5000/x"),
    ("Registry.Example.COM/x", "Registry.Example.COM", "x", None, None, "Registry.Example.COM/x",
     "Registry.Example.COM/x"),
    ("Foo/bar", "Foo", "bar", None, None, "Foo/bar", "Foo/bar"),  # uppercase first component = a domain
    ("[::1]:5000/x", "[::1]:5000", "x", None, None, "[::1]:5000/x", "[::1]:5000/x"),
    ("[2001:db8::1]/team/etl:2", "[2001:db8::1]", "team/etl", "2", None, "[2001:db8::1]/team/etl:2",
     "[2001:db8::1]/team/etl:2"),
    ("localhost:5000", "docker.io", "library/localhost", "5000", None, "docker.io/library/localhost:5000",
     "localhost:5000"),  # no '/', so 'localhost' is the name and 5000 the tag — as in Docker
    (f"busybox@{D64}", "docker.io", "library/busybox", None, D64, f"docker.io/library/busybox@{D64}",
     f"busybox@{D64}"),
    (f"busybox:1.36@{D64}", "docker.io", "library/busybox", "1.36", D64, f"docker.io/library/busybox:1.36@{D64}",
     f"busybox:1.36@{D64}"),
    (f"r.io/a@{D128}", "r.io", "a", None, D128, f"r.io/a@{D128}", f"r.io/a@{D128}"),
    (f"r.io/a@{D96}", "r.io", "a", None, D96, f"r.io/a@{D96}", f"r.io/a@{D96}"),
    ("a__b/c--d/e.f_g:T_a.g-1", "docker.io", "a__b/c--d/e.f_g", "T_a.g-1", None, "docker.io/a__b/c--d/e.f_g:T_a.g-1",
     "a__b/c--d/e.f_g:T_a.g-1"),
    ("a---b", "docker.io", "library/a---b", None, None, "docker.io/library/a---b", "a---b"),
    ("x:_tag", "docker.io", "library/x", "_tag", None, "docker.io/library/x:_tag", "x:_tag"),
    ("x:" + "a" * 128, "docker.io", "library/x", "a" * 128, None, "docker.io/library/x:" + "a" * 128, "x:" + "a" * 128),
    ("a" * 237, "docker.io", "library/" + "a" * 237, None, None, "docker.io/library/" + "a" * 237, "a" * 237),
    ("0" * 63, "docker.io", "library/" + "0" * 63, None, None, "docker.io/library/" + "0" * 63, "0" * 63),
    ("a-b.c:65535/x", "a-b.c:65535", "x", None, None, "a-b.c:65535/x", "a-b.c:65535/x"),
    ("sha256x:1", "docker.io", "library/sha256x", "1", None, "docker.io/library/sha256x:1", "sha256x:1"),
    ("r.io/sha256:1", "r.io", "sha256", "1", None, "r.io/sha256:1", "r.io/sha256:1"),
]


@pytest.mark.parametrize(("text", "registry", "repository", "tag", "digest", "full", "familiar"), GOOD)
def test_good_references(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None, full: str, familiar: str
) -> None:
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)
    assert str(ref) == full
    assert ref.familiar == familiar
    assert ref.name == f"{registry}/{repository}"
    assert parse_reference(str(ref)) == ref
    assert str(parse_reference(str(ref))) == str(ref)


# --- bad references ----------------------------------------------------------------------
BAD = [
    ("", "empty"),
    (" busybox", "whitespace"),
    ("busybox\n", "whitespace"),
    ("bus box", "whitespace"),
    ("busybøx", "plain ASCII"),
    ("a\x00b", "plain ASCII"),
    (":tag", "repository name is missing"),
    (f"@{D64}", "repository name is missing"),
    ("localhost:5000/", "repository name is missing after 'localhost:5000'"),
    ("busybox:", "':' is not followed by a tag"),
    ("busybox@", "'@' is not followed by a digest"),
    ("busybox:1@", "'@' is not followed by a digest"),
    ("Busybox", "repository name must be lowercase"),
    ("team/ETL", "repository name must be lowercase"),
    ("r.io/Team/etl", "repository name must be lowercase"),
    ("LOCALHOST/X", "repository name must be lowercase"),
    ("a" * 64, "image ID"),
    ("0123456789abcdef" * 4, "image ID"),
    ("a//b", "empty path component"),
    ("/a", "empty path component"),
    ("a/", "empty path component"),
    ("a..b", "path component 'a..b'"),
    ("a___b", "path component 'a___b'"),
    ("-a", "path component '-a'"),
    ("a-", "path component 'a-'"),
    ("team/.etl", "path component '.etl'"),
    ("a/b_", "path component 'b_'"),
    ("busybox:-1", "tag '-1' has invalid characters; tags are [A-Za-z0-9_.-], at most 128, not starting with . or -"),
    ("busybox:.1", "tag '.1' has invalid characters"),
    ("busybox:a+b", "tag 'a+b' has invalid characters"),
    ("busybox:a:b", "tag 'a:b' has invalid characters"),
    ("a/b:c/d", "tag 'c/d' has invalid characters"),
    ("busybox:" + "a" * 129, "129 characters long"),
    ("localhost:abc/x", "port 'abc' of registry 'localhost:abc' must be a number"),
    ("localhost:/x", "empty port"),
    ("r.io:5000:5000/x", "port '5000:5000'"),
    ("localhost:-1/x", "port '-1'"),
    ("foo_bar.com/x", "the label 'foo_bar' is not allowed"),
    ("-r.io/x", "the label '-r'"),
    ("r-.io/x", "the label 'r-'"),
    ("r..io/x", "an empty label"),
    (".r.io/x", "an empty label"),
    ("[::1/x", "no closing ']'"),
    ("[::g]:5000/x", "may only hold hex digits"),
    ("[::1]x:5000/x", "after the IPv6 address"),
    ("busybox@sha256:abc", "has 3 hex characters after 'sha256:'; it needs 64"),
    ("busybox@sha256:" + "a" * 65, "it needs 64"),
    ("busybox@sha512:" + "a" * 64, "it needs 128"),
    ("busybox@sha256:" + "A" * 64, "lowercase hex"),
    ("busybox@sha256:" + "g" * 64, "lowercase hex"),
    ("busybox@SHA256:" + "a" * 64, "algorithm names are lowercase"),
    ("busybox@md5:" + "a" * 32, "unsupported digest algorithm 'md5'"),
    ("busybox@" + "a" * 64, "not ALGORITHM:HEX"),
    ("busybox@sha256:", "not ALGORITHM:HEX"),
    (f"busybox@{D64}@{D64}", "more than one '@'"),
    ("a" * 238, "at most 255"),
    ("r.io/" + "/".join(["abcdefghi"] * 26), "at most 255"),
    ("sha256", "'sha256' cannot be a repository name"),
    ("sha256:" + "a" * 64, "image ID"),
    ("docker.io/library/sha256:1", "'sha256' cannot be a repository name"),
    ("x" * 2000, "2000 characters long"),
]


@pytest.mark.parametrize(("text", "reason"), BAD)
def test_bad_references(text: str, reason: str) -> None:
    with pytest.raises(InvalidReference) as caught:
        parse_reference(text)
    assert reason in caught.value.reason
    assert caught.value.reference == text
    assert repr(text) in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("value", [None, 5, b"busybox", ["busybox"]])
def test_non_string_is_invalid_reference(value: object) -> None:
    with pytest.raises(InvalidReference, match="expected a string"):
        parse_reference(value)  # type: ignore[arg-type]


def test_reason_is_short_for_long_input() -> None:
    with pytest.raises(InvalidReference) as caught:
        parse_reference("a" * 200 + "..b")
    assert "a" * 61 not in caught.value.reason  # values in reasons are cut short


# --- the Reference value -----------------------------------------------------------------


def test_kind_and_pinning() -> None:
    assert parse_reference("busybox").kind is ReferenceKind.UNTAGGED
    assert parse_reference("busybox:1").kind is ReferenceKind.TAGGED
    assert parse_reference(f"busybox@{D64}").kind is ReferenceKind.DIGEST
    assert parse_reference(f"busybox:1@{D64}").kind is ReferenceKind.DIGEST
    assert not parse_reference("busybox:1").is_pinned
    assert parse_reference(f"busybox:1@{D64}").is_pinned


def test_with_and_without() -> None:
    ref = parse_reference("r.io/team/etl:1.4")
    pinned = ref.with_digest(D64)
    assert str(pinned) == f"r.io/team/etl:1.4@{D64}"
    assert pinned.with_tag("2").tag == "2" and pinned.with_tag("2").digest == D64
    assert str(pinned.without_tag()) == f"r.io/team/etl@{D64}"
    assert ref.without_tag().kind is ReferenceKind.UNTAGGED
    assert ref.without_tag().without_tag() == ref.without_tag()
    with pytest.raises(InvalidReference, match="it needs 64") as caught:
        ref.with_digest("sha256:abc")
    assert caught.value.reference == "r.io/team/etl@sha256:abc"
    with pytest.raises(InvalidReference, match="invalid characters"):
        ref.with_tag("bad tag")
    with pytest.raises(InvalidReference, match="tag is empty"):
        ref.with_tag("")


def test_frozen_and_hashable() -> None:
    ref = parse_reference("busybox:1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.tag = "2"  # type: ignore[misc]
    with pytest.raises((AttributeError, TypeError)):
        ref.extra = 1  # type: ignore[attr-defined]
    assert {ref: 1}[parse_reference("docker.io/library/busybox:1")] == 1


def test_pickles() -> None:
    ref = parse_reference(f"r.io/team/etl:1@{D64}")
    assert pickle.loads(pickle.dumps(ref)) == ref


def test_constructor_normalises_and_validates() -> None:
    assert Reference("index.docker.io", "busybox") == parse_reference("busybox")
    assert Reference("docker.io", "busybox", "1") == parse_reference("busybox:1")
    with pytest.raises(InvalidReference, match="would be read as part of the path"):
        Reference("myregistry", "x")
    with pytest.raises(InvalidReference, match="lowercase"):
        Reference("r.io", "X")
    with pytest.raises(InvalidReference, match="tag is empty"):
        Reference("r.io", "x", "")
    with pytest.raises(InvalidReference, match="it needs 64"):
        Reference("r.io", "x", None, "sha256:ab")
    with pytest.raises(InvalidReference, match="registry is empty"):
        Reference("", "x")
    with pytest.raises(InvalidReference, match="must be a string"):
        Reference(None, "x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "api_host"),
    [("busybox", "registry-1.docker.io"), ("index.docker.io/x/y", "registry-1.docker.io"),
     ("r.io:5000/x", "r.io:5000"), ("[::1]:5000/x", "[::1]:5000"), ("localhost/x", "localhost")],
)
def test_api_host(text: str, api_host: str) -> None:
    assert parse_reference(text).api_host == api_host


@pytest.mark.parametrize(
    ("text", "loopback"),
    [
        ("localhost/x", True),
        ("localhost:5000/x", True),
        ("LocalHost:5000/x", True),
        ("127.0.0.1:5000/x", True),
        ("127.255.3.4/x", True),
        ("[::1]:5000/x", True),
        ("[0:0:0:0:0:0:0:1]/x", True),
        ("[::0:1]/x", True),
        ("[::2]/x", False),
        ("[::]/x", False),
        ("[1::1]/x", False),
        ("[::1::]/x", False),
        ("[0:0:0:0:0:0:0:0:1]/x", False),
        ("127.0.0.256/x", False),
        ("127.0.0/x", False),
        ("128.0.0.1/x", False),
        ("localhost.example.com/x", False),
        ("busybox", False),
        ("r.io/x", False),
    ],
)
def test_is_loopback(text: str, loopback: bool) -> None:
    assert parse_reference(text).is_loopback is loopback


@pytest.mark.parametrize("digest", [D64, D96, D128])
def test_parse_digest_good(digest: str) -> None:
    assert parse_digest(digest) == digest


@pytest.mark.parametrize(
    ("digest", "reason"),
    [
        ("", "not ALGORITHM:HEX"),
        ("sha256", "not ALGORITHM:HEX"),
        (":" + "a" * 64, "not ALGORITHM:HEX"),
        ("sha256:" + "a" * 63, "it needs 64"),
        ("sha256:" + "a" * 64 + "\n", "lowercase hex"),
        ("sha512:" + "a" * 127, "it needs 128"),
        ("sha1:" + "a" * 40, "unsupported digest algorithm"),
        ("Sha256:" + "a" * 64, "algorithm names are lowercase"),
        ("sha256:" + "F" * 64, "lowercase hex"),
    ],
)
def test_parse_digest_bad(digest: str, reason: str) -> None:
    with pytest.raises(InvalidReference) as caught:
        parse_digest(digest)
    assert reason in caught.value.reason
    assert caught.value.reference == digest


def test_parse_digest_non_string() -> None:
    with pytest.raises(InvalidReference, match="must be a string"):
        parse_digest(None)  # type: ignore[arg-type]


# --- a port of distribution's ParseNormalizedNamed, the specification -------------------
_ALNUM = r"[a-z0-9]+"
_SEP = r"(?:[._]|__|[-]+)"
_PATH_COMP = f"{_ALNUM}(?:{_SEP}{_ALNUM})*"
_DOMAIN_COMP = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMP}(?:\.{_DOMAIN_COMP})*|\[(?:[a-fA-F0-9:]+)\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}"
_NAME = f"(?:{_DOMAIN}/)?{_PATH_COMP}(?:/{_PATH_COMP})*"
_REFERENCE_RE = re.compile(f"({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?", re.ASCII)
_ANCHORED_NAME_RE = re.compile(f"(?:({_DOMAIN})/)?({_PATH_COMP}(?:/{_PATH_COMP})*)", re.ASCII)
_GO_DIGEST = {"sha256": 64, "sha384": 96, "sha512": 128}


def docker_parse(s: str) -> tuple[str, str, str | None, str | None] | None:
    """(domain, path, tag, digest) as ParseNormalizedNamed returns them, or None if it errors."""
    if re.fullmatch(r"[a-f0-9]{64}", s):
        return None
    i = s.find("/")
    if i == -1 or (not any(c in s[:i] for c in ".:") and s[:i] != "localhost" and s[:i].lower() == s[:i]):
        domain, remainder = "docker.io", s
    else:
        domain, remainder = s[:i], s[i + 1 :]
    if domain == "index.docker.io":
        domain = "docker.io"
    if domain == "docker.io" and "/" not in remainder:
        remainder = "library/" + remainder
    remote = remainder.split(":", 1)[0]
    if remote.lower() != remote:
        return None
    match = _REFERENCE_RE.fullmatch(domain + "/" + remainder)
    if not match:
        return None
    name, tag, digest = match.groups()
    if len(name) > 255:
        return None
    if digest is not None:
        algorithm, _, encoded = digest.partition(":")
        if len(encoded) != _GO_DIGEST.get(algorithm, -1) or not re.fullmatch("[a-f0-9]+", encoded):
            return None
    name_match = _ANCHORED_NAME_RE.fullmatch(name)
    assert name_match is not None
    return name_match.group(1) or "", name_match.group(2), tag, digest


def ours(s: str) -> tuple[str, str, str | None, str | None] | None:
    try:
        ref = parse_reference(s)
    except InvalidReference:
        return None
    return ref.registry, ref.repository, ref.tag, ref.digest


def documented_refusal(s: str, docker: tuple[str, str, str | None, str | None] | None) -> bool:
    """The two places imagegate refuses what the grammar allows (see the module docstring)."""
    if docker is None:
        return False
    domain, path, _, _ = docker
    no_registry = domain == ""  # 'foo_bar.com/x': Docker keeps the dotted host as a path component
    image_id_like = domain == "docker.io" and path == "library/sha256"
    return no_registry or image_id_like


def test_docker_port_agrees_on_the_tables() -> None:
    for text, registry, repository, tag, digest, *_ in GOOD:
        assert docker_parse(text) == (registry, repository, tag, digest), text
    for text, _reason in BAD:
        if isinstance(text, str) and text.isascii() and text.isprintable() and len(text) < 1024:
            assert docker_parse(text) is None or documented_refusal(text, docker_parse(text)), text


# --- property tests -----------------------------------------------------------------------
path_components = st.from_regex(r"[a-z0-9]{1,8}(?:(?:[._]|__|-{1,3})[a-z0-9]{1,8}){0,3}", fullmatch=True)
labels = st.from_regex(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,6}[a-zA-Z0-9])?", fullmatch=True)
ports = st.from_regex(r":[0-9]{1,5}", fullmatch=True)
domains = st.one_of(
    st.builds(lambda a, b, p: f"{a}.{b}{p}", labels, labels, st.one_of(st.just(""), ports)),
    st.builds(lambda a, p: a + p, labels, ports),
    st.builds(lambda p: "localhost" + p, st.one_of(st.just(""), ports)),
    st.from_regex(r"\[[a-fA-F0-9]{0,4}:[a-fA-F0-9:]{0,12}\](?::[0-9]{1,5})?", fullmatch=True),
    st.from_regex(r"[A-Z][a-zA-Z0-9]{0,5}", fullmatch=True),
    st.sampled_from(["docker.io", "index.docker.io", "127.0.0.1:5000"]),
)
tags = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True) | st.from_regex(
    r"[A-Za-z0-9_][A-Za-z0-9_.-]{100,127}", fullmatch=True
)
digests = st.one_of(
    st.text("0123456789abcdef", min_size=64, max_size=64).map(lambda h: "sha256:" + h),
    st.text("0123456789abcdef", min_size=128, max_size=128).map(lambda h: "sha512:" + h),
)


@st.composite
def references(draw: st.DrawFn) -> str:
    """Assemble a reference from grammar-valid parts (it may still be too long)."""
    domain = draw(st.one_of(st.none(), domains))
    components = draw(st.lists(path_components, min_size=1, max_size=4))
    if draw(st.booleans()) and draw(st.booleans()):
        components = components * 12  # sometimes longer than 255
    tag = draw(st.one_of(st.none(), tags))
    digest = draw(st.one_of(st.none(), digests))
    text = (f"{domain}/" if domain else "") + "/".join(components)
    return text + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


# characters that matter to the grammar, to get near-misses
near_text = st.text(alphabet="abzAZ019._-:/@[]", max_size=40)
mutations = st.sampled_from(["", ":", "@", "/", "//", "..", "__", "___", "-", "A", ":abc", "@sha256:ab", " "])


@st.composite
def near_misses(draw: st.DrawFn) -> str:
    text = draw(references())
    position = draw(st.integers(0, len(text)))
    return text[:position] + draw(mutations) + text[position:]


FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(references())
@example("Foo/bar")
@example("[::1]:5000/x:1")
def test_valid_references_parse_and_round_trip(text: str) -> None:
    docker = docker_parse(text)
    ref = ours(text)
    assert ref == docker or (ref is None and documented_refusal(text, docker))
    if ref is None:
        return
    parsed = parse_reference(text)
    assert parse_reference(str(parsed)) == parsed
    assert str(parse_reference(str(parsed))) == str(parsed)
    assert Reference(parsed.registry, parsed.repository, parsed.tag, parsed.digest) == parsed
    first = parsed.repository.split("/", 1)[0]
    if parsed.registry != "docker.io" or not reference_module._looks_like_registry(first):
        # Docker's short form drops docker.io/ even when the path then looks like a
        # registry ('docker.io/foo.com/x' → 'foo.com/x'); the others round-trip.
        assert parse_reference(parsed.familiar) == parsed


@FAST
@given(st.one_of(near_misses(), near_text, st.text(max_size=60)))
@example("foo_bar.com/x")
@example("sha256:1")
def test_parse_agrees_with_docker_on_any_text(text: str) -> None:
    try:
        ref = parse_reference(text)
    except InvalidReference as exc:  # anything else escaping is a bug
        assert exc.reference == text and exc.reason
        ref = None
    docker = docker_parse(text)
    got = None if ref is None else (ref.registry, ref.repository, ref.tag, ref.digest)
    assert got == docker or (got is None and documented_refusal(text, docker))


# --- module hygiene ------------------------------------------------------------------------
MODULE = Path(reference_module.__file__)


def test_imports_only_the_allowed_modules() -> None:
    imported: set[str] = set()
    for node in ast.walk(ast.parse(MODULE.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert imported == {"__future__", "dataclasses", "enum", "re", "imagegate._errors"}


def test_import_pulls_no_third_party_module() -> None:
    """Load the module alone (skipping the package __init__) and list what it brought in."""
    code = (
        "import sys, types\n"
        "pkg = types.ModuleType('imagegate'); pkg.__path__ = [sys.argv[1]]\n"
        "sys.modules['imagegate'] = pkg\n"
        "before = set(sys.modules)\n"
        "import imagegate._reference\n"
        "print('\\n'.join(sorted(set(sys.modules) - before)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(MODULE.parent)], capture_output=True, text=True, check=True
    ).stdout.split()
    ours = {"imagegate._errors", "imagegate._reference"}
    foreign = [name for name in out if name.split(".")[0] not in sys.stdlib_module_names and name not in ours]
    assert foreign == []
    assert "imagegate._reference" in out


def test_launch_reference_drops_the_tag_and_needs_a_digest() -> None:
    from imagegate import InvalidReference, launch_reference

    digest = "sha256:" + "ab" * 32
    assert launch_reference(f"127.0.0.1:5000/team/etl:1.4.2@{digest}") == f"127.0.0.1:5000/team/etl@{digest}"
    assert launch_reference(f"busybox@{digest}") == f"docker.io/library/busybox@{digest}"
    with pytest.raises(InvalidReference, match="not pinned"):
        launch_reference("127.0.0.1:5000/team/etl:1.4.2")
