"""cosign private keys: read (to sign) and made (``imagegate generate-key-pair``), as cosign reads and makes them.

cosign's private key file (``cosign generate-key-pair``'s ``cosign.key``) is a PEM block ``ENCRYPTED SIGSTORE PRIVATE
KEY`` (``ENCRYPTED COSIGN PRIVATE KEY`` before cosign 2.x) whose bytes are the JSON of go-securesystemslib's
``encrypted`` package::

    {"kdf": {"name": "scrypt", "params": {"N": 65536, "r": 8, "p": 1}, "salt": <base64>},
     "cipher": {"name": "nacl/secretbox", "nonce": <base64, 24 bytes>},
     "ciphertext": <base64: NaCl secretbox of the PKCS #8 DER private key>}

The key is scrypt(password, salt) (32 bytes); only the three parameter sets go-securesystemslib accepts are accepted
(N 2^15, 2^16, 2^17; r 8; p 1), so a key file cannot make us spend unbounded memory. ``cryptography`` has scrypt but
no XSalsa20-Poly1305, so the secretbox is PyNaCl's (libsodium), the same construction as Go's
``x/crypto/nacl/secretbox``. Also read, unencrypted, as ``cosign import-key-pair`` reads them: ``PRIVATE KEY``
(PKCS #8), ``EC PRIVATE KEY`` (SEC 1) and ``RSA PRIVATE KEY`` (PKCS #1).

The password comes from ``$COSIGN_PASSWORD`` (set and empty is an empty password, as cosign reads it); unset, it is
asked on the terminal; unset with no terminal, it is an error that says to set it.

Signing uses what both ``cosign verify --key`` (its default ``--signature-digest-algorithm sha256``) and
:mod:`imagegate._cosign` accept: ECDSA over SHA-256 for every curve (cosign v3 itself signs P-384 / P-521 keys over
SHA-384 / SHA-512, which its own ``verify`` refuses without ``--signature-digest-algorithm``), ASN.1 DER signatures;
RSA PKCS #1 v1.5 over SHA-256; pure Ed25519 (cosign signs Ed25519 keys with Ed25519ph, which ``cosign verify --key``
does not verify: checked against cosign v3.1.3).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from imagegate._cosign import MIN_RSA_BITS, InvalidKey, PublicKey
from imagegate._errors import ImagegateError
from imagegate._json import DocumentError, decode, struct

__all__ = [
    "KeyPairExists", "PasswordUnavailable", "PrivateKey", "PrivateKeyError", "WrongPassword", "encrypt_private_key",
    "generate_key_pair", "load_private_key", "read_password", "write_key_pair",
]

SIGSTORE_PEM = "ENCRYPTED SIGSTORE PRIVATE KEY"
COSIGN_PEM = "ENCRYPTED COSIGN PRIVATE KEY"
PLAIN_PEMS = ("PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY")
PASSWORD_VARIABLE = "COSIGN_PASSWORD"
MAX_KEY_FILE = 64 << 10
SALT_BYTES = 32
NONCE_BYTES = 24
BOX_KEY_BYTES = 32
# go-securesystemslib's accepted scrypt parameters (legacy, standard, OWASP); new keys use standard, as cosign does.
SCRYPT_PARAMS = ((32768, 8, 1), (65536, 8, 1), (131072, 8, 1))
STANDARD_SCRYPT = SCRYPT_PARAMS[1]


class PrivateKeyError(ImagegateError, ValueError):
    """A private key that cannot be used: unreadable, not a cosign key, an unsupported algorithm."""

    _fields = ("source", "reason")

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"private key {source}: {reason}")


class WrongPassword(PrivateKeyError):
    """The password does not decrypt the key (or the key file was altered: the two cannot be told apart)."""

    def __init__(self, source: str) -> None:
        super().__init__(source, "the password does not decrypt it (wrong $COSIGN_PASSWORD, or the file was altered); "
                                 "set COSIGN_PASSWORD to the password given to generate-key-pair")


class PasswordUnavailable(PrivateKeyError):
    """No password: ``$COSIGN_PASSWORD`` is unset and there is no terminal to ask on."""

    def __init__(self, source: str) -> None:
        super().__init__(source, "needs its password, and $COSIGN_PASSWORD is not set and there is no terminal to "
                                 "ask on; set COSIGN_PASSWORD (COSIGN_PASSWORD= for a key without a password)")


class KeyPairExists(ImagegateError, FileExistsError):
    """``generate-key-pair`` refuses to overwrite a key file."""

    _fields = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"{path} already exists; imagegate never overwrites a key: move it away or pass "
                         "--output-key-prefix NAME")


# -- the password ------------------------------------------------------------------------------------------------------


def read_password(source: str, *, confirm: bool = False, environ: Mapping[str, str] | None = None,
                  prompt: Callable[[str], str] | None = None, interactive: bool | None = None) -> bytes:
    """The password for *source*: ``$COSIGN_PASSWORD`` when set (empty is allowed), else asked on the terminal
    (twice with *confirm*), else :class:`PasswordUnavailable`."""
    env = os.environ if environ is None else environ
    if PASSWORD_VARIABLE in env:
        return env[PASSWORD_VARIABLE].encode()
    if interactive is None:
        interactive = sys.stdin is not None and sys.stdin.isatty()
    if not interactive:
        raise PasswordUnavailable(source)
    if prompt is None:
        import getpass

        prompt = getpass.getpass
    first = prompt(f"Enter password for private key {source}: ")
    if confirm and prompt(f"Enter password for private key {source} again: ") != first:
        raise PrivateKeyError(source, "the two passwords differ")
    return first.encode()


# -- reading -----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrivateKey:
    """A signing key, with its public half as :mod:`imagegate._cosign` verifies with it."""

    key: Any = field(repr=False, compare=False, hash=False)
    source: str
    public: PublicKey

    @property
    def algorithm(self) -> str:
        return self.public.algorithm

    @classmethod
    def from_key(cls, key: Any, source: str) -> PrivateKey:
        from cryptography.hazmat.primitives import serialization

        pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        try:
            public = PublicKey.from_pem(pem, source)
        except InvalidKey as exc:
            raise PrivateKeyError(source, exc.reason) from None
        return cls(key, source, public)

    def sign(self, message: bytes) -> bytes:
        """A signature over *message* that ``cosign verify --key`` and imagegate both accept (module docstring)."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

        if isinstance(self.key, ec.EllipticCurvePrivateKey):
            return self.key.sign(message, ec.ECDSA(hashes.SHA256()))
        if isinstance(self.key, rsa.RSAPrivateKey):
            return self.key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            return self.key.sign(message)
        raise PrivateKeyError(self.source, f"cannot sign with a {type(self.key).__name__}")  # pragma: no cover

    def public_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self.public.key.public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private_key(path: str | os.PathLike[str], password: bytes | None = None, *,
                     environ: Mapping[str, str] | None = None, interactive: bool | None = None) -> PrivateKey:
    """The private key at *path* (see the module docstring); the password, when the key is encrypted and none is
    given, from :func:`read_password`."""
    source = str(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_KEY_FILE + 1)
    except OSError as exc:
        raise PrivateKeyError(source, f"cannot be read ({exc.strerror or exc}); pass the path of cosign.key") from None
    if len(data) > MAX_KEY_FILE:
        raise PrivateKeyError(source, f"is larger than {MAX_KEY_FILE} bytes: not a key file")
    kind, body = _pem_block(data, source)
    if kind in (SIGSTORE_PEM, COSIGN_PEM):
        if password is None:
            password = read_password(source, environ=environ, interactive=interactive)
        der = decrypt_private_key(body, password, source)
        return _from_der(der, source)
    if kind in PLAIN_PEMS:
        return _from_plain(data, source)
    if kind == "ENCRYPTED PRIVATE KEY":
        raise PrivateKeyError(source, "is a password-protected PKCS #8 key, which cosign does not read either; import "
                                      "it with `cosign import-key-pair --key FILE` (or openssl pkcs8) first")
    if kind == "PUBLIC KEY":
        raise PrivateKeyError(source, "is a public key; signing needs the private key (cosign.key)")
    raise PrivateKeyError(source, f"is a PEM {kind[:60]!r} block; expected {SIGSTORE_PEM!r} (cosign generate-key-pair) "
                                  "or an unencrypted PRIVATE KEY / EC PRIVATE KEY / RSA PRIVATE KEY")


