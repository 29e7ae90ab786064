"""`imagegate verify` against the real local registry (distribution 2.8: no referrers API, so cosign v3 uses the
fallback tag) with signatures made by the REAL cosign v3.1.3, built from the Go module proxy
(scripts/localstack/cosign_tools.py), in both formats; and the real `cosign verify` as the oracle on every case.

Needs the local stack (scripts/stack.py up) and cosign (built on first use, a few minutes; ``IMAGEGATE_COSIGN``
points at one you built). Under CI=true a missing stack or a cosign that cannot be built is a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import ROOT, Stack, _unavailable, build_and_push, run_cli, unique
from tests.support.oci import OCI_INDEX, OCI_MANIFEST, Blob, make_image
from tests.support.push import open_client, push_image, push_manifest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def cosign() -> Path:
    """The real cosign v3: $IMAGEGATE_COSIGN, else the cached build (built now if missing)."""
    given = os.environ.get("IMAGEGATE_COSIGN")
    if given:
        if not os.access(given, os.X_OK):
            _unavailable(f"cosign at IMAGEGATE_COSIGN={given}")
        return Path(given)
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from localstack.cosign_tools import ensure_cosign
        from localstack.host import StackError
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    try:
        return ensure_cosign()
    except StackError as exc:
        _unavailable(f"cosign v3.1.3 (building it from the Go module proxy failed: {exc}; "
                     "PYTHONPATH=scripts python -m localstack.cosign_tools builds it)")
        raise  # pragma: no cover - _unavailable fails or skips


@pytest.fixture(scope="module")
def keys(cosign: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two real cosign key pairs: ``good`` (signs) and ``other`` (never signed anything)."""
    out = {}
    for name in ("good", "other"):
        directory = tmp_path_factory.mktemp(f"cosign-{name}")
        _cosign(cosign, directory, "generate-key-pair")
        out[name] = directory / "cosign.pub"
        out[f"{name}.key"] = directory / "cosign.key"
    return out


def _env(home: Path) -> dict[str, str]:
    # No password on the test keys; a private HOME and docker config: nothing from this machine's ~/.sigstore.
    return {**os.environ, "COSIGN_PASSWORD": "", "HOME": str(home), "DOCKER_CONFIG": str(home / ".docker"),
            "SIGSTORE_NO_CACHE": "1"}


def _cosign(cosign: Path, cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(cosign), *args], cwd=cwd, env=_env(cwd), capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"cosign {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return proc


def _sign(cosign: Path, key: Path, ref: str, *, legacy: bool) -> None:
    args = ["sign", "--key", str(key), "--use-signing-config=false", "--tlog-upload=false", "--yes"]
    if legacy:
        args.append("--new-bundle-format=false")
    _cosign(cosign, key.parent, *args, ref)


def _cosign_verifies(cosign: Path, pub: Path, ref: str) -> bool:
    return _cosign(cosign, pub.parent, "verify", "--key", str(pub), "--insecure-ignore-tlog=true", ref,
                   check=False).returncode == 0


def _imagegate(pub: Path, ref: str, *extra: str) -> tuple[int, dict]:
    proc = run_cli("verify", ref, "--key", str(pub), "--json", *extra)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def _push(stack: Stack, user: str) -> tuple[str, str]:
    repo = f"cosign/{unique('img')}"
    digest = push_image(stack.registry_url, repo, make_image(user=user), tag="v1")
    return repo, digest


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "bundle"])
def test_what_cosign_signs_imagegate_verifies(stack: Stack, cosign: Path, keys: dict[str, Path], legacy: bool) -> None:
    repo, digest = _push(stack, "1000")
    ref = f"{stack.registry}/{repo}@{digest}"
    _sign(cosign, keys["good.key"], ref, legacy=legacy)

    code, out = _imagegate(keys["good"], ref)
    assert code == 0, out["reason"]
    assert out["digest"] == digest and out["signed_by"] == [str(keys["good"])]
    assert [s["format"] for s in out["signatures"] if s["key"]] == ["legacy" if legacy else "bundle"]
    assert _cosign_verifies(cosign, keys["good"], ref)

    # A tag is resolved to the digest it names; the text output says verified.
    proc = run_cli("verify", f"{stack.registry}/{repo}:v1", "--key", str(keys["other"]), "--key", str(keys["good"]))
    assert proc.returncode == 0 and proc.stdout.startswith("verified:"), proc.stdout + proc.stderr

    # A key that never signed: imagegate and cosign both refuse.
    code, out = _imagegate(keys["other"], ref)
    assert code == 1 and "does not verify with any of the keys" in out["reason"]
    assert not _cosign_verifies(cosign, keys["other"], ref)
    # Two keys required, one signed.
    code, out = _imagegate(keys["good"], ref, "--key", str(keys["other"]), "--required", "2")
    assert code == 1 and out["signed_by"] == [str(keys["good"])]


