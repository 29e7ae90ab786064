"""parse_reference against the Docker Engine's own parser.

Needs: a Docker Engine (``python scripts/stack.py up``); no registry, no pull.

How the engine is asked.  ``POST /images/{id}/tag?repo=TEXT`` with *no* ``tag``
parameter makes the daemon run ``reference.ParseNormalizedNamed(TEXT)`` on the
whole string (a name with ``:tag`` and ``@digest``), then store the tag, adding
``latest`` when there is none.  That is the same function ``docker pull`` and the
CLI use, so it is the oracle:

* a parse error (HTTP 400/500, e.g. "invalid reference format") ⇔ we refuse;
* for a reference without a digest, success ⇔ we accept, and the image's
  ``RepoTags`` then shows Docker's short form, which must equal our ``familiar``;
* a reference with a digest can never be tagged: the engine parses it fully
  (digest included) and only then refuses with "refusing to create a tag with
  a digest reference" (20.10) or "cannot import digest reference" (newer), so
  an error mentioning "digest reference" means "parsed fine" and anything else
  means "parse error".

Known, asserted differences (see the docstring of ``imagegate._reference``):

* Docker Engines before 23 vendor the old distribution grammar: no bracketed IPv6
  registries, and an uppercase first component (``Foo/bar``) is a path, hence
  refused as "must be lowercase".  We follow the current grammar; the test probes
  the engine once and expects exactly these refusals from an old one.
* ``foo_bar.com/x``: every Docker version accepts it as a path with no registry at
  all; we refuse it (it names no host one could pull from).

Nothing a user has is touched: the test tags one empty image it imports itself,
skips a reference whose tag already exists, puts back any tag it moved, and
removes its image at the end.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, event, example, given, reject, settings
from hypothesis import strategies as st

from imagegate._errors import InvalidReference
from imagegate._reference import _DOMAIN_RE, _PATH_COMPONENT_RE, Reference, parse_reference

docker = pytest.importorskip("docker")

pytestmark = pytest.mark.integration

DIGEST = "sha256:" + "0123456789abcdef" * 4


@dataclass
class Engine:
    client: Any
    image_id: str
    base_tag: str
    modern_grammar: bool  # distribution/reference ≥ 2.8: IPv6 hosts, uppercase first component = domain


def _empty_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w"):
        pass
    return buffer.getvalue()


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as exc:  # any failure to reach the daemon
        message = f"the Docker Engine is not reachable ({exc}); start it with: python scripts/stack.py up"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    base = f"imagegate-oracle-{os.getpid()}-{int(time.time())}/base"
    client.api.import_image_from_data(_empty_tar(), repository=base, tag="do-not-use")
    base_tag = f"{base}:do-not-use"
    image_id = client.api.inspect_image(base_tag)["Id"]
    try:
        probe = "[::1]:5000/imagegate-oracle-probe:1"
        modern = _engine_tag(client, image_id, probe) is None
        if modern:
            client.api.remove_image(probe, noprune=True)
        yield Engine(client, image_id, base_tag, modern)
    finally:
        client.api.remove_image(image_id, force=True, noprune=True)
        client.close()


def _engine_tag(client: Any, image_id: str, text: str) -> str | None:
    """Tag the image as *text* (parsed whole by the daemon); None, or the daemon's error."""
    try:
        client.api.tag(image_id, text)
    except docker.errors.APIError as exc:
        if exc.status_code not in (400, 500):
            raise  # 404 for the image etc.: not an answer about the reference
        return str(exc.explanation or exc)
    return None


def _all_tags(client: Any) -> dict[str, str]:
    return {tag: image["Id"] for image in client.api.images() for tag in image.get("RepoTags") or ()}


def _ours(text: str) -> Reference | None:
    try:
        return parse_reference(text)
    except InvalidReference:
        return None


def _old_engine_refuses(ref: Reference) -> bool:
    """References only the current grammar accepts (engines before Docker 23 refuse them)."""
    registry = ref.registry
    return registry.startswith("[") or ("." not in registry and ":" not in registry and registry != "localhost")