def _pem_block(data: bytes, source: str) -> tuple[str, bytes]:
    """The type and bytes of the first PEM block in *data* (what Go's ``pem.Decode`` returns)."""
    text = data.decode("ascii", "replace")
    begin = text.find("-----BEGIN ")
    if begin < 0:
        raise PrivateKeyError(source, "is not PEM (no -----BEGIN line); pass cosign.key")
    head_end = text.find("-----", begin + 11)
    if head_end < 0:
        raise PrivateKeyError(source, "has a broken PEM header")
    kind = text[begin + 11:head_end]
    footer = f"-----END {kind}-----"
    end = text.find(footer, head_end)
    if end < 0:
        raise PrivateKeyError(source, f"has no {footer!r} line")
    lines = [line.strip() for line in text[head_end + 5:end].splitlines()]
    if any(":" in line for line in lines):
        raise PrivateKeyError(source, "has PEM headers (an OpenSSL-encrypted key?); cosign reads none")
    try:
        body = base64.b64decode("".join(lines), validate=True)
    except (binascii.Error, ValueError):
        raise PrivateKeyError(source, "has a PEM body that is not base64") from None
    return kind, body


def decrypt_private_key(blob: bytes, password: bytes, source: str = "key") -> bytes:
    """The PKCS #8 DER inside go-securesystemslib's ``encrypted`` JSON *blob*."""
    try:
        top = struct(decode(blob), "key")
        kdf = top.struct("kdf", required=True)
        cipher = top.struct("cipher", required=True)
        assert kdf is not None and cipher is not None
        params = kdf.struct("params", required=True)
        assert params is not None
        n = params.integer("N", required=True)
        r = params.integer("r", required=True)
        p = params.integer("p", required=True)
        kdf_name, cipher_name = kdf.string("name", required=True), cipher.string("name", required=True)
        salt = _b64(kdf.string("salt", required=True) or "", "kdf.salt", source)
        nonce = _b64(cipher.string("nonce", required=True) or "", "cipher.nonce", source)
        ciphertext = _b64(top.string("ciphertext", required=True) or "", "ciphertext", source)
    except DocumentError as exc:
        raise PrivateKeyError(source, f"is not a cosign encrypted key ({exc})") from None
    if kdf_name != "scrypt":
        raise PrivateKeyError(source, f"uses the key derivation {kdf_name!r}; cosign keys use scrypt")
    if cipher_name != "nacl/secretbox":
        raise PrivateKeyError(source, f"uses the cipher {cipher_name!r}; cosign keys use nacl/secretbox")
    if (n, r, p) not in SCRYPT_PARAMS:
        raise PrivateKeyError(source, f"has scrypt parameters N={n} r={r} p={p}, which cosign does not accept "
                                      "(a key file cannot choose how much memory we spend)")
    if len(nonce) != NONCE_BYTES:
        raise PrivateKeyError(source, f"has a {len(nonce)}-byte nonce; nacl/secretbox takes {NONCE_BYTES}")
    box_key = _scrypt(password, salt, n, r, p)
    import nacl.exceptions
    import nacl.secret

    try:
        return nacl.secret.SecretBox(box_key).decrypt(ciphertext, nonce)
    except nacl.exceptions.CryptoError:
        raise WrongPassword(source) from None


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return Scrypt(salt=salt, length=BOX_KEY_BYTES, n=n, r=r, p=p).derive(password)


