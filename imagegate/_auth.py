"""Registry credentials, read the way the Docker CLI reads them.

Lookup order for a registry host is Docker's: ``credHelpers[host]``, then
``credsStore``, then ``auths[host]`` of ``$DOCKER_CONFIG/config.json``
(default ``~/.docker/config.json``). Helpers are the ``docker-credential-NAME``
programs, run with the server URL on stdin.

We read config.json ourselves rather than through the docker SDK because the
SDK's lookup skips ``credHelpers``/``credsStore`` precedence for some keys and
would make ``import imagegate`` pull in the SDK.

No secret is ever put in a message, a log line or ``repr``.
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from imagegate._errors import CredentialError, PolicyError

# Docker Hub's credentials are stored under this legacy key.
DOCKER_HUB_SERVER = "https://index.docker.io/v1/"
_DOCKER_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}


@dataclass(frozen=True)
class Credentials:
    """A username and secret for one registry.

    ``identity_token`` is set instead of a password when a helper or
    ``config.json`` holds an OAuth2 refresh token (Docker's ``identitytoken``).
    """

    username: str
    password: str = field(repr=False, default="")
    identity_token: str | None = field(repr=False, default=None)
    source: str = ""

    def basic_header(self) -> str:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return f"Basic {token}"


def _host_key(server: str) -> str:
    """``https://host:port/v1/`` → ``host:port``, with Docker Hub's aliases folded."""
    host = re.sub(r"^[a-z]+://", "", server.strip()).split("/", 1)[0].lower()
    return "docker.io" if host in _DOCKER_HUB_ALIASES else host


def _server_url(registry: str) -> str:
    return DOCKER_HUB_SERVER if _host_key(registry) == "docker.io" else registry


class DockerConfig:
    """Credentials from a Docker ``config.json`` (possibly absent).

    ``helper_runner`` runs a credential helper; it is injectable for tests that
    cannot install one on PATH.
    """

    def __init__(self, data: Mapping[str, Any] | None = None, *, source: str = "") -> None:
        self._data = dict(data or {})
        self.source = source

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> DockerConfig:
        """Read ``config.json`` from *path*, ``$DOCKER_CONFIG`` or ``~/.docker``."""
        if path is None:
            directory = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
            path = os.path.join(directory, "config.json")
        file = os.fspath(path)
        if not os.path.exists(file):
            return cls({}, source=file)
        try:
            with open(file, encoding="utf-8") as handle:
                data = json.loads(handle.read() or "{}")
        except (OSError, ValueError) as exc:
            raise PolicyError(
                f"cannot read docker config: {exc}; fix or remove the file", source=file
            ) from exc
        if not isinstance(data, dict):
            raise PolicyError("docker config must be a JSON object", source=file)
        return cls(data, source=file)

    def credentials_for(self, registry: str) -> Credentials | None:
        """The credentials Docker would use for *registry*, or None for anonymous."""
        host = _host_key(registry)
        helpers = self._data.get("credHelpers") or {}
        for key, helper in helpers.items():
            if _host_key(key) == host:
                return run_credential_helper(helper, _server_url(registry))
        store = self._data.get("credsStore")
        if store:
            found = run_credential_helper(store, _server_url(registry))
            if found is not None:
                return found
        for key, entry in (self._data.get("auths") or {}).items():
            if _host_key(key) == host and isinstance(entry, dict):
                return _from_auths_entry(entry, source=f"{self.source} auths[{key}]")
        return None


def _from_auths_entry(entry: Mapping[str, Any], *, source: str) -> Credentials | None:
    username = entry.get("username") or ""
    password = entry.get("password") or ""
    if entry.get("auth"):
        try:
            decoded = base64.b64decode(entry["auth"]).decode()
        except (ValueError, UnicodeDecodeError):
            raise PolicyError("the 'auth' value is not base64 of USER:PASSWORD; run docker login again", source=source) from None
        username, _, password = decoded.partition(":")
    token = entry.get("identitytoken")
    if not (username or password or token):
        return None
    return Credentials(username=username, password=password, identity_token=token or None, source=source)


def run_credential_helper(name: str, server_url: str, *, timeout: float = 30.0) -> Credentials | None:
    """Ask ``docker-credential-NAME`` for *server_url*; None when it has nothing stored."""
    import subprocess  # only when a helper is configured

    program = f"docker-credential-{name}"
    try:
        proc = subprocess.run(
            [program, "get"], input=server_url.encode(), capture_output=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise CredentialError(name, server_url, f"{program} is not on PATH") from None
    except subprocess.TimeoutExpired:
        raise CredentialError(name, server_url, f"no answer within {timeout:g}s") from None
    output = proc.stdout.decode(errors="replace").strip()
    if proc.returncode != 0:
        if "credentials not found" in output.lower() or "credentials not found" in proc.stderr.decode(errors="replace").lower():
            return None
        raise CredentialError(name, server_url, f"exit status {proc.returncode}")
    try:
        answer = json.loads(output)
    except ValueError:
        raise CredentialError(name, server_url, "its answer is not JSON") from None
    username, secret = answer.get("Username", ""), answer.get("Secret", "")
    if username == "<token>":
        return Credentials(username="", identity_token=secret, source=program)
    return Credentials(username=username, password=secret, source=program)


@dataclass(frozen=True)
class Challenge:
    """A parsed ``WWW-Authenticate`` header."""

    scheme: str
    params: Mapping[str, str]

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")


_PARAM = r'\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?'  # compiled on first use (re caches it)


def parse_challenge(header: str) -> Challenge | None:
    """Parse ``Bearer realm="…",service="…",scope="…"`` (RFC 7235 auth-params)."""
    header = header.strip()
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        match = re.compile(_PARAM).match(rest, pos)
        if not match or match.end() == pos:
            break
        value = match.group(2) if match.group(2) is not None else match.group(3)
        params[match.group(1).lower()] = re.sub(r"\\(.)", r"\1", value or "")
        pos = match.end()
    return Challenge(scheme=scheme.lower(), params=params)