def _no_registry_quirk(text: str) -> bool:
    """'foo_bar.com/x': a dotted first component that is a valid path component but no host."""
    first, slash, _ = text.partition("/")
    return bool(
        slash
        and "." in first
        and ":" not in first
        and _PATH_COMPONENT_RE.fullmatch(first)
        and not _DOMAIN_RE.fullmatch(first)
    )


def _check_against_engine(engine: Engine, text: str) -> None:
    client = engine.client
    ours = _ours(text)
    before = _all_tags(client)
    if ours is not None and not ours.is_pinned:
        expected_tag = (ours if ours.tag else ours.with_tag("latest")).familiar
        if expected_tag in before:
            event(f"skipped: {expected_tag} exists")
            reject()  # never move a tag someone else owns
    mine_before = set(client.api.inspect_image(engine.image_id)["RepoTags"] or ())
    error = _engine_tag(client, engine.image_id, text)
    created = set(client.api.inspect_image(engine.image_id)["RepoTags"] or ()) - mine_before
    for tag in created:  # clean up first, then assert
        if tag in before and before[tag] != engine.image_id:
            client.api.tag(before[tag], tag)  # give it back to its image
        else:
            client.api.remove_image(tag, noprune=True)

    if _no_registry_quirk(text):
        event("known difference: dotted non-host first component")
        assert ours is None, f"{text!r}: expected imagegate to refuse a dotted non-host first component"
        return
    if ours is not None and not engine.modern_grammar and _old_engine_refuses(ours):
        event("known difference: old engine grammar")
        assert error is not None, f"{text!r}: this engine was expected to use the old grammar and refuse it"
        return
    if ours is not None and ours.is_pinned:
        event("both parse a digest reference")
        assert error is not None and "digest reference" in error, (
            f"{text!r}: we accept a digest reference; the engine said {error!r}"
        )
        return
    engine_accepts = error is None
    if ours is None:
        event("both refuse")
        assert not engine_accepts, f"{text!r}: the engine accepted it as {sorted(created)}; imagegate refused it"
        assert error is not None and "digest reference" not in error, f"{text!r}: engine parsed it: {error!r}"
        return
    event("both accept")
    assert engine_accepts, f"{text!r}: imagegate accepted it as {ours}; the engine said {error!r}"
    expected = ours if ours.tag else ours.with_tag("latest")
    assert created == {expected.familiar}, f"{text!r}: engine shows {sorted(created)}, we say {expected.familiar!r}"
    first = expected.repository.split("/", 1)[0]
    if expected.registry != "docker.io" or ("." not in first and ":" not in first and first != "localhost"):
        assert parse_reference(expected.familiar) == expected


# --- the sample ---------------------------------------------------------------------------
labels = st.from_regex(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,5}[a-zA-Z0-9])?", fullmatch=True)
ports = st.one_of(st.just(""), st.from_regex(r":[0-9]{1,5}", fullmatch=True))
registries = st.one_of(
    st.builds(lambda a, b, p: f"{a}.{b}{p}".lower(), labels, labels, ports),
    st.builds(lambda a, p: f"{a}.{p}", labels, st.sampled_from(["test", "Test:5000", "example.com"])),
    st.builds(lambda p: "localhost" + p, ports),
    st.builds(lambda p: "127.0.0.1" + p, ports),
    st.from_regex(r"\[[a-f0-9]{0,4}:[a-f0-9:]{0,8}\](?::[0-9]{1,4})?", fullmatch=True),
    st.from_regex(r"[A-Z][a-zA-Z0-9]{0,4}", fullmatch=True),
    st.sampled_from(["docker.io", "index.docker.io"]),
)
components = st.from_regex(r"[a-z0-9]{1,6}(?:(?:[._]|__|-{1,2})[a-z0-9]{1,6}){0,2}", fullmatch=True)
tags = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,12}", fullmatch=True)


good_digests = st.text("0123456789abcdef", min_size=64, max_size=64).map(lambda h: "sha256:" + h)
bad_digests = st.sampled_from(
    ["sha256:abc", "sha256:" + "A" * 64, "md5:" + "a" * 32, "sha512:" + "b" * 64, "sha256:" + "c" * 65, "sha256"]
)