def test_unsigned_image_is_not_verified(stack: Stack, cosign: Path, keys: dict[str, Path]) -> None:
    repo, digest = _push(stack, "1000")
    ref = f"{stack.registry}/{repo}@{digest}"
    code, out = _imagegate(keys["good"], ref)
    assert code == 1 and out["signatures"] == [] and "no cosign signature found" in out["reason"]
    assert not _cosign_verifies(cosign, keys["good"], ref)


def _copy_manifest(stack: Stack, repo: str, source_tag: str, target_tag: str, media_type: str) -> None:
    with open_client(stack.registry_url) as client:
        body = client.get(f"/v2/{repo}/manifests/{source_tag}", headers={"Accept": media_type})
        body.raise_for_status()
    push_manifest(stack.registry_url, repo, Blob(media_type, body.content), target_tag)


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "bundle"])
def test_signature_of_another_image_copied_onto_this_one_is_refused(
        stack: Stack, cosign: Path, keys: dict[str, Path], legacy: bool) -> None:
    repo = f"cosign/{unique('copy')}"
    this = push_image(stack.registry_url, repo, make_image(user="1000"), tag="this")
    other = push_image(stack.registry_url, repo, make_image(user="2000"), tag="other")
    _sign(cosign, keys["good.key"], f"{stack.registry}/{repo}@{other}", legacy=legacy)
    # The other image's genuine signature (the .sig manifest, or the fallback index of its referrers) is put
    # where this image's would be: someone with push access replaying a signature.
    suffix, media_type = (".sig", OCI_MANIFEST) if legacy else ("", OCI_INDEX)
    _copy_manifest(stack, repo, other.replace(":", "-") + suffix, this.replace(":", "-") + suffix, media_type)

    ref = f"{stack.registry}/{repo}@{this}"
    code, out = _imagegate(keys["good"], ref)
    assert code == 1, out
    expected = f"for '{other}', not {this}" if legacy else f"subject is '{other}'"
    assert expected in out["reason"]
    assert not _cosign_verifies(cosign, keys["good"], ref)  # the oracle agrees
    assert _cosign_verifies(cosign, keys["good"], f"{stack.registry}/{repo}@{other}")  # and the original still verifies


