"""cosign private keys: the files the real cosign v3.1.3 wrote (tests/fixtures/cosign-keys), read and used to sign;
passwords; refusals; keys imagegate makes read back (and by cosign: tests/integration/test_cosign_sign.py)."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from imagegate._cosign import PublicKey
from imagegate._cosign_keys import (
    KeyPairExists,
    PasswordUnavailable,
    PrivateKeyError,
    WrongPassword,
    encrypt_private_key,
    load_private_key,
    read_password,
    write_key_pair,
)

KEYS = Path(__file__).resolve().parents[1] / "fixtures" / "cosign-keys"
PASSWORD = b"imagegate-test"


@pytest.mark.parametrize(("name", "password", "algorithm"), [
    ("p256", PASSWORD, "ECDSA P-256"), ("p256-nopass", b"", "ECDSA P-256"), ("p384", PASSWORD, "ECDSA P-384"),
    ("rsa", PASSWORD, "RSA 3072"), ("ed", PASSWORD, "Ed25519"),
])
def test_keys_cosign_wrote_decrypt_and_sign_for_their_public_key(name: str, password: bytes, algorithm: str) -> None:
    key = load_private_key(KEYS / f"{name}.key", password)
    public = PublicKey.load(KEYS / f"{name}.pub")
    assert key.algorithm == algorithm
    assert key.public.hint == public.hint  # the same key cosign wrote cosign.pub for
    message = b"DSSEv1 28 application/vnd.in-toto+json 2 {}"
    assert public.verify(key.sign(message), message)
    assert not public.verify(key.sign(message), message + b" ")


def test_password_comes_from_cosign_password_even_when_empty() -> None:
    assert load_private_key(KEYS / "p256-nopass.key", environ={"COSIGN_PASSWORD": ""}).algorithm == "ECDSA P-256"
    assert load_private_key(KEYS / "p256.key", environ={"COSIGN_PASSWORD": "imagegate-test"}).algorithm == "ECDSA P-256"


def test_wrong_password_is_a_typed_error_naming_the_file() -> None:
    with pytest.raises(WrongPassword) as caught:
        load_private_key(KEYS / "p256.key", b"not-it")
    assert caught.value.source == str(KEYS / "p256.key") and "COSIGN_PASSWORD" in str(caught.value)


def test_no_password_and_no_terminal_says_to_set_it() -> None:
    with pytest.raises(PasswordUnavailable, match="COSIGN_PASSWORD"):
        load_private_key(KEYS / "p256.key", environ={}, interactive=False)


def test_terminal_prompt_and_confirmation() -> None:
    answers = iter(["pw", "pw"])
    assert read_password("k", confirm=True, environ={}, interactive=True, prompt=lambda _: next(answers)) == b"pw"
    answers = iter(["pw", "other"])
    with pytest.raises(PrivateKeyError, match="differ"):
        read_password("k", confirm=True, environ={}, interactive=True, prompt=lambda _: next(answers))


def test_older_cosign_pem_type_and_plain_keys_are_read(tmp_path: Path) -> None:
    old = tmp_path / "old.key"
    old.write_text((KEYS / "p256.key").read_text().replace("SIGSTORE", "COSIGN"))
    assert load_private_key(old, PASSWORD).public.hint == PublicKey.load(KEYS / "p256.pub").hint
    plain = load_private_key(KEYS / "p521-plain-sec1.pem")  # no password asked for an unencrypted key
    assert plain.algorithm == "ECDSA P-521"


def _tampered(tmp_path: Path, change: dict) -> Path:
    text = (KEYS / "p256.key").read_text().splitlines()
    doc = json.loads(base64.b64decode("".join(text[1:-1])))
    for path, value in change.items():
        target = doc
        *parents, last = path.split(".")
        for part in parents:
            target = target[part]
        target[last] = value
    body = base64.b64encode(json.dumps(doc).encode()).decode()
    out = tmp_path / "tampered.key"
    out.write_text(f"{text[0]}\n{body}\n{text[-1]}\n")
    return out


@pytest.mark.parametrize(("change", "reason"), [
    ({"kdf.params.N": 1 << 22}, "scrypt parameters"),  # a file cannot make us spend 4 GiB
    ({"kdf.name": "pbkdf2"}, "key derivation"),
    ({"cipher.name": "aes-gcm"}, "cipher"),
    ({"cipher.nonce": "AAAA"}, "nonce"),
    ({"ciphertext": "not base64!"}, "base64"),
])
def test_altered_key_files_are_refused_before_any_work(tmp_path: Path, change: dict, reason: str) -> None:
    with pytest.raises(PrivateKeyError, match=reason):
        load_private_key(_tampered(tmp_path, change), PASSWORD)


def test_altered_ciphertext_reads_as_wrong_password(tmp_path: Path) -> None:
    text = (KEYS / "p256.key").read_text().splitlines()
    doc = json.loads(base64.b64decode("".join(text[1:-1])))
    sealed = bytearray(base64.b64decode(doc["ciphertext"]))
    sealed[-1] ^= 1
    with pytest.raises(WrongPassword):
        load_private_key(_tampered(tmp_path, {"ciphertext": base64.b64encode(bytes(sealed)).decode()}), PASSWORD)


@pytest.mark.parametrize(("content", "reason"), [
    (b"", "not PEM"),
    ((KEYS / "p256.pub").read_bytes(), "public key"),
    (b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n", "import-key-pair"),
    (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "CERTIFICATE"),
])
def test_files_that_are_not_cosign_private_keys(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "k"
    path.write_bytes(content)
    with pytest.raises(PrivateKeyError, match=reason):
        load_private_key(path, b"")


def test_small_rsa_keys_are_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    path = tmp_path / "small.key"
    path.write_bytes(encrypt_private_key(rsa.generate_private_key(public_exponent=65537, key_size=1024), b"",
                                         params=(32768, 8, 1)))
    with pytest.raises(PrivateKeyError, match="1024-bit"):
        load_private_key(path, b"")


def test_generated_pair_round_trips_and_is_never_overwritten(tmp_path: Path) -> None:
    private, public = write_key_pair(tmp_path / "cosign", b"s3cret")
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    key = load_private_key(private, b"s3cret")
    assert key.public.hint == PublicKey.load(public).hint and key.algorithm == "ECDSA P-256"
    before = private.read_bytes()
    with pytest.raises(KeyPairExists):
        write_key_pair(tmp_path / "cosign", b"other")
    assert private.read_bytes() == before
    (tmp_path / "half.pub").write_text("mine")
    with pytest.raises(KeyPairExists):
        write_key_pair(tmp_path / "half", b"")
    assert not (tmp_path / "half.key").exists() and (tmp_path / "half.pub").read_text() == "mine"
