"""The auth registry's material: a CA and a server certificate (``openssl`` CLI), a password, its bcrypt hash."""

from __future__ import annotations

import contextlib
import os
import secrets
import warnings
from pathlib import Path

from .host import apt_install, require_tool, run, which, write_file

AUTH_USER = "imagegate"
# The repository (scripts/localstack/ is two levels below it): its .venv has bcrypt (a dev dependency).
REPO_ROOT = Path(__file__).resolve().parent.parent.parent
SERVER_EXT = (
    "basicConstraints=CA:FALSE\n"
    "keyUsage=critical,digitalSignature,keyEncipherment\n"
    "extendedKeyUsage=serverAuth\n"
    "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
    "subjectKeyIdentifier=hash\n"
    "authorityKeyIdentifier=keyid,issuer\n"
)
AUTH_KEYS = ("ca_cert", "ca_key", "server_cert", "server_key", "htpasswd", "user", "password")


def auth_material(auth_dir: Path, old: dict | None) -> dict:
    """The TLS and htpasswd material of the auth registry in ``auth_dir``: the old one when its files are still
    there (so an earlier env stays valid), else a new CA, server certificate and password."""
    auth_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(auth_dir, 0o700)
    files_ok = old and all(Path(old.get(k, "")).is_file() for k in ("ca_cert", "server_cert", "server_key", "htpasswd"))
    if files_ok:  # restart with the same CA and password, so earlier env stays valid
        return {k: old[k] for k in AUTH_KEYS}  # type: ignore[index]
    auth = make_tls(auth_dir)
    password = secrets.token_urlsafe(18)
    htpasswd = auth_dir / "htpasswd"
    write_file(htpasswd, htpasswd_line(AUTH_USER, bcrypt_hash(password)), 0o600)
    write_file(auth_dir / "password", password + "\n", 0o600)
    auth.update(htpasswd=str(htpasswd), user=AUTH_USER, password=password)
    return auth


def htpasswd_line(user: str, hashed: str) -> str:
    return f"{user}:{hashed}\n"


# ------------------------------------------------------------------------------------------------ bcrypt


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash for htpasswd, from whatever this machine has."""
    with contextlib.suppress(ImportError):
        import bcrypt  # type: ignore[import-not-found]

        return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
    htpasswd = which("htpasswd")
    if htpasswd:
        return _htpasswd_hash(htpasswd, password)
    hashed = _crypt_hash(password) or _venv_bcrypt_hash(password)
    if hashed:
        return hashed
    apt_install(
        ["apache2-utils"],
        "no bcrypt implementation found (Python `bcrypt`, `htpasswd`) for the auth registry's htpasswd file",
    )
    return _htpasswd_hash("htpasswd", password)


def _htpasswd_hash(htpasswd: str, password: str) -> str:
    out = run([htpasswd, "-nbB", "-C", "10", AUTH_USER, password], what="htpasswd").stdout.strip()
    return out.split(":", 1)[1]


def _crypt_hash(password: str) -> str | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt  # type: ignore[import-not-found]  # removed in 3.13

            hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 10))
            if hashed and hashed.startswith("$2"):
                return hashed
        except (ImportError, AttributeError, ValueError, OSError):
            pass
    return None


def _venv_bcrypt_hash(password: str) -> str | None:
    # The project's own virtualenv has bcrypt (dev dependency): use it when present.
    venv_py = REPO_ROOT / ".venv" / "bin" / "python"
    if venv_py.exists():
        code = "import bcrypt,sys;print(bcrypt.hashpw(sys.stdin.read().encode(),bcrypt.gensalt(10)).decode())"
        proc = run([str(venv_py), "-c", code], check=False, input=password)
        if proc.returncode == 0 and proc.stdout.startswith("$2"):
            return proc.stdout.strip()
    return None


# --------------------------------------------------------------------------------------------------- TLS


def ca_argv(openssl: str, ca_key: Path, ca_crt: Path) -> list[str]:
    """A self-signed CA (RSA 2048, 10 years)."""
    return [
        openssl, "req", "-x509", "-new", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3650",
        "-subj", "/CN=imagegate local test CA", "-keyout", str(ca_key), "-out", str(ca_crt),
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
    ]


def server_key_argv(openssl: str, key: Path, csr: Path) -> list[str]:
    """The server's key and a signing request for CN=127.0.0.1."""
    return [
        openssl, "req", "-new", "-newkey", "rsa:2048", "-nodes", "-sha256", "-subj", "/CN=127.0.0.1",
        "-keyout", str(key), "-out", str(csr),
    ]


def sign_argv(openssl: str, csr: Path, ca_crt: Path, ca_key: Path, ext: Path, crt: Path) -> list[str]:
    """The CA signs the server certificate (825 days, the extensions in ``ext``)."""
    return [
        openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key), "-CAcreateserial",
        "-days", "825", "-sha256", "-extfile", str(ext), "-out", str(crt),
    ]


def make_tls(auth_dir: Path) -> dict:
    openssl = require_tool("openssl", "openssl", "to make the auth registry's TLS certificates")
    ca_key, ca_crt = auth_dir / "ca.key", auth_dir / "ca.crt"
    key, csr, crt, ext = (
        auth_dir / "server.key",
        auth_dir / "server.csr",
        auth_dir / "server.crt",
        auth_dir / "server.ext",
    )
    run(ca_argv(openssl, ca_key, ca_crt), what="openssl (CA)")
    run(server_key_argv(openssl, key, csr), what="openssl (server key)")
    write_file(ext, SERVER_EXT)
    run(sign_argv(openssl, csr, ca_crt, ca_key, ext, crt), what="openssl (sign server certificate)")
    for p in (ca_key, key):
        os.chmod(p, 0o600)
    return {"ca_cert": str(ca_crt), "ca_key": str(ca_key), "server_cert": str(crt), "server_key": str(key)}
