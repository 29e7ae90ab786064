"""Strict JSON and the OCI documents read from it: no document means one thing to us and another to Go."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imagegate._documents import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Index,
    Manifest,
    UnsupportedDocument,
    parse_config,
    parse_manifest,
)
from imagegate._json import DocumentError, decode, struct
from tests.support.oci import make_config, make_image, make_index, platform_of

D = "sha256:" + "ab" * 32
CONFIG = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": D, "size": 10}


def manifest(**fields: object) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": CONFIG, "layers": [], **fields}).encode()


# -- decode ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"a": 1, "a": 2}', "appears twice"),
        ('{"x": {"User": "1", "User": "0"}}', "appears twice"),
        ('[{"k": 1, "k": 1}]', "appears twice"),
        ('{"a": NaN}', "NaN"),
        ('{"a": Infinity}', "Infinity"),
        ('{"a": -Infinity}', "Infinity"),
        ('{"a": 1e400}', "out of range"),  # Go: "cannot unmarshal number 1e400 into ... float64"
        ('{"a": -1.5e309}', "out of range"),
        ('{"a": "\\ud800"}', "surrogate"),
        ("[" * 70 + "]" * 70, "nested deeper"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ("{", "not JSON"),
        ('{"a": 1} {"b": 2}', "not JSON"),
    ],
)
def test_decode_refuses(text: str, reason: str) -> None:
    with pytest.raises(DocumentError, match=reason):
        decode(text.encode())


def test_decode_refuses_invalid_utf8() -> None:
    with pytest.raises(DocumentError, match="not UTF-8"):
        decode(b'{"User": "\xff"}')


@pytest.mark.parametrize(
    "keys",
    [("User", "user"), ("User", "USER"), ("config", "Config"), ("digest", "DIGEST")],
)
def test_struct_refuses_keys_that_fold_together(keys: tuple[str, str]) -> None:
    value = decode(json.dumps({keys[0]: "1000", keys[1]: "0"}).encode())
    with pytest.raises(DocumentError, match="differ only by case"):
        struct(value, "config")


@pytest.mark.parametrize("key", ["U\u017fer", "\u212aey", "d\u0131gest", "\u0130mage", "Us\u00e9r", "User\u0000"])
def test_struct_refuses_keys_outside_printable_ascii(key: str) -> None:
    # ſ, the Kelvin sign, dotless i and dotted I fold to ASCII letters in Go: such keys are never read
    with pytest.raises(DocumentError, match="not printable ASCII"):
        struct(decode(json.dumps({key: "0"}).encode()))


def test_struct_reads_keys_case_insensitively_like_go() -> None:
    fields = struct(decode(b'{"uSeR": "1000", "ENV": ["A=1"]}'))
    assert fields.string("User") == "1000"
    assert fields.strings("Env") == ("A=1",)


def test_maps_keep_keys_that_differ_by_case() -> None:
    fields = struct(decode(b'{"Labels": {"a": "1", "A": "2"}}'))
    assert fields.mapping("Labels") == {"a": "1", "A": "2"}


# -- property: any key that matters, given twice in any spelling, is refused -------------------------

FIELDS = ["User", "Entrypoint", "Cmd", "Env", "Labels", "Healthcheck"]


def _variants(name: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
        lambda flips: "".join(c.upper() if f else c.lower() for c, f in zip(name, flips))
    )


@settings(max_examples=300, deadline=None)
@given(
    field=st.sampled_from(FIELDS),
    data=st.data(),
    where=st.sampled_from(["config", "top"]),
)
def test_any_duplicate_or_case_variant_of_a_used_key_is_refused(field: str, data: st.DataObject, where: str) -> None:
    first = data.draw(_variants(field))
    second = data.draw(_variants(field))
    pair = f'"{first}": "1000", "{second}": "0"'
    if where == "config":
        text = '{"architecture": "amd64", "os": "linux", "config": {' + pair + "}}"
    else:
        name_a = data.draw(_variants("config"))
        name_b = data.draw(_variants("config"))
        text = '{"architecture": "amd64", "os": "linux", "' + name_a + '": {"User": "1"}, "' + name_b + '": {"User": "0"}}'
    with pytest.raises(DocumentError):
        parse_config(text.encode())


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=string.printable, max_size=30))
def test_a_user_value_is_read_exactly(user: str) -> None:
    config = parse_config(json.dumps({"architecture": "amd64", "os": "linux", "config": {"User": user}}).encode())
    assert config.user == user


# -- manifests and indexes ---------------------------------------------------------------------------


def test_manifest_and_index_are_read() -> None:
    image = make_image(user="1000")
    parsed = parse_manifest(image.manifest.data, OCI_MANIFEST)
    assert isinstance(parsed, Manifest) and parsed.config.digest == image.config.digest
    index = make_index([(platform_of("linux", "amd64"), image)])
    parsed_index = parse_manifest(index.manifest.data, OCI_INDEX)
    assert isinstance(parsed_index, Index) and parsed_index.manifests[0].digest == image.digest


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (manifest(), OCI_INDEX, "served it as"),
        (manifest(manifests=[]), OCI_MANIFEST, "ambiguous"),
        (json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [], "layers": []}).encode(), OCI_INDEX, "ambiguous"),
        (json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": "x"}).encode(), OCI_INDEX, "expected a list"),
        (manifest(config={**CONFIG, "digest": "md5:d41d8cd98f00b204e9800998ecf8427e"}), OCI_MANIFEST, "unsupported digest algorithm"),
        (manifest(config={**CONFIG, "digest": "sha256:../../../etc/passwd"}), OCI_MANIFEST, "config.digest"),
        (manifest(config={**CONFIG, "digest": "SHA256:" + "ab" * 32}), OCI_MANIFEST, "lowercase"),
        (manifest(config={**CONFIG, "size": -1}), OCI_MANIFEST, "outside"),
        (manifest(config={**CONFIG, "size": True}), OCI_MANIFEST, "expected an integer"),
        (manifest(config={**CONFIG, "size": 1.5}), OCI_MANIFEST, "expected an integer"),
        (manifest(config=None), OCI_MANIFEST, "config"),
        (json.dumps({"schemaVersion": 3, "mediaType": OCI_MANIFEST}).encode(), OCI_MANIFEST, "schemaVersion 3"),
        (json.dumps({"schemaVersion": 2, "config": CONFIG, "layers": []}).encode(), "application/json", "neither"),
        (json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{"mediaType": OCI_MANIFEST, "digest": "latest", "size": 1}]}).encode(), OCI_INDEX, r"manifests\[0\]\.digest"),
        (b'{"schemaVersion": 2, "mediaType": "' + OCI_MANIFEST.encode() + b'", "config": {}, "Config": {}, "layers": []}', OCI_MANIFEST, "differ only by case"),
    ],
)
def test_bad_manifests_are_refused(body: bytes, content_type: str, reason: str) -> None:
    with pytest.raises(DocumentError, match=reason):
        parse_manifest(body, content_type)


def test_schema1_and_artifacts_are_unsupported() -> None:
    with pytest.raises(UnsupportedDocument, match="schema 1"):
        parse_manifest(json.dumps({"schemaVersion": 1, "fsLayers": []}).encode(), "application/json")
    artifact = manifest(config={**CONFIG, "mediaType": "application/vnd.example.thing"})
    with pytest.raises(UnsupportedDocument, match="not an image config"):
        parse_manifest(artifact, OCI_MANIFEST)
    nested = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                         "manifests": [{"mediaType": "application/vnd.example", "digest": D, "size": 1}]}).encode()
    with pytest.raises(UnsupportedDocument):
        parse_manifest(nested, OCI_INDEX)


def test_docker_media_type_from_the_header_alone() -> None:
    body = json.dumps({"schemaVersion": 2, "config": {**CONFIG, "mediaType": "application/vnd.docker.container.image.v1+json"}, "layers": []}).encode()
    assert parse_manifest(body, DOCKER_MANIFEST + "; charset=utf-8").media_type == DOCKER_MANIFEST


def test_config_fields() -> None:
    blob = make_config(user="1000", env={"PGPASSWORD": "x"}, entrypoint=["python"], cmd=["job.py"], labels={"a": "b"},
                       healthcheck={"Test": ["CMD", "true"]}, diff_ids=[D])
    config = parse_config(blob.data)
    assert (config.user, config.entrypoint, config.cmd) == ("1000", ("python",), ("job.py",))
    assert config.env_names == ("PGPASSWORD",) and config.labels == {"a": "b"}
    assert config.healthcheck == ("CMD", "true") and config.diff_ids == (D,)
    assert parse_config(b'{"os":"linux","architecture":"amd64","config":{"Entrypoint":"sh"}}').entrypoint == ("sh",)
    none = parse_config(b'{"os":"linux","architecture":"amd64","config":{"Healthcheck":{"Test":["NONE"]}}}')
    assert none.healthcheck is None


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ({"config": {"User": 0}}, "expected a string"),
        ({"config": {"Env": "A=1"}}, "expected a list of strings"),
        ({"config": {"Labels": {"a": 1}}}, "expected a string value"),
        ({"config": []}, "expected an object"),
        ({"rootfs": {"diff_ids": ["sha256:xyz"]}}, "rootfs.diff_ids"),
    ],
)
def test_bad_configs_are_refused(config: dict[str, object], reason: str) -> None:
    with pytest.raises(DocumentError, match=reason):
        parse_config(json.dumps({"os": "linux", "architecture": "amd64", **config}).encode())
