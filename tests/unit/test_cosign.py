"""imagegate._cosign: cosign signatures (legacy .sig and Sigstore bundles) verified against keys, in both formats,
with signatures made here with `cryptography` and served by the in-process fake registry. Every refusal case of a
hostile registry or signer is a row here; tests/integration/test_cosign_stack.py checks the same against real cosign."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from imagegate._auth import DockerConfig
from imagegate._cosign import (
    MAX_CANDIDATES,
    InvalidKey,
    PublicKey,
    check_keys,
    load_keys,
    pae,
    signature_tag,
    verify_signatures,
)
from imagegate._reference import parse_reference
from imagegate._registry import RegistryClient
from tests.support.cosign import (
    ReferrersRegistry,
    Signer,
    legacy_layer,
    make_bundle,
    push_bundle,
    push_legacy,
    put_fallback_index,
    put_sig_manifest,
    sig_tag,
    simplesigning_payload,
    statement,
)
from tests.support.fakeregistry import FakeRegistry
from tests.support.oci import make_image

REPO = "team/app"


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry(negotiation="distribution")


@pytest.fixture
def images(registry: FakeRegistry) -> tuple[str, str]:
    """Two images in REPO: the one being launched and another one."""
    one = registry.put_image(REPO, make_image(user="1000"), tag="v1")
    two = registry.put_image(REPO, make_image(user="2000"), tag="v2")
    return one, two


def client(transport) -> RegistryClient:  # noqa: ANN001
    return RegistryClient(transport=transport, docker_config=DockerConfig({}), sleep=lambda s: None)


def key_of(signer: Signer, name: str = "cosign.pub") -> PublicKey:
    return PublicKey.from_pem(signer.public_pem(), name)


def verify(registry_or_transport, digest: str, keys, required: int = 1, formats=("legacy", "bundle")):  # noqa: ANN001
    transport = getattr(registry_or_transport, "transport", registry_or_transport)
    ref = parse_reference(f"{FakeRegistry().host}/{REPO}@{digest}")
    return verify_signatures(client(transport), ref, digest, keys, required=required, formats=formats)


# -- keys --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [
    lambda: Signer.ecdsa(), lambda: Signer.ecdsa(ec.SECP384R1()), lambda: Signer.ecdsa(ec.SECP521R1()),
    lambda: Signer.rsa(2048), lambda: Signer.ed25519(),
], ids=["p256", "p384", "p521", "rsa2048", "ed25519"])
def test_every_key_type_verifies_both_formats(registry: FakeRegistry, images, make) -> None:  # noqa: ANN001
    one, _ = images
    signer = make()
    push_legacy(registry, REPO, one, [signer])
    result = verify(registry, one, [key_of(signer)], formats=("legacy",))
    assert result.verified, result.reason()
    push_bundle(registry, REPO, one, make_bundle(signer, one))
    result = verify(registry, one, [key_of(signer)], formats=("bundle",))
    assert result.verified, result.reason()
    assert result.signed_by == ("cosign.pub",)


@pytest.mark.parametrize("pem, reason", [
    (b"not a key", "PUBLIC KEY"),
    (b"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n", "private key"),
    (b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "cannot be read"),
])
def test_bad_keys_are_refused_with_the_reason(pem: bytes, reason: str) -> None:
    with pytest.raises(InvalidKey, match=reason):
        PublicKey.from_pem(pem, "k.pub")


def test_small_rsa_keys_and_other_curves_are_refused() -> None:
    with pytest.raises(InvalidKey, match="1024-bit RSA"):
        PublicKey.from_pem(Signer.rsa(1024).public_pem())
    with pytest.raises(InvalidKey, match="secp256k1"):
        PublicKey.from_pem(Signer.ecdsa(ec.SECP256K1()).public_pem())


def test_the_same_key_twice_is_refused(tmp_path) -> None:  # noqa: ANN001
    signer = Signer.ecdsa()
    (tmp_path / "a.pub").write_bytes(signer.public_pem())
    (tmp_path / "b.pub").write_bytes(signer.public_pem())
    with pytest.raises(InvalidKey, match="same key"):
        load_keys([tmp_path / "a.pub", tmp_path / "b.pub"])
    with pytest.raises(InvalidKey, match="cannot be read"):
        load_keys([tmp_path / "missing.pub"])


def test_two_keys_of_one_name_are_refused() -> None:
    """A verified signature is credited to its key's name: two keys named alike would count one signature twice
    towards required = 2 (from_pem names every key "key" unless told)."""
    first, second = PublicKey.from_pem(Signer.ecdsa().public_pem()), PublicKey.from_pem(Signer.ecdsa().public_pem())
    with pytest.raises(InvalidKey, match="names two different keys"):
        check_keys([first, second])


def test_an_inline_policy_key_and_a_key_file_never_share_a_name(tmp_path) -> None:  # noqa: ANN001
    import imagegate

    inline, on_disk = Signer.ecdsa(), Signer.ecdsa()
    (tmp_path / "signatures[0].keys[0]").write_bytes(on_disk.public_pem())  # a file named like the inline key
    policy = imagegate.Policy.from_mapping(
        {"signatures": [{"images": ["**"], "keys": [inline.public_pem().decode(), "signatures[0].keys[0]"],
                         "required": 2}]}, source="p.toml", base_dir=tmp_path)
    names = [k.source for k in policy.signatures[0].keys]
    assert len(set(names)) == 2 and names[0] == "signatures[0].keys[0] (inline PEM)"


def test_hint_is_base64_sha256_of_the_der_key() -> None:
    signer = Signer.ecdsa()
    assert key_of(signer).hint == signer.hint()


# -- legacy ------------------------------------------------------------------------------------------------------------


def test_legacy_signature_verifies_and_names_the_key(registry: FakeRegistry, images) -> None:  # noqa: ANN001
    one, _ = images
    signer = Signer.ecdsa()
    push_legacy(registry, REPO, one, [signer])
    result = verify(registry, one, [key_of(Signer.ecdsa(), "other.pub"), key_of(signer)])
    assert result.verified and result.signed_by == ("cosign.pub",)
    assert result.signatures[0].where == f"{signature_tag(one)} layer 0"
    assert result.to_dict()["verified"] is True


def test_no_signature_is_not_verified(registry: FakeRegistry, images) -> None:  # noqa: ANN001
    one, _ = images
    result = verify(registry, one, [key_of(Signer.ecdsa())])
    assert not result.verified
    assert result.signatures == ()
    assert "no cosign signature found" in result.reason()


def test_wrong_key_is_refused(registry: FakeRegistry, images) -> None:  # noqa: ANN001
    one, _ = images
    push_legacy(registry, REPO, one, [Signer.ecdsa()])
    result = verify(registry, one, [key_of(Signer.ecdsa())])
    assert not result.verified
    assert "does not verify with any of the keys" in result.reason()


def test_signature_of_another_image_copied_onto_this_tag_is_refused(registry: FakeRegistry, images) -> None:  # noqa: ANN001
    one, two = images
    signer = Signer.ecdsa()
    push_legacy(registry, REPO, two, [signer])  # a genuine signature of image two...
    other = registry.repositories[REPO].tags[sig_tag(two, "sig")]
    registry.move_tag(REPO, sig_tag(one, "sig"), other)  # ...served as image one's
    result = verify(registry, one, [key_of(signer)])
    assert not result.verified
    assert f"for '{two}', not {one}" in result.reason()


def test_tampered_payload_is_refused(registry: FakeRegistry, images) -> None:  # noqa: ANN001
    one, two = images
    signer = Signer.ecdsa()
    genuine = simplesigning_payload(two)
    forged = simplesigning_payload(one)
    put_sig_manifest(registry, REPO, one, [legacy_layer(registry, REPO, forged, signer.sign(genuine))])
    result = verify(registry, one, [key_of(signer)])
    assert not result.verified and "does not verify" in result.reason()


def test_payload_served_altered_is_refused_by_its_digest(registry: FakeRegistry, images) -> None:  # noqa: ANN001
    one, _ = images
    signer = Signer.ecdsa()
    payload = simplesigning_payload(one)
    push_legacy(registry, REPO, one, [signer], payload=payload)
    from tests.support.oci import digest_of
    registry.corrupt(digest_of(payload), payload + b" ")
    result = verify(registry, one, [key_of(signer)])
    assert not result.verified and "bytes" in result.reason()


@pytest.mark.parametrize("payload, reason", [
    (b'{"critical":{"image":{"docker-manifest-digest":"D"},"type":"cosign container image signature"},'
     b'"Critical":{}}', "differ only by case"),
    (b'{"critical":{"image":{"docker-manifest-digest":"D","docker-manifest-digest":"D"},'
     b'"type":"cosign container image signature"}}', "appears twice"),
    (b'{"critical":{"image":{"docker-manifest-digest":"D"},"type":"something else"}}', "type is 'something else'"),
    (b'{"critical":{"image":{}, "type":"cosign container image signature"}}', "missing"),
    (b'[1]', "expected an object"),
])
def test_ambiguous_or_malformed_payloads_are_refused_even_when_signed(
        registry: FakeRegistry, images, payload: bytes, reason: str) -> None:  # noqa: ANN001
    one, _ = images
    signer = Signer.ecdsa()
    payload = payload.replace(b'"D"', json.dumps(one).encode())
    push_legacy(registry, REPO, one, [signer], payload=payload)
    result = verify(registry, one, [key_of(signer)])
    assert not result.verified
    assert reason in result.reason()


def test_missing_or_bad_annotation_and_wrong_media_type(registry: FakeRegistry, images) -> None:  # noqa: ANN001
    one, _ = images
    signer = Signer.ecdsa()
    payload = simplesigning_payload(one)
    good = legacy_layer(registry, REPO, payload, signer.sign(payload))
    no_sig = {**good, "annotations": {}}
    not_b64 = {**good, "annotations": {"dev.cosignproject.cosign/signature": "%%%"}}
    wrong_type = {**good, "mediaType": "application/octet-stream"}
    put_sig_manifest(registry, REPO, one, [no_sig, not_b64, wrong_type])
    reasons = [c.problem for c in verify(registry, one, [key_of(signer)]).signatures]
    assert "no dev.cosignproject.cosign/signature annotation" in reasons[0]
    assert "not standard base64" in reasons[1]
    assert "not a cosign simple-signing payload" in reasons[2]


def test_oversized_payload_is_not_fetched(registry: FakeRegistry, images) -> None:  # noqa: ANN001
    one, _ = images
    signer = Signer.ecdsa()
    payload = simplesigning_payload(one)
    layer = {**legacy_layer(registry, REPO, payload, signer.sign(payload)), "size": 10 << 20}
    put_sig_manifest(registry, REPO, one, [layer])
    registry.reset_requests()
    result = verify(registry, one, [key_of(signer)], formats=("legacy",))
    assert "at most" in result.reason()
    assert registry.count("GET", "blobs") == 0


def test_at_most_max_candidates_are_looked_at(registry: FakeRegistry, images) -> None:  # noqa: ANN001
    one, _ = images
    signer = Signer.ecdsa()
    junk = [legacy_layer(registry, REPO, simplesigning_payload(one), b"x" * (i + 1)) for i in range(MAX_CANDIDATES)]
    payload = simplesigning_payload(one)
    real = legacy_layer(registry, REPO, payload, signer.sign(payload))
    put_sig_manifest(registry, REPO, one, [*junk, real])
    result = verify(registry, one, [key_of(signer)], formats=("legacy",))
    assert not result.verified  # the real one is beyond the bound: fail closed
    assert len(result.signatures) == MAX_CANDIDATES
    assert "only the first" in result.notes[0]


def test_required_counts_distinct_keys(registry: FakeRegistry, images) -> None:  # noqa: ANN001
    one, _ = images
    a, b, c = Signer.ecdsa(), Signer.rsa(), Signer.ecdsa()
    push_legacy(registry, REPO, one, [a, a])  # the same key twice counts once
    keys = [key_of(a, "a.pub"), key_of(b, "b.pub"), key_of(c, "c.pub")]
    assert not verify(registry, one, keys, required=2).verified
    push_bundle(registry, REPO, one, make_bundle(b, one))  # a second key, in the other format
    result = verify(registry, one, keys, required=2)
    assert result.verified and result.signed_by == ("a.pub", "b.pub")
    with pytest.raises(ValueError, match="required"):
        verify(registry, one, keys, required=4)


def test_stops_fetching_once_enough_keys_verified(registry: FakeRegistry, images) -> None:  # noqa: ANN001
    one, _ = images
    signer = Signer.ecdsa()
    push_legacy(registry, REPO, one, [signer])
    push_bundle(registry, REPO, one, make_bundle(signer, one))
    registry.reset_requests()
    assert verify(registry, one, [key_of(signer)]).verified
    assert registry.count("GET", "manifests") == 1  # the .sig tag only; bundles not looked for
    assert registry.count("GET", "blobs") == 1


@pytest.mark.parametrize("curve, good, bad", [
    (ec.SECP384R1(), "SHA384", "SHA512"), (ec.SECP521R1(), "SHA512", "SHA384"), (ec.SECP256R1(), "SHA256", "SHA384"),
])
def test_ecdsa_hash_is_sha256_or_the_one_cosign_signs_with_for_the_curve(registry: FakeRegistry, images, curve,
                                                                         good: str, bad: str) -> None:  # noqa: ANN001
    from cryptography.hazmat.primitives import hashes

    one, _ = images
    signer = Signer.ecdsa(curve)
    payload = simplesigning_payload(one)
    put_sig_manifest(registry, REPO, one, [legacy_layer(registry, REPO, payload,
                                                        signer.sign(payload, ecdsa_hash=getattr(hashes, good)()))])
    assert verify(registry, one, [key_of(signer)]).verified
    put_sig_manifest(registry, REPO, one, [legacy_layer(registry, REPO, payload,
                                                        signer.sign(payload, ecdsa_hash=getattr(hashes, bad)()))])
    assert not verify(registry, one, [key_of(signer)]).verified


def test_rsa_pss_is_refused_as_cosign_refuses_it(registry: FakeRegistry, images) -> None:  # noqa: ANN001
    one, _ = images
    signer = Signer.rsa()
    payload = simplesigning_payload(one)
    put_sig_manifest(registry, REPO, one, [legacy_layer(registry, REPO, payload, signer.sign(payload, pss=True))])
    assert not verify(registry, one, [key_of(signer)]).verified


def test_malformed_signature_manifest(registry: FakeRegistry, images) -> None:  # noqa: ANN001
    one, _ = images
    registry.put_manifest(REPO, "application/vnd.oci.image.manifest.v1+json",
                          b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
                          b'"layers":[],"Layers":[]}', tag=sig_tag(one, "sig"))
    result = verify(registry, one, [key_of(Signer.ecdsa())], formats=("legacy",))
    assert "malformed signature manifest" in result.reason()


# -- bundles -----------------------------------------------------------------------------------------------------------


def test_bundle_through_the_fallback_tag(registry: FakeRegistry, images) -> None:  # noqa: ANN001
    one, _ = images
    signer = Signer.ecdsa()
    push_bundle(registry, REPO, one, make_bundle(signer, one))
    registry.reset_requests()
    result = verify(registry, one, [key_of(signer)], formats=("bundle",))
    assert result.verified, result.reason()
    paths = [r.path for r in registry.requests]
    assert any(p.endswith(f"/referrers/{one}") for p in paths)  # asked the referrers API first (404 here)
    assert any(p.endswith(f"/manifests/{sig_tag(one)}") for p in paths)


def test_bundle_through_the_referrers_api_without_the_fallback_tag(registry: FakeRegistry, images) -> None:  # noqa: ANN001
    one, _ = images
    signer = Signer.ecdsa()
    push_bundle(registry, REPO, one, make_bundle(signer, one), fallback=False)
    api = ReferrersRegistry(registry)
    assert not verify(registry, one, [key_of(signer)]).verified  # no referrers API, no fallback: none found
    result = verify(api.transport, one, [key_of(signer)])
    assert result.verified and api.calls == 1


def test_referrers_api_answer_is_authoritative_and_bounded(registry: FakeRegistry, images) -> None:  # noqa: ANN001
    one, two = images
    signer = Signer.ecdsa()
    entries = push_bundle(registry, REPO, one, make_bundle(signer, one))
    api = ReferrersRegistry(registry)
    api.override = b'{"schemaVersion":2,"manifests":[],"manifests":[]}'
    assert "malformed index" in verify(api.transport, one, [key_of(signer)], formats=("bundle",)).reason()
    # A listed manifest that hashes to something else, and one the registry does not have.
    bogus = {**entries[0], "digest": two}
    missing = {**entries[0], "digest": "sha256:" + "0" * 64}
    api.override = json.dumps({"schemaVersion": 2, "manifests": [bogus, missing]}).encode()
    result = verify(api.transport, one, [key_of(signer)], formats=("bundle",))
    assert not result.verified
    problems = [c.problem for c in result.signatures]
    assert "malformed referrer manifest" in problems[0] or "subject" in problems[0]
    assert "does not have it" in problems[1]


def test_bundle_signed_by_another_key(registry: FakeRegistry, images) -> None:  # noqa: ANN001
    one, _ = images
    push_bundle(registry, REPO, one, make_bundle(Signer.ecdsa(), one))
    result = verify(registry, one, [key_of(Signer.ecdsa())], formats=("bundle",))
    assert not result.verified and "does not verify with any of the keys" in result.reason()


def test_bundle_for_another_image_is_refused(registry: FakeRegistry, images) -> None:  # noqa: ANN001
    one, two = images
    signer = Signer.ecdsa()
    # A genuine bundle of image two, attached to image one (the referrer names image one as its subject).
    push_bundle(registry, REPO, one, make_bundle(signer, two))
    result = verify(registry, one, [key_of(signer)], formats=("bundle",))
    assert not result.verified and "a bundle for another image" in result.reason()


def test_referrer_whose_subject_differs_is_refused(registry: FakeRegistry, images) -> None:  # noqa: ANN001
    one, two = images
    signer = Signer.ecdsa()
    entries = push_bundle(registry, REPO, two, make_bundle(signer, one), fallback=False)
    put_fallback_index(registry, REPO, one, entries)  # image two's referrer listed under image one's tag
    result = verify(registry, one, [key_of(signer)], formats=("bundle",))
    assert not result.verified and f"subject is '{two}'" in result.reason()


def test_tampered_bundle_statement_is_refused(registry: FakeRegistry, images) -> None:  # noqa: ANN001
    one, two = images
    signer = Signer.ecdsa()
    genuine = json.dumps(statement(two)).encode()
    signature = signer.sign(pae("application/vnd.in-toto+json", genuine))
    forged = json.dumps(statement(one)).encode()
    push_bundle(registry, REPO, one, make_bundle(signer, one, payload=forged, signature=signature))
    result = verify(registry, one, [key_of(signer)], formats=("bundle",))
    assert not result.verified and "does not verify" in result.reason()


def test_attestation_is_not_an_image_signature(registry: FakeRegistry, images) -> None:  # noqa: ANN001
    one, _ = images
    signer = Signer.ecdsa()
    vuln = statement(one, "https://cosign.sigstore.dev/attestation/vuln/v1")
    push_bundle(registry, REPO, one, make_bundle(signer, one, statement_doc=vuln))
    result = verify(registry, one, [key_of(signer)], formats=("bundle",))
    assert not result.verified and "not an image signature" in result.reason()


def test_hint_naming_another_key_is_refused(registry: FakeRegistry, images) -> None:  # noqa: ANN001
    one, _ = images
    signer = Signer.ecdsa()
    push_bundle(registry, REPO, one, make_bundle(signer, one, hint=Signer.ecdsa().hint()))
    result = verify(registry, one, [key_of(signer)], formats=("bundle",))
    assert not result.verified and "key hint" in result.reason()
    push_bundle(registry, REPO, one, make_bundle(signer, one, hint=None))  # no hint: the key decides
    assert verify(registry, one, [key_of(signer)], formats=("bundle",)).verified


@pytest.mark.parametrize("mutate, reason", [
    (lambda s, d: make_bundle(s, d, extra={"verification_material": {}}), "unknown field"),
    (lambda s, d: make_bundle(s, d).replace(b'"mediaType"', b'"mediaType": "x", "mediaType"', 1), "appears twice"),
    (lambda s, d: make_bundle(s, d, extra={"mediaType": "application/vnd.dev.sigstore.bundle+json;version=0.1"}),
     "is not application/vnd.dev.sigstore.bundle.v0.3"),
    (lambda s, d: make_bundle(s, d, extra={"verificationMaterial": {"certificate": {"rawBytes": "AA=="}}}),
     "keyless"),
    (lambda s, d: make_bundle(s, d, payload=json.dumps({**statement(d), "subject": [
        statement(d)["subject"][0], statement(d)["subject"][0]]}).encode()), "with 2 subjects"),
    (lambda s, d: make_bundle(s, d, payload=json.dumps({**statement(d), "Subject": []}).encode()), "differ only by case"),
    (lambda s, d: make_bundle(s, d, signature=b"\x00" * 70), "does not verify"),
])
def test_malformed_or_ambiguous_bundles_are_refused(registry: FakeRegistry, images, mutate, reason: str) -> None:  # noqa: ANN001
    one, _ = images
    signer = Signer.ecdsa()
    push_bundle(registry, REPO, one, mutate(signer, one))
    result = verify(registry, one, [key_of(signer)], formats=("bundle",))
    assert not result.verified
    assert reason in result.reason()


def test_dsse_signature_count_and_payload_type(registry: FakeRegistry, images) -> None:  # noqa: ANN001
    one, _ = images
    signer = Signer.ecdsa()
    doc = json.loads(make_bundle(signer, one))
    doc["dsseEnvelope"]["signatures"] *= 2
    push_bundle(registry, REPO, one, json.dumps(doc).encode())
    assert "holds 2 signatures" in verify(registry, one, [key_of(signer)], formats=("bundle",)).reason()
    doc = json.loads(make_bundle(signer, one))
    payload = base64.b64decode(doc["dsseEnvelope"]["payload"])
    doc["dsseEnvelope"]["payloadType"] = "text/plain"
    doc["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(signer.sign(pae("text/plain", payload))).decode()
    push_bundle(registry, REPO, one, json.dumps(doc).encode())
    assert "payload type is 'text/plain'" in verify(registry, one, [key_of(signer)], formats=("bundle",)).reason()


@pytest.mark.parametrize("sig", [1, ["x"], None, {"a": 1}])
def test_a_dsse_signature_that_is_not_a_string_is_refused_and_the_next_bundle_still_counts(
    registry: FakeRegistry, images, sig: Any  # noqa: ANN001
) -> None:
    one, _ = images
    signer = Signer.ecdsa()
    hostile = json.loads(make_bundle(signer, one))
    hostile["dsseEnvelope"]["signatures"][0]["sig"] = sig
    push_bundle(registry, REPO, one, json.dumps(hostile).encode(), make_bundle(signer, one))
    result = verify(registry, one, [key_of(signer)], formats=("bundle",))
    assert result.verified  # the valid bundle beside it still verifies: one hostile referrer blocks nothing
    refused = [c for c in result.signatures if not c.verified]
    assert refused and "malformed or ambiguous" in refused[0].problem and ".sig" in refused[0].problem


def test_oversized_referrer_index_is_refused(registry: FakeRegistry, images) -> None:  # noqa: ANN001
    one, _ = images
    api = ReferrersRegistry(registry)
    api.override = b'{"schemaVersion":2,"manifests":[' + b" " * (2 << 20) + b"]}"
    from imagegate._errors import RegistryError
    with pytest.raises(RegistryError):
        verify(api.transport, one, [key_of(Signer.ecdsa())], formats=("bundle",))