@pytest.mark.parametrize("kind", ["p384", "p521", "rsa3072"])
def test_imported_keys_of_other_types(stack: Stack, cosign: Path, tmp_path: Path, kind: str) -> None:
    """cosign v3 signs with P-384/P-521 over SHA-384/SHA-512 (`cosign verify` needs --signature-digest-algorithm
    then); RSA with PKCS #1 v1.5 over SHA-256. imagegate verifies both formats for each."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    private = {"p384": lambda: ec.generate_private_key(ec.SECP384R1()),
               "p521": lambda: ec.generate_private_key(ec.SECP521R1()),
               "rsa3072": lambda: rsa.generate_private_key(public_exponent=65537, key_size=3072)}[kind]()
    (tmp_path / "k.pem").write_bytes(private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    _cosign(cosign, tmp_path, "import-key-pair", "--key", "k.pem", "--output-key-prefix", "imported")
    key, pub = tmp_path / "imported.key", tmp_path / "imported.pub"
    for legacy in (True, False):
        repo, digest = _push(stack, "1000")
        ref = f"{stack.registry}/{repo}@{digest}"
        _sign(cosign, key, ref, legacy=legacy)
        code, out = _imagegate(pub, ref)
        assert code == 0, out["reason"]
        algorithm = {"p384": "sha384", "p521": "sha512", "rsa3072": "sha256"}[kind]
        assert _cosign(cosign, tmp_path, "verify", "--key", str(pub), "--insecure-ignore-tlog=true",
                       "--signature-digest-algorithm", algorithm, ref, check=False).returncode == 0


def test_bad_key_file_is_an_error(stack: Stack, tmp_path: Path, keys: dict[str, Path]) -> None:
    repo, digest = _push(stack, "1000")
    proc = run_cli("verify", f"{stack.registry}/{repo}@{digest}", "--key", str(keys["good.key"]))
    assert proc.returncode == 2 and "private key" in proc.stderr


# -- the `signature` check in the gate: `imagegate check` and one door (`imagegate run`) --------------------------------


@pytest.fixture(scope="module")
def gate_images(stack: Stack, docker_client: Any, cosign: Path, keys: dict[str, Path]) -> dict[str, str]:
    """Two runnable images in one repository, one signed by the ``good`` key (bundle format), one not."""
    repo = f"cosign/{unique('gate')}"
    dockerfile = 'FROM {base}\nUSER 10001\nCMD ["echo", "signed-job-ran"]\n'
    signed = build_and_push(docker_client, stack, dockerfile, repo, "1.0.0")
    unsigned = build_and_push(docker_client, stack, dockerfile + "LABEL unsigned=1\n", repo, "1.0.1")
    _sign(cosign, keys["good.key"], f"{stack.registry}/{repo}@{signed}", legacy=False)
    base = f"{stack.registry}/{repo}"
    return {"repo": repo, "signed": f"{base}:1.0.0", "signed_digest": signed, "unsigned": f"{base}:1.0.1"}


def _policy_dir(tmp_path: Path, stack: Stack, pub: Path) -> Path:
    (tmp_path / "cosign.pub").write_bytes(pub.read_bytes())
    (tmp_path / "imagegate.toml").write_text(
        f'[[signatures]]\nimages = ["{stack.registry}/cosign/**"]\nkeys = ["cosign.pub"]\n')
    return tmp_path


def test_check_enforces_signatures_from_the_policy(stack: Stack, keys: dict[str, Path], gate_images: dict[str, str],
                                                   tmp_path: Path) -> None:
    policy = _policy_dir(tmp_path, stack, keys["good"]) / "imagegate.toml"
    signed = run_cli("check", gate_images["signed"], "--policy", str(policy), "--json")
    assert signed.returncode == 0, signed.stdout + signed.stderr
    outcome = {c["check"]: c for c in json.loads(signed.stdout)["checks"]}["signature"]
    assert outcome["outcome"] == "pass" and "signed by 1 of 1 key(s)" in outcome["message"]
    unsigned = run_cli("check", gate_images["unsigned"], "--policy", str(policy), "--json")
    assert unsigned.returncode == 1, unsigned.stdout + unsigned.stderr
    outcome = {c["check"]: c for c in json.loads(unsigned.stdout)["checks"]}["signature"]
    assert outcome["outcome"] == "fail" and "no cosign signature found" in outcome["message"]
    assert "cosign sign --key" in outcome["fix"]


def test_run_refuses_an_unsigned_image_and_creates_nothing(stack: Stack, docker_client: Any, keys: dict[str, Path],
                                                          gate_images: dict[str, str], tmp_path: Path) -> None:
    from tests.integration.test_run_stack import created_from, now

    cwd = _policy_dir(tmp_path, stack, keys["good"])
    since = now()
    refused = run_cli("run", "--json", gate_images["unsigned"], "--", "echo", "must-not-run", cwd=cwd)
    assert refused.returncode == 1, refused.stderr
    record = json.loads(refused.stdout)
    assert record["passed"] is False and record["container"] is None
    assert [c["check"] for c in record["report"]["checks"] if c["outcome"] == "fail"] == ["signature"]
    assert "must-not-run" not in refused.stdout + refused.stderr and "nothing was created" in refused.stderr
    assert created_from(docker_client, gate_images["repo"], since) == []

    ran = run_cli("run", "-q", gate_images["signed"], cwd=cwd)
    assert ran.returncode == 0 and ran.stdout == "signed-job-ran\n", ran.stderr
