"""Attestations (cosign attest) verified offline in both formats, every refusal with its reason, the
`vulnerabilities` check through imagegate.check / plan_launch, and the cache of verified evidence (request counts).
Attestations are made here (tests/support/cosign.py) and served by the in-process fake registry;
tests/integration/test_cosign_attest_stack.py does the same with the real cosign and the real registry."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

import imagegate
from imagegate import CheckFailed, DockerConfig, Outcome, Policy, RegistryClient
from imagegate._cosign import (
    MAX_ATTESTATION_BYTES,
    PublicKey,
    verify_attestations,
    verify_signatures,
)
from imagegate._diskcache import DiskCache
from imagegate._gate import ImageSource, plan_launch
from imagegate._predicates import GRYPE, SARIF, SIGN, TRIVY, VULN
from imagegate._reference import parse_reference
from tests.support.cosign import (
    ReferrersRegistry,
    Signer,
    attestation_statement,
    dsse_envelope,
    make_attestation_bundle,
    make_bundle,
    push_attestation_bundles,
    push_bundle,
    push_legacy,
    push_legacy_attestations,
)
from tests.support.fakeregistry import FakeRegistry
from tests.support.oci import make_image

HOST = "registry.test"
REPO = "team/app"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "vulns"
ALL = (VULN, TRIVY, GRYPE, SARIF)


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def trivy(when: dt.datetime | None = None, *, clean: bool = False) -> dict[str, Any]:
    """The Trivy golden report (a LOW and a fixable CRITICAL), scanned *when* (default: an hour ago)."""
    doc = fixture("trivy-debian-buster.json")
    # Trivy's golden scanned a tarball of another image and names its config (ImageID); the fake images here have
    # their own, so the tests' report names none (as a scan of an image archive with no config id would).
    del doc["Metadata"]["ImageID"]
    doc["CreatedAt"] = (when or dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)).isoformat()
    if clean:
        doc["Results"][0]["Vulnerabilities"] = doc["Results"][0]["Vulnerabilities"][:1]
    return doc


def grype_report() -> dict[str, Any]:
    """Grype's golden image report, without the source image ids it names (another image's)."""
    doc = fixture("grype-image.json")
    for name in ("imageID", "manifestDigest", "repoDigests"):
        doc["source"]["target"].pop(name, None)
    return doc


@pytest.fixture
def registry() -> FakeRegistry:
    reg = FakeRegistry(negotiation="distribution")
    reg.put_image(REPO, make_image(user="1000"), tag="1.0.0")
    reg.put_image(REPO, make_image(user="2000"), tag="2.0.0")
    return reg


@pytest.fixture
def digests(registry: FakeRegistry) -> tuple[str, str]:
    repo = registry.repositories[REPO]
    return repo.tags["1.0.0"], repo.tags["2.0.0"]


@pytest.fixture
def signer() -> Signer:
    return Signer.ecdsa()


def client_for(transport: Any, cache: DiskCache | None = None) -> RegistryClient:
    return RegistryClient(transport=transport, docker_config=DockerConfig({}), sleep=lambda s: None,
                          disk_cache=cache or False)


def key(signer: Signer, name: str = "ci.pub") -> PublicKey:
    return PublicKey.from_pem(signer.public_pem(), name)


def attest(registry_or_transport: Any, digest: str, keys: list[PublicKey], types: tuple[str, ...] = ALL,
           cache: DiskCache | None = None, **kwargs: Any) -> Any:
    transport = getattr(registry_or_transport, "transport", registry_or_transport)
    ref = parse_reference(f"{HOST}/{REPO}@{digest}")
    return verify_attestations(client_for(transport, cache), ref, digest, keys, types=types, **kwargs)


def legacy(registry: FakeRegistry, digest: str, signer: Signer, predicate_type: str = TRIVY,
           predicate: Any = None, **kwargs: Any) -> None:
    doc = attestation_statement(kwargs.pop("subject", digest), predicate_type, predicate or trivy())
    push_legacy_attestations(registry, REPO, digest, [(dsse_envelope(signer, doc, **kwargs), predicate_type)])


def bundle(registry: FakeRegistry, digest: str, signer: Signer, predicate_type: str = TRIVY,
           predicate: Any = None, **kwargs: Any) -> None:
    subject = kwargs.pop("subject", digest)
    made = make_attestation_bundle(signer, subject, predicate_type, predicate or trivy(), **kwargs)
    push_attestation_bundles(registry, REPO, digest, predicate_type, made)


# -- verification, both formats ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("write", [legacy, bundle], ids=["legacy", "bundle"])
@pytest.mark.parametrize("predicate_type", ALL, ids=["vuln", "trivy", "grype", "sarif"])
def test_each_format_and_type_verifies(registry: FakeRegistry, digests, signer: Signer, write, predicate_type) -> None:  # noqa: ANN001
    one, _ = digests
    predicate = {"scanner": {"result": trivy()}} if predicate_type == VULN else {"any": "predicate"}
    write(registry, one, signer, predicate_type, predicate)
    found = attest(registry, one, [key(signer)], (predicate_type,))
    assert found.verified, found.reason()
    (statement,) = found.statements
    assert statement.predicate_type == predicate_type and statement.key == "ci.pub"
    assert statement.predicate == predicate
    assert statement.format == ("legacy" if write is legacy else "bundle")


def test_bundles_through_the_referrers_api(registry: FakeRegistry, digests, signer: Signer) -> None:
    one, _ = digests
    api = ReferrersRegistry(registry)
    made = make_attestation_bundle(signer, one, TRIVY, trivy())
    push_attestation_bundles(registry, REPO, one, TRIVY, made, fallback=False)
    found = attest(api.transport, one, [key(signer)])
    assert found.verified and api.calls == 1 and found.statements[0].format == "bundle"


def test_signatures_and_attestations_do_not_count_for_each_other(registry: FakeRegistry, digests, signer) -> None:  # noqa: ANN001
    one, _ = digests
    push_bundle(registry, REPO, one, make_bundle(signer, one))  # an image signature: sign/v1
    bundle(registry, one, signer, TRIVY)
    found = attest(registry, one, [key(signer)])
    assert [s.predicate_type for s in found.statements] == [TRIVY]  # the signature bundle was not even fetched
    signed = verify_signatures(client_for(registry.transport), parse_reference(f"{HOST}/{REPO}@{one}"), one,
                               [key(signer)], formats=("bundle",))
    assert signed.verified and len(signed.signatures) == 1


# -- every refusal, with its reason ------------------------------------------------------------------------------------


def test_missing(registry: FakeRegistry, digests, signer: Signer) -> None:  # noqa: ANN001
    one, _ = digests
    found = attest(registry, one, [key(signer)])
    assert not found.verified and found.checks == () and "no attestation of" in found.reason()


@pytest.mark.parametrize("write", [legacy, bundle], ids=["legacy", "bundle"])
def test_wrong_key(registry: FakeRegistry, digests, signer: Signer, write) -> None:  # noqa: ANN001
    one, _ = digests
    write(registry, one, Signer.ecdsa())
    found = attest(registry, one, [key(signer)])
    assert not found.verified and "does not verify with any of the keys" in found.reason()


@pytest.mark.parametrize("write", [legacy, bundle], ids=["legacy", "bundle"])
def test_statement_about_another_digest(registry: FakeRegistry, digests, signer: Signer, write) -> None:  # noqa: ANN001
    one, two = digests
    write(registry, one, signer, subject=two)  # a genuine attestation of image two, attached to image one
    found = attest(registry, one, [key(signer)])
    assert not found.verified and "an attestation for another image" in found.reason() and two in found.reason()


@pytest.mark.parametrize("write", [legacy, bundle], ids=["legacy", "bundle"])
def test_tampered_predicate(registry: FakeRegistry, digests, signer: Signer, write) -> None:  # noqa: ANN001
    one, _ = digests
    honest = json.dumps(attestation_statement(one, TRIVY, trivy())).encode()
    signature = signer.sign(b"DSSEv1 28 application/vnd.in-toto+json %d %s" % (len(honest), honest))
    doc = attestation_statement(one, TRIVY, trivy(clean=True))  # the critical finding removed after signing
    if write is legacy:
        push_legacy_attestations(registry, REPO, one, [(dsse_envelope(signer, doc, signature=signature), TRIVY)])
    else:
        made = make_attestation_bundle(signer, one, TRIVY, None, statement_doc=doc, signature=signature)
        push_attestation_bundles(registry, REPO, one, TRIVY, made)
    found = attest(registry, one, [key(signer)])
    assert not found.verified and "does not verify with any of the keys" in found.reason()
    # the honest payload with that very signature does verify: the refusal is the tampering, not the setup
    registry2 = FakeRegistry(negotiation="distribution")
    registry2.put_image(REPO, make_image(user="1000"), tag="1.0.0")
    push_legacy_attestations(registry2, REPO, one, [(dsse_envelope(signer, payload=honest, signature=signature), TRIVY)])
    assert attest(registry2, one, [key(signer)]).verified


@pytest.mark.parametrize("write", [legacy, bundle], ids=["legacy", "bundle"])
def test_wrong_predicate_type(registry: FakeRegistry, digests, signer: Signer, write) -> None:  # noqa: ANN001
    one, _ = digests
    write(registry, one, signer, GRYPE)
    found = attest(registry, one, [key(signer)], (TRIVY,))
    assert not found.verified and found.statements == ()
    # A statement whose signed predicate type differs from the (unsigned) annotation is refused, not believed.
    doc = attestation_statement(one, "https://example.com/other", {"x": 1})
    push_legacy_attestations(registry, REPO, one, [(dsse_envelope(signer, doc), TRIVY)])
    found = attest(registry, one, [key(signer)], (TRIVY,))
    assert not found.verified and "not one of the predicate types asked for" in found.reason()


def test_hostile_envelopes(registry: FakeRegistry, digests, signer: Signer) -> None:  # noqa: ANN001
    one, _ = digests
    doc = json.dumps(attestation_statement(one, TRIVY, trivy())).encode()
    two_sigs = json.loads(dsse_envelope(signer, payload=doc))
    two_sigs["signatures"] *= 2
    duplicate = dsse_envelope(signer, payload=doc).replace(b'"payloadType"', b'"payloadType": "x", "payloadType"', 1)
    two_subjects = attestation_statement(one, TRIVY, trivy())
    two_subjects["subject"] *= 2
    push_legacy_attestations(registry, REPO, one, [
        (json.dumps(two_sigs).encode(), TRIVY), (duplicate, TRIVY), (dsse_envelope(signer, two_subjects), TRIVY),
    ])
    found = attest(registry, one, [key(signer)])
    problems = [c.problem for c in found.checks]
    assert not found.verified and len(problems) == 3
    assert "holds 2 signatures" in problems[0] and "appears twice" in problems[1] and "2 subjects" in problems[2]


def test_attestation_blobs_are_capped_and_hashed(registry: FakeRegistry, digests, signer: Signer) -> None:  # noqa: ANN001
    one, _ = digests
    legacy(registry, one, signer)
    tag = f"{one.replace(':', '-')}.att"
    manifest = json.loads(registry.repositories[REPO].manifests[registry.repositories[REPO].tags[tag]].data)
    layer = manifest["layers"][0]
    registry.repositories[REPO].blobs[layer["digest"]] = b"x" * layer["size"]  # bytes that do not hash to the digest
    found = attest(registry, one, [key(signer)])
    assert not found.verified and "hash to" in found.reason()
    layer["size"] = MAX_ATTESTATION_BYTES + 1  # a manifest that claims a blob over the cap: not even fetched
    registry.put_manifest(REPO, "application/vnd.oci.image.manifest.v1+json", json.dumps(manifest).encode(), tag=tag)
    registry.reset_requests()
    found = attest(registry, one, [key(signer)])
    assert not found.verified and f"at most {MAX_ATTESTATION_BYTES} are read" in found.reason()
    assert not any("/blobs/" in r.path for r in registry.requests)


def test_required_counts_keys_that_signed_the_same_statement(registry: FakeRegistry, digests) -> None:  # noqa: ANN001
    one, _ = digests
    a, b = Signer.ecdsa(), Signer.ecdsa()
    doc = attestation_statement(one, TRIVY, trivy())
    push_legacy_attestations(registry, REPO, one, [(dsse_envelope(a, doc), TRIVY)])
    keys = [key(a, "a.pub"), key(b, "b.pub")]
    assert not attest(registry, one, keys, required=2).verified
    push_legacy_attestations(registry, REPO, one, [(dsse_envelope(a, doc), TRIVY), (dsse_envelope(b, doc), TRIVY)])
    found = attest(registry, one, keys, required=2)
    assert found.verified and found.counted()[0][1] == ("a.pub", "b.pub")


# -- the cache of verified evidence: request counts --------------------------------------------------------------------


def counted(registry: FakeRegistry, cache: DiskCache, run: Any) -> tuple[Any, int]:
    client = client_for(registry.transport, cache)
    before = client.round_trips
    result = run(client)
    return result, client.round_trips - before


def test_signature_cache_cold_costs_two_round_trips_per_format_and_warm_none(tmp_path: Path, registry: FakeRegistry,
                                                                           digests, signer: Signer) -> None:  # noqa: ANN001
    one, _ = digests
    ref = parse_reference(f"{HOST}/{REPO}@{one}")
    push_legacy(registry, REPO, one, [signer])
    cache = DiskCache(tmp_path / "cache")
    cold, trips = counted(registry, cache, lambda c: verify_signatures(c, ref, one, [key(signer)], formats=("legacy",)))
    assert cold.verified and not cold.cached and trips == 2  # the .sig manifest and its one payload
    warm, trips = counted(registry, cache, lambda c: verify_signatures(c, ref, one, [key(signer)], formats=("legacy",)))
    assert warm.verified and warm.cached and trips == 0
    # another key: the cache does not answer for it (nothing verifies with it), the registry is asked
    other, trips = counted(registry, cache, lambda c: verify_signatures(c, ref, one, [key(Signer.ecdsa())],
                                                                        formats=("legacy",)))
    assert not other.verified and trips == 2


def test_bundle_signature_round_trips(tmp_path: Path, registry: FakeRegistry, digests, signer: Signer) -> None:  # noqa: ANN001
    """A bundle is three dependent reads (an index of referrers, the referrer manifest, its bundle blob): nothing
    earlier names the blob. The first contact with a registry without the referrers API adds its 404; that absence is
    remembered, so the next cold verification costs 3."""
    one, two = digests
    push_bundle(registry, REPO, one, make_bundle(signer, one))
    push_bundle(registry, REPO, two, make_bundle(signer, two))
    cache = DiskCache(tmp_path / "cache")
    for digest, expected in ((one, 4), (two, 3), (two, 0)):
        ref = parse_reference(f"{HOST}/{REPO}@{digest}")
        found, trips = counted(registry, cache, lambda c: verify_signatures(c, ref, digest, [key(signer)],
                                                                            formats=("bundle",)))
        assert found.verified and trips == expected, (digest, trips)
    api = ReferrersRegistry(registry)
    found = verify_signatures(client_for(api.transport), parse_reference(f"{HOST}/{REPO}@{one}"), one, [key(signer)],
                              formats=("bundle",))
    assert found.verified


def test_negative_results_are_not_cached(tmp_path: Path, registry: FakeRegistry, digests, signer: Signer) -> None:  # noqa: ANN001
    one, _ = digests
    ref = parse_reference(f"{HOST}/{REPO}@{one}")
    cache = DiskCache(tmp_path / "cache")
    first, trips = counted(registry, cache, lambda c: verify_signatures(c, ref, one, [key(signer)], formats=("legacy",)))
    assert not first.verified and trips == 1
    push_legacy(registry, REPO, one, [signer])  # signed afterwards: seen at once
    later, trips = counted(registry, cache, lambda c: verify_signatures(c, ref, one, [key(signer)], formats=("legacy",)))
    assert later.verified and not later.cached and trips == 2


def test_tampered_cache_entries_are_verified_again_and_refused(tmp_path: Path, registry: FakeRegistry, digests,
                                                              signer: Signer) -> None:  # noqa: ANN001
    one, two = digests
    legacy(registry, one, signer)
    cache = DiskCache(tmp_path / "cache")
    assert attest(registry, one, [key(signer)], cache=cache).verified
    (entry,) = [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and b"cosign-attestations" in p.read_bytes()[:400]]
    # Someone with our uid rewrites the stored envelope (checksum updated, so only the signature can tell).
    raw = entry.read_bytes()
    header, _, body = raw.partition(b"\n")[2].partition(b"\n")
    items = json.loads(body)
    envelope = json.loads(base64.b64decode(items[0]["data"]))
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"] = trivy(clean=True)
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    items[0]["data"] = base64.b64encode(json.dumps(envelope).encode()).decode()
    stored = json.loads(header)
    cache.put("cosign-attestations", stored["registry"], stored["repository"], stored["key"], json.dumps(items).encode())
    found, trips = counted(registry, cache, lambda c: verify_attestations(
        c, parse_reference(f"{HOST}/{REPO}@{one}"), one, [key(signer)], types=ALL))
    assert found.verified and not found.cached and trips > 0  # the altered entry did not count; the registry did
    assert found.statements[0].predicate["Results"][0]["Vulnerabilities"][-1]["VulnerabilityID"] == "CVE-2019-18224"


def test_attestation_cache_warm_costs_nothing_until_max_age(tmp_path: Path, registry: FakeRegistry, digests,
                                                           signer: Signer) -> None:  # noqa: ANN001
    one, _ = digests
    legacy(registry, one, signer, predicate=trivy(dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=30)))
    cache = DiskCache(tmp_path / "cache")
    policy = Policy.from_mapping({"vulnerabilities": [{"images": ["**"], "keys": [signer.public_pem().decode()],
                                                       "max-severity": "critical", "max-age": "2d"}]})
    ref = f"{HOST}/{REPO}@{one}"
    cold, trips = counted(registry, cache, lambda c: imagegate.check(ref, policy=policy, client=c))
    assert cold.result("vulnerabilities").outcome is Outcome.PASS
    warm, warm_trips = counted(registry, cache, lambda c: imagegate.check(ref, policy=policy, client=c))
    assert warm.result("vulnerabilities").outcome is Outcome.PASS
    # the warm check: the image's manifest and config come from the disk cache too; the attestation costs nothing
    assert warm_trips == 0, warm_trips
    strict = Policy.from_mapping({"vulnerabilities": [{"images": ["**"], "keys": [signer.public_pem().decode()],
                                                       "max-severity": "critical", "max-age": "1d"}]})
    stale, stale_trips = counted(registry, cache, lambda c: imagegate.check(ref, policy=strict, client=c))
    assert stale_trips > 0  # the cached scan is older than max-age: the registry was asked for a newer one
    assert stale.result("vulnerabilities").outcome is Outcome.FAIL and "too old" in stale.result("vulnerabilities").message


def test_a_newer_worse_scan_is_seen_within_the_relook_interval(tmp_path: Path, registry: FakeRegistry, digests,
                                                                signer: Signer, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """The newest scan decides, so cached attestations are reused only for ATTESTATION_RELOOK seconds: a worse scan
    attested after the cache filled (no max-age in the rule) is seen once that has passed."""
    import imagegate._cosign as cosign_module

    one, _ = digests
    now = dt.datetime.now(dt.timezone.utc)
    clean = trivy(now - dt.timedelta(hours=2), clean=True)
    legacy(registry, one, signer, predicate=clean)
    cache = DiskCache(tmp_path / "cache")
    policy = Policy.from_mapping({"vulnerabilities": [{"images": ["**"], "keys": [signer.public_pem().decode()],
                                                       "max-severity": "medium"}]})
    ref = f"{HOST}/{REPO}@{one}"
    first, _ = counted(registry, cache, lambda c: imagegate.check(ref, policy=policy, client=c))
    assert first.result("vulnerabilities").outcome is Outcome.PASS
    statement = attestation_statement(one, TRIVY, trivy(now - dt.timedelta(minutes=1)))
    push_legacy_attestations(registry, REPO, one, [(dsse_envelope(signer, attestation_statement(one, TRIVY, clean)),
                                                    TRIVY), (dsse_envelope(signer, statement), TRIVY)])
    within, trips = counted(registry, cache, lambda c: imagegate.check(ref, policy=policy, client=c))
    assert trips == 0 and within.result("vulnerabilities").outcome is Outcome.PASS  # inside the interval: the cache
    real_time = cosign_module.time.time
    monkeypatch.setattr(cosign_module.time, "time", lambda: real_time() + cosign_module.ATTESTATION_RELOOK + 1)
    later, trips = counted(registry, cache, lambda c: imagegate.check(ref, policy=policy, client=c))
    assert trips > 0
    assert later.result("vulnerabilities").outcome is Outcome.FAIL, later.result("vulnerabilities").message


def _scan_referrers(registry: FakeRegistry, digest: str, signer: Signer, scans: list[tuple[dt.datetime, bool]],
                    *, created: bool = True) -> None:
    """One bundle referrer per (scan time, clean?) and an image signature, listed as cosign lists them (sorted by
    digest, no annotations in the index): the order says nothing about which scan is newest."""
    from tests.support.cosign import cosign_fallback_index, put_bundle_referrer

    entries = [put_bundle_referrer(registry, REPO, digest, make_bundle(signer, digest))]
    for when, clean in scans:
        made = make_attestation_bundle(signer, digest, TRIVY, trivy(when, clean=clean))
        entries.append(put_bundle_referrer(registry, REPO, digest, made, predicate_type=TRIVY,
                                           created=when.strftime("%Y-%m-%dT%H:%M:%SZ") if created else None))
    cosign_fallback_index(registry, REPO, digest, entries)


def test_the_newest_scan_decides_among_more_bundles_than_are_read(tmp_path: Path, registry: FakeRegistry, digests,
                                                                 signer: Signer) -> None:  # noqa: ANN001
    """40 clean scans from three days ago and today's scan with a CRITICAL: whatever the index order, the newest
    (by each referrer manifest's created time) is among those read, and it refuses the image."""
    from imagegate._cosign import MAX_CANDIDATES

    one, _ = digests
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    old = [(now - dt.timedelta(days=3, minutes=i), True) for i in range(MAX_CANDIDATES + 8)]
    _scan_referrers(registry, one, signer, old + [(now - dt.timedelta(minutes=5), False)])
    report = check(registry, f"{HOST}/{REPO}:1.0.0", policy_for(tmp_path, signer))
    result = report.result("vulnerabilities")
    assert result.outcome is Outcome.FAIL and "CVE-2019-18224" in result.message, result.message
    # the image signature among them is still found, and no attestation blob is fetched to find it
    registry.reset_requests()
    found = verify_signatures(client_for(registry.transport), parse_reference(f"{HOST}/{REPO}@{one}"), one,
                              [key(signer)], formats=("bundle",))
    assert found.verified and all(c.verified for c in found.signatures)
    assert registry.count("GET", "blobs") == 1  # the signature's bundle only


def test_too_many_undated_attestations_fail_closed(tmp_path: Path, registry: FakeRegistry, digests,
                                                   signer: Signer) -> None:  # noqa: ANN001
    from imagegate._cosign import MAX_CANDIDATES

    one, _ = digests
    now = dt.datetime.now(dt.timezone.utc)
    _scan_referrers(registry, one, signer, [(now - dt.timedelta(hours=i + 1), True) for i in range(MAX_CANDIDATES + 1)],
                    created=False)
    result = check(registry, f"{HOST}/{REPO}:1.0.0", policy_for(tmp_path, signer)).result("vulnerabilities")
    assert result.outcome is Outcome.FAIL and "the newest is unknown" in result.message, result.message


def test_more_referrers_than_are_read_fail_closed(tmp_path: Path, registry: FakeRegistry, digests,
                                                  signer: Signer, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    import imagegate._cosign as cosign_module

    monkeypatch.setattr(cosign_module, "MAX_REFERRERS", 6)  # 128 in earnest; the rule is the same
    one, _ = digests
    now = dt.datetime.now(dt.timezone.utc)
    _scan_referrers(registry, one, signer, [(now - dt.timedelta(hours=i + 1), True) for i in range(6)])
    result = check(registry, f"{HOST}/{REPO}:1.0.0", policy_for(tmp_path, signer)).result("vulnerabilities")
    assert result.outcome is Outcome.FAIL and "lists 7 referrers" in result.message, result.message


def test_cache_off_by_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEGATE_REGISTRY_CACHE", "off")
    assert RegistryClient().disk_cache is None  # and without a disk cache nothing is stored (verify_* read none)


# -- the `vulnerabilities` check in the gate ---------------------------------------------------------------------------


def policy_for(tmp_path: Path, signer: Signer, extra: str = "", checks: str = "") -> Policy:
    (tmp_path / "ci.pub").write_bytes(signer.public_pem())
    file = tmp_path / "imagegate.toml"
    file.write_text(f'{checks}[[vulnerabilities]]\nimages = ["registry.test/team/**"]\nkeys = ["ci.pub"]\n'
                    f'max-severity = "high"\n{extra}')
    return Policy.load(file)


def check(registry: FakeRegistry, ref: str, policy: Policy, **kwargs: Any) -> imagegate.Report:
    return imagegate.check(ref, policy=policy, client=client_for(registry.transport), **kwargs)


def test_check_refuses_a_critical_finding_and_lists_it(tmp_path: Path, registry: FakeRegistry, digests,
                                                       signer: Signer) -> None:  # noqa: ANN001
    one, _ = digests
    bundle(registry, one, signer, VULN, {"scanner": {"uri": "pkg:github/aquasecurity/trivy@0.74.0", "version": "0.74.0",
                                                     "result": trivy()},
                                         "metadata": {"scanFinishedOn": dt.datetime.now(dt.timezone.utc).isoformat()}})
    report = check(registry, f"{HOST}/{REPO}:1.0.0", policy_for(tmp_path, signer))
    result = report.result("vulnerabilities")
    assert not report.passed and result.outcome is Outcome.FAIL
    assert "CVE-2019-18224 (critical, libidn2-0)" in result.message and result.fix and "waivers" in result.fix
    data = json.loads(report.to_json())
    details = next(c for c in data["checks"] if c["check"] == "vulnerabilities")["details"]
    assert details["counts"] == {"low": 1, "critical": 1} and details["findings"][0]["id"] == "CVE-2019-18224"
    assert details["attestation"]["predicate_type"] == VULN and details["attestation"]["format"] == "vuln+trivy"
    assert "- CVE-2019-18224 critical in libidn2-0 2.0.5-1, fixed in 2.0.5-1+deb10u1" in report.render_text()


def test_a_signed_report_about_another_image_does_not_count(tmp_path: Path, registry: FakeRegistry, digests,
                                                            signer: Signer) -> None:  # noqa: ANN001
    """The statement's subject is this digest, but the report inside names another image's config (Trivy's ImageID)
    or manifest (Grype's manifestDigest): refused, whoever signed it. Naming this image's own config passes."""
    one, two = digests
    foreign = trivy(clean=True)
    foreign["Metadata"]["ImageID"] = "sha256:" + "c2" * 32
    legacy(registry, one, signer, TRIVY, foreign)
    report = check(registry, f"{HOST}/{REPO}:1.0.0", policy_for(tmp_path, signer))
    result = report.result("vulnerabilities")
    assert result.outcome is Outcome.FAIL and "a scan of another image (sha256:" + "c2" * 32 in result.message
    grype = grype_report()
    grype["source"]["target"]["manifestDigest"] = one  # digest one's scan, attested for digest two
    legacy(registry, two, signer, GRYPE, grype)
    assert check(registry, f"{HOST}/{REPO}:2.0.0", policy_for(tmp_path, signer)).result(
        "vulnerabilities").outcome is Outcome.FAIL
    # the same report naming the image's own config and manifest: judged (and clean, so it passes)
    config = json.loads(registry.repositories[REPO].manifests[one].data)["config"]["digest"]
    own = trivy(clean=True)
    own["Metadata"]["ImageID"] = config
    own["Metadata"]["RepoDigests"] = [f"{HOST}/{REPO}@{one}"]
    own["CreatedAt"] = dt.datetime.now(dt.timezone.utc).isoformat()
    legacy(registry, one, signer, TRIVY, own)
    assert check(registry, f"{HOST}/{REPO}:1.0.0", policy_for(tmp_path, signer)).passed


def test_check_passes_a_clean_scan_and_signature_and_vulnerabilities_both_run(tmp_path: Path, registry: FakeRegistry,
                                                                             digests, signer: Signer) -> None:  # noqa: ANN001
    one, _ = digests
    legacy(registry, one, signer, TRIVY, trivy(clean=True))
    push_legacy(registry, REPO, one, [signer])
    (tmp_path / "ci.pub").write_bytes(signer.public_pem())
    policy = policy_for(tmp_path, signer, '[[signatures]]\nimages = ["**"]\nkeys = ["ci.pub"]\n')
    report = check(registry, f"{HOST}/{REPO}:1.0.0", policy)
    assert report.passed, report.render_text()
    assert {r.check: r.outcome for r in report.results}["signature"] is Outcome.PASS
    assert "no findings above max-severity high (1 counted of 1" in report.result("vulnerabilities").message


def test_missing_attestation_is_refused_under_enforce_and_warns_under_warn(tmp_path: Path, registry: FakeRegistry,
                                                                          digests, signer: Signer) -> None:  # noqa: ANN001
    policy = policy_for(tmp_path, signer)
    report = check(registry, f"{HOST}/{REPO}:1.0.0", policy)
    result = report.result("vulnerabilities")
    assert result.outcome is Outcome.FAIL and "no verified vulnerability attestation" in result.message
    assert result.fix and "cosign attest --key cosign.key --type vuln" in result.fix
    warned = check(registry, f"{HOST}/{REPO}:1.0.0", policy.with_modes(vulnerabilities="warn"))
    assert warned.passed and warned.result("vulnerabilities").outcome is Outcome.WARN
    off = check(registry, f"{HOST}/{REPO}:1.0.0", policy.with_modes(vulnerabilities="off"))
    assert off.result("vulnerabilities").outcome is Outcome.SKIPPED


def test_check_level_waiver_and_no_rule_and_offline(tmp_path: Path, registry: FakeRegistry, signer: Signer) -> None:
    extra = ('[[waivers]]\nreference = "registry.test/team/*"\nchecks = ["vulnerabilities"]\n'
             'reason = "scanner rollout; OPS-3"\nexpires = 2030-01-01\n')
    report = check(registry, f"{HOST}/{REPO}:1.0.0", policy_for(tmp_path, signer, extra), today=dt.date(2029, 1, 1))
    assert report.passed and report.result("vulnerabilities").outcome is Outcome.WAIVED
    registry.put_image("other/app", make_image(user="1000"), tag="1.0.0")
    other = check(registry, f"{HOST}/other/app:1.0.0", policy_for(tmp_path, signer))
    assert other.passed and "no [[vulnerabilities]] rule covers" in other.result("vulnerabilities").message
    offline = imagegate.check_offline(f"{HOST}/{REPO}:1.0.0", policy=policy_for(tmp_path, signer))
    assert offline.result("vulnerabilities").outcome is Outcome.SKIPPED
    assert "vulnerabilities" not in {r.check for r in imagegate.check(f"{HOST}/{REPO}:1.0.0",
                                                                      client=client_for(registry.transport)).results}


def test_plan_launch_refuses_and_admits(tmp_path: Path, registry: FakeRegistry, digests, signer: Signer) -> None:  # noqa: ANN001
    one, two = digests
    legacy(registry, two, signer, GRYPE, grype_report())  # a critical without a fix
    policy = policy_for(tmp_path, signer, 'only-fixable = true\n')
    with pytest.raises(CheckFailed) as caught:
        plan_launch(ImageSource(image=f"{HOST}/{REPO}:1.0.0"), policy=policy, client=client_for(registry.transport))
    assert caught.value.report.result("vulnerabilities").outcome is Outcome.FAIL
    plan = plan_launch(ImageSource(image=f"{HOST}/{REPO}:2.0.0"), policy=policy, client=client_for(registry.transport))
    assert plan.launch == f"{HOST}/{REPO}@{two}"


def test_the_rule_keys_decide_not_any_key(tmp_path: Path, registry: FakeRegistry, digests, signer: Signer) -> None:  # noqa: ANN001
    one, _ = digests
    legacy(registry, one, Signer.ecdsa(), TRIVY, trivy(clean=True))  # a clean scan, signed by someone else
    report = check(registry, f"{HOST}/{REPO}:1.0.0", policy_for(tmp_path, signer))
    result = report.result("vulnerabilities")
    assert result.outcome is Outcome.FAIL and "no verified vulnerability attestation" in result.message
    assert "does not verify with any of the keys" in result.message


def test_sign_predicate_is_not_a_vulnerability_type() -> None:
    assert SIGN not in ALL