def _b64(text: str, what: str, source: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise PrivateKeyError(source, f"{what} is not standard base64") from None


def _from_der(der: bytes, source: str) -> PrivateKey:
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError) as exc:
        raise PrivateKeyError(source, f"decrypts to something that is not a PKCS #8 private key ({exc})") from None
    return _checked(key, source)


def _from_plain(pem: bytes, source: str) -> PrivateKey:
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise PrivateKeyError(source, f"cannot be read ({exc})") from None
    return _checked(key, source)


def _checked(key: Any, source: str) -> PrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < MIN_RSA_BITS:
        raise PrivateKeyError(source, f"is a {key.key_size}-bit RSA key; use {MIN_RSA_BITS} bits or more")
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
        raise PrivateKeyError(source, f"is a {type(key).__name__}; cosign keys are ECDSA, RSA or Ed25519")
    return PrivateKey.from_key(key, source)


# -- making ------------------------------------------------------------------------------------------------------------


def encrypt_private_key(key: Any, password: bytes, *, params: tuple[int, int, int] = STANDARD_SCRYPT) -> bytes:
    """*key* as cosign writes it: the PEM ``ENCRYPTED SIGSTORE PRIVATE KEY`` (see the module docstring)."""
    from cryptography.hazmat.primitives import serialization
    import nacl.secret

    if params not in SCRYPT_PARAMS:
        raise ValueError(f"scrypt parameters {params} are not ones cosign accepts: {SCRYPT_PARAMS}")
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    salt, nonce = os.urandom(SALT_BYTES), os.urandom(NONCE_BYTES)
    n, r, p = params
    sealed = nacl.secret.SecretBox(_scrypt(password, salt, n, r, p)).encrypt(der, nonce).ciphertext
    doc = {"kdf": {"name": "scrypt", "params": {"N": n, "r": r, "p": p}, "salt": _e64(salt)},
           "cipher": {"name": "nacl/secretbox", "nonce": _e64(nonce)}, "ciphertext": _e64(sealed)}
    body = base64.b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode()
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return (f"-----BEGIN {SIGSTORE_PEM}-----\n" + "\n".join(lines) + f"\n-----END {SIGSTORE_PEM}-----\n").encode()


def _e64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def generate_key_pair(password: bytes) -> tuple[bytes, bytes]:
    """A new ECDSA P-256 key pair, as ``cosign generate-key-pair`` makes it: (cosign.key PEM, cosign.pub PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return encrypt_private_key(key, password), public


def write_key_pair(prefix: str | os.PathLike[str], password: bytes) -> tuple[Path, Path]:
    """Write ``PREFIX.key`` (mode 0600) and ``PREFIX.pub``; refuse (:class:`KeyPairExists`) when either exists."""
    private_path, public_path = Path(f"{os.fspath(prefix)}.key"), Path(f"{os.fspath(prefix)}.pub")
    for path in (private_path, public_path):
        if os.path.lexists(path):
            raise KeyPairExists(str(path))
    private_pem, public_pem = generate_key_pair(password)
    _create(private_path, private_pem, 0o600)
    try:
        _create(public_path, public_pem, 0o644)
    except BaseException:
        private_path.unlink(missing_ok=True)
        raise
    return private_path, public_path


def _create(path: Path, data: bytes, mode: int) -> None:
    """Write a new file: O_EXCL (never an existing file, never through a symlink), then the bytes."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    except FileExistsError:
        raise KeyPairExists(str(path)) from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
