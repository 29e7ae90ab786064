"""imagegate._cosign_write and _push: signatures and attestations written into the in-process fake registry (with
uploads), read back by imagegate's own verifier; appending, no duplicates, hostile upload locations and digests.
tests/integration/test_cosign_sign.py checks the same writes against the real cosign."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from imagegate._auth import DockerConfig
from imagegate._cosign import PublicKey, pae, signature_tag, verify_signatures
from imagegate._cosign_keys import PrivateKey
from imagegate._cosign_write import SignatureWriteError, attest_image, sign_image
from imagegate._errors import RegistryError
from imagegate._predicates import TRIVY
from imagegate._reference import parse_reference
from imagegate._registry import RegistryClient
from tests.support.cosign import ReferrersRegistry, Signer, push_legacy
from tests.support.fakeregistry import FakeRegistry
from tests.support.oci import OCI_INDEX, make_image

REPO = "team/app"
REF = parse_reference(f"registry.test/{REPO}")


def _key(kind: str) -> PrivateKey:
    made = {"p256": lambda: ec.generate_private_key(ec.SECP256R1()),
            "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
            "p521": lambda: ec.generate_private_key(ec.SECP521R1()),
            "rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "ed25519": ed25519.Ed25519PrivateKey.generate}[kind]()
    return PrivateKey.from_key(made, f"{kind}.key")


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry(negotiation="distribution", writable=True)


@pytest.fixture
def digest(registry: FakeRegistry) -> str:
    return registry.put_image(REPO, make_image(user="1000"), tag="v1")


def client(transport) -> RegistryClient:  # noqa: ANN001
    return RegistryClient(transport=transport, docker_config=DockerConfig({}), sleep=lambda s: None)


def _verified(registry: FakeRegistry | ReferrersRegistry, digest: str, key: PrivateKey, fmt: str) -> list[str]:
    with client(registry.transport) as c:
        result = verify_signatures(c, REF, digest, [key.public], formats=(fmt,))
    return [check.format for check in result.signatures if check.verified]


@pytest.mark.parametrize("fmt", ["bundle", "legacy"])
@pytest.mark.parametrize("kind", ["p256", "p384", "p521", "rsa", "ed25519"])
def test_signature_round_trips_through_imagegate_verify(registry: FakeRegistry, digest: str, kind: str,
                                                        fmt: str) -> None:
    key = _key(kind)
    with client(registry.transport) as c:
        written = sign_image(c, REF, digest, key, format=fmt)
    assert written.written and written.digest == digest and written.format == fmt
    assert _verified(registry, digest, key, fmt) == [fmt]
    assert _verified(registry, digest, _key("p256"), fmt) == []  # another key: not verified


def test_legacy_signature_is_appended_to_cosigns_and_never_duplicated(registry: FakeRegistry, digest: str) -> None:
    theirs = Signer.ecdsa()
    push_legacy(registry, REPO, digest, [theirs])
    key = _key("p256")
    with client(registry.transport) as c:
        first = sign_image(c, REF, digest, key, format="legacy")
        again = sign_image(c, REF, digest, key, format="legacy")
    assert first.written and not again.written and again.manifest == first.manifest
    manifest = json.loads(registry.repositories[REPO].manifests[registry.repositories[REPO].tags[
        signature_tag(digest)]].data)
    assert len(manifest["layers"]) == 2  # theirs kept, ours appended once
    config = json.loads(registry.repositories[REPO].blobs[manifest["config"]["digest"]])
    assert config["rootfs"]["diff_ids"] == [layer["digest"] for layer in manifest["layers"]]
    with client(registry.transport) as c:
        both = verify_signatures(c, REF, digest, [PublicKey.from_pem(theirs.public_pem(), "theirs"), key.public],
                                 required=2, formats=("legacy",))
    assert both.verified


def test_bundle_fallback_index_is_appended_and_sorted(registry: FakeRegistry, digest: str) -> None:
    one, two = _key("p256"), _key("rsa")
    with client(registry.transport) as c:
        a = sign_image(c, REF, digest, one)
        b = sign_image(c, REF, digest, two)
        again = sign_image(c, REF, digest, one)
    assert not again.written and again.manifest == a.manifest
    index = json.loads(registry.repositories[REPO].manifests[registry.repositories[REPO].tags[
        signature_tag(digest, "")]].data)
    listed = [entry["digest"] for entry in index["manifests"]]
    assert listed == sorted([a.manifest, b.manifest])
    referrer = json.loads(registry.repositories[REPO].manifests[a.manifest].data)
    assert referrer["subject"]["digest"] == digest and referrer["artifactType"].endswith("bundle.v0.3+json")
    assert referrer["annotations"]["dev.sigstore.bundle.predicateType"] == "https://sigstore.dev/cosign/sign/v1"


def test_registry_with_referrers_api_gets_no_fallback_tag(registry: FakeRegistry, digest: str) -> None:
    api = ReferrersRegistry(registry)
    key = _key("p256")
    with client(api.transport) as c:
        sign_image(c, REF, digest, key)
        assert not sign_image(c, REF, digest, key).written  # found through the referrers API
    assert signature_tag(digest, "") not in registry.repositories[REPO].tags
    assert _verified(api, digest, key, "bundle") == ["bundle"]


@pytest.mark.parametrize("fmt", ["bundle", "legacy"])
def test_attestation_carries_the_statement_about_this_digest(registry: FakeRegistry, digest: str, fmt: str) -> None:
    key = _key("p384")
    predicate = {"SchemaVersion": 2, "Results": []}
    with client(registry.transport) as c:
        written = attest_image(c, REF, digest, key, TRIVY, predicate, format=fmt)
        again = attest_image(c, REF, digest, key, TRIVY, predicate, format=fmt)
    assert written.written and not again.written and written.kind == "attestation"
    repo = registry.repositories[REPO]
    if fmt == "legacy":
        manifest = json.loads(repo.manifests[repo.tags[signature_tag(digest, "att")]].data)
        layer = manifest["layers"][0]
        assert layer["mediaType"] == "application/vnd.dsse.envelope.v1+json"
        assert layer["annotations"]["predicateType"] == TRIVY and len(manifest["layers"]) == 1
        envelope = json.loads(repo.blobs[layer["digest"]])
    else:
        referrer = json.loads(repo.manifests[written.manifest].data)
        assert referrer["annotations"]["dev.sigstore.bundle.predicateType"] == TRIVY
        envelope = json.loads(repo.blobs[referrer["layers"][0]["digest"]])["dsseEnvelope"]
    payload = base64.b64decode(envelope["payload"])
    assert key.public.verify(base64.b64decode(envelope["signatures"][0]["sig"]), pae(envelope["payloadType"], payload))
    statement = json.loads(payload)
    assert statement["subject"][0]["digest"] == {"sha256": digest.split(":")[1]}
    assert statement["predicateType"] == TRIVY and statement["predicate"] == predicate
    # an attestation is not a signature: imagegate verify does not count it
    assert _verified(registry, digest, key, fmt) == []


@pytest.mark.parametrize("location", [
    "https://evil.test/v2/team/app/blobs/uploads/x",  # another host
    "https://registry.test:8443/v2/team/app/blobs/uploads/x",  # another port
    "http://registry.test/v2/team/app/blobs/uploads/x",  # another scheme
    "/elsewhere/upload",  # outside /v2/
    "",
])
def test_upload_location_off_the_registry_is_refused(registry: FakeRegistry, digest: str, location: str) -> None:
    registry.upload_location = location
    with client(registry.transport) as c, pytest.raises(RegistryError, match="Location|not on the registry"):
        sign_image(c, REF, digest, _key("p256"), format="legacy")
    assert not [r for r in registry.requests if r.method == "PUT"]  # nothing was sent anywhere


def test_relative_upload_location_is_used(registry: FakeRegistry, digest: str) -> None:
    registry.upload_location = f"/v2/{REPO}/blobs/uploads/upload-1?_state=x"  # the first upload's id
    key = _key("p256")
    with client(registry.transport) as c:
        registry.uploads.clear()
        original = registry._write

        def relative(request, path):  # noqa: ANN001, ANN202 - each upload answers its own relative location
            response = original(request, path)
            if request.method == "POST":
                upload = response.headers["Docker-Upload-UUID"]
                response.headers["Location"] = f"/v2/{REPO}/blobs/uploads/{upload}?_state=x"
            return response

        registry._write = relative  # type: ignore[method-assign]
        registry.upload_location = None
        assert sign_image(c, REF, digest, key, format="legacy").written
    assert _verified(registry, digest, key, "legacy") == ["legacy"]


def test_registry_that_stores_another_digest_is_refused(registry: FakeRegistry, digest: str) -> None:
    class Lying(FakeRegistry):
        def _claimed(self, found: str) -> str:
            return "sha256:" + "0" * 64

    lying = Lying(negotiation="distribution", writable=True)
    image = lying.put_image(REPO, make_image(user="1000"), tag="v1")
    with client(lying.transport) as c, pytest.raises(RegistryError, match="changed it"):
        sign_image(c, REF, image, _key("p256"), format="legacy")


def test_unreadable_existing_signature_manifest_is_not_overwritten(registry: FakeRegistry, digest: str) -> None:
    registry.put_manifest(REPO, "application/vnd.oci.image.manifest.v1+json", b'{"schemaVersion": 2, "layers": 7}',
                          tag=signature_tag(digest))
    with client(registry.transport) as c, pytest.raises(SignatureWriteError, match="does not overwrite"):
        sign_image(c, REF, digest, _key("p256"), format="legacy")
    registry.put_manifest(REPO, OCI_INDEX, b'{"schemaVersion": 1}', tag=signature_tag(digest, ""))
    with client(registry.transport) as c, pytest.raises(SignatureWriteError, match="does not overwrite"):
        sign_image(c, REF, digest, _key("p256"))


def test_push_asks_the_token_server_for_pull_and_push() -> None:
    registry = FakeRegistry(auth=("bearer", "ci", "pw"), writable=True)
    image = registry.put_image(REPO, make_image(user="1000"), tag="v1")
    config = DockerConfig({"auths": {"registry.test": {"auth": base64.b64encode(b"ci:pw").decode()}}})
    with RegistryClient(transport=registry.transport, docker_config=config, sleep=lambda s: None) as c:
        assert sign_image(c, REF, image, _key("p256"), format="legacy").written
    scopes = {scope for query in registry.token_queries for scope in query.get("scope", [])}
    assert f"repository:{REPO}:pull,push" in scopes


def test_unknown_image_is_not_signed(registry: FakeRegistry) -> None:
    with client(registry.transport) as c, pytest.raises(SignatureWriteError, match="does not have this image"):
        sign_image(c, REF, "sha256:" + "1" * 64, _key("p256"))