@st.composite
def references(draw: st.DrawFn) -> str:
    """Grammar-valid parts; a few are too long or carry a bad digest."""
    registry = draw(st.one_of(st.none(), registries)) if draw(st.booleans()) else None
    path = "/".join(draw(st.lists(components, min_size=1, max_size=3)))
    if draw(st.integers(0, 9)) == 0:
        path = "/".join([path] * 40)[:270].rstrip("/._-")  # around the 255 limit
    text = (f"{registry}/" if registry else "") + f"io{path}"
    shape = draw(st.integers(0, 5))
    if shape in (1, 2, 4):
        text += ":" + draw(tags)
    if shape in (3, 4):
        text += "@" + draw(good_digests)
    if shape == 5:
        text += "@" + draw(bad_digests)
    return text


mutations = st.sampled_from(
    ["A", "..", "__", "___", "--", "//", "/", ":", "::", "@", "-", ".", "_", ":abc", "@sha256:ab", "[", "]", " ", "%"]
)


short_text = st.text(alphabet="ioaZ09._-:/@", min_size=1, max_size=16)


@st.composite
def near_misses(draw: st.DrawFn) -> str:
    text = draw(references())
    position = draw(st.integers(0, len(text)))
    return text[:position] + draw(mutations) + text[position:]


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    phases=(Phase.explicit, Phase.generate, Phase.shrink),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
)
@given(text=st.one_of(references(), references(), references(), near_misses(), short_text))
@example(text="io-oracle-single")
@example(text="iooracle/team/etl:1.4.2")
@example(text="docker.io/iooracle-hub")
@example(text="index.docker.io/iooracle-legacy:2")
@example(text="docker.io/library/iooracle-lib:3")
@example(text="localhost:5000/iooracle/x:1")
@example(text="registry.example.com:5000/iooracle/etl:v1.2")
@example(text="Registry.Example.COM/iooracle:1")
@example(text="docker.io/iooracle.com/bar")
@example(text="iooracle:5000")
@example(text="Foo/iooracle")
@example(text="[::1]:5000/iooracle:1")
@example(text="foo_bar.com/iooracle")
@example(text="IOORACLE")
@example(text="iooracle/UPPER")
@example(text="iooracle..x")
@example(text="iooracle___x")
@example(text="iooracle--x")
@example(text="iooracle//x")
@example(text="localhost:abc/iooracle")
@example(text="localhost:/iooracle")
@example(text="iooracle:")
@example(text="iooracle:-x")
@example(text="iooracle:.x")
@example(text="iooracle:_x.Y-z")
@example(text="iooracle:" + "t" * 128)
@example(text="iooracle:" + "t" * 129)
@example(text="a" * 237)
@example(text="a" * 238)
@example(text="r.io/" + "b" * 250)
@example(text="r.io/" + "b" * 249)
@example(text="c" * 64)
@example(text="sha256:iooracle")
@example(text="iooracle@")
@example(text=f"iooracle@{DIGEST}")
@example(text=f"iooracle:1@{DIGEST}")
@example(text="iooracle@sha256:" + "a" * 63)
@example(text="iooracle@sha256:" + "A" * 64)
@example(text="iooracle@md5:" + "a" * 32)
@example(text="iooracle@sha512:" + "a" * 128)
@example(text="")
def test_engine_and_parser_agree(engine: Engine, text: str) -> None:
    _check_against_engine(engine, text)


def test_engine_grammar_generation_is_known(engine: Engine) -> None:
    """Report which grammar the engine uses; both are handled above."""
    version = engine.client.version().get("Version", "?")
    expected_refusal = None if engine.modern_grammar else "must be lowercase"
    error = _engine_tag(engine.client, engine.image_id, "Foo/iooracle-upper")
    if error is None:
        engine.client.api.remove_image("Foo/iooracle-upper:latest", noprune=True)
    assert (error is None) == engine.modern_grammar, f"engine {version}: {error!r}"
    if expected_refusal:
        assert error is not None and expected_refusal in error


def test_no_tags_left_behind(engine: Engine) -> None:
    tags = engine.client.api.inspect_image(engine.image_id)["RepoTags"]
    assert tags == [engine.base_tag]
    assert not [tag for tag in _all_tags(engine.client) if re.search("iooracle", tag)]
