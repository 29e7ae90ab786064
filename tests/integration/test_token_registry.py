"""Bearer-token auth against a real registry: distribution 2.8 with ``auth: token`` and the stack's token issuer.

``scripts/stack.py up`` starts ``token-registry`` (TLS, ``auth: token``) and ``token-issuer`` (the Docker token
spec; one JSON line per token request in ``$IMAGEGATE_TOKEN_ISSUER_LOG``). Anonymous requests may pull
``public/*``; the accounts of ``$IMAGEGATE_TOKEN_ACCOUNTS`` may pull (and ``imagegate-token`` push) everything.
``imagegate-short``'s tokens live 12 s and say so (imagegate keeps them 2 s: until 10 s before they expire, at
least 1 s); ``imagegate-stale``'s are refused by the registry after 5 s although they claim 300 s.

Every test pushes its own repository (a unique name), so the issuer log lines it counts are its own.
"""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generator

import httpx
import pytest

import imagegate
from imagegate import AuthenticationError, DockerConfig, RegistryClient, parse_reference
from tests.integration.conftest import Stack, _unavailable, run_cli, unique
from tests.support.oci import Image, make_image
from tests.support.push import upload_image

pytestmark = pytest.mark.integration

JWT = re.compile(r"eyJ[A-Za-z0-9_-]{10,}\.")  # the start of any JWT (a base64url JSON header)


@dataclass(frozen=True)
class TokenStack:
    registry: str
    realm: str
    service: str
    ca: Path
    issuer_log: Path
    registry_log: Path
    accounts: dict[str, dict[str, Any]]  # name -> password, access, lifetime[, expires_in]
    user: str  # may pull and push everything
    public_image: str
    private_image: str
    seeded_digest: str  # what `up` pushed as public/busybox and private/busybox

    def password(self, account: str) -> str:
        return str(self.accounts[account]["password"])

    def secrets(self) -> list[str]:
        return [str(acc["password"]) for acc in self.accounts.values()]


@pytest.fixture(scope="session")
def token_stack(stack: Stack) -> TokenStack:
    env = stack.env
    if not stack.token_registry or not stack.token_ca or not stack.token_issuer_log:
        _unavailable("the token registry (IMAGEGATE_TOKEN_REGISTRY in stack.env)")
    assert stack.token_registry and stack.token_ca and stack.token_issuer_log
    try:
        status = httpx.get(f"https://{stack.token_registry}/v2/", verify=ssl.create_default_context(cafile=str(stack.token_ca)), timeout=5)
    except httpx.HTTPError as exc:
        _unavailable(f"the token registry at {stack.token_registry} ({exc})")
    assert status.status_code == 401 and status.headers["WWW-Authenticate"].startswith("Bearer ")
    state = json.loads((Path(env["IMAGEGATE_STACK_DIR"]) / "stack.json").read_text())
    return TokenStack(
        registry=stack.token_registry,
        realm=env["IMAGEGATE_TOKEN_REALM"],
        service=env["IMAGEGATE_TOKEN_SERVICE"],
        ca=stack.token_ca,
        issuer_log=stack.token_issuer_log,
        registry_log=Path(env["IMAGEGATE_TOKEN_REGISTRY_LOG"]),
        accounts=json.loads(Path(env["IMAGEGATE_TOKEN_ACCOUNTS"]).read_text()),
        user=env["IMAGEGATE_TOKEN_USER"],
        public_image=env["IMAGEGATE_TOKEN_PUBLIC_IMAGE"],
        private_image=env["IMAGEGATE_TOKEN_PRIVATE_IMAGE"],
        seeded_digest=state["token_registry"]["images"]["public"]["digest"],
    )


# --- pushing test images (a token client of the test's own, independent of imagegate) -----------------


class _PushTokenAuth(httpx.Auth):
    """Answers the registry's Bearer challenge with a token from its realm (Basic credentials of the push user)."""

    def __init__(self, ts: TokenStack) -> None:
        self._ts, self._token = ts, ""

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._token:
            request.headers["Authorization"] = f"Bearer {self._token}"
        response = yield request
        if response.status_code != 401:
            return
        scope = re.search(r'scope="([^"]+)"', response.headers.get("WWW-Authenticate", ""))
        reply = httpx.get(
            self._ts.realm,
            params={"service": self._ts.service, "scope": scope.group(1) if scope else ""},
            auth=(self._ts.user, self._ts.password(self._ts.user)),
            verify=ssl.create_default_context(cafile=str(self._ts.ca)),
        )
        reply.raise_for_status()
        self._token = reply.json()["token"]
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request


def push(ts: TokenStack, repo: str, image: Image, tag: str = "1.0.0") -> tuple[str, str]:
    """Push *image* as REGISTRY/repo:tag; (reference, digest)."""
    context = ssl.create_default_context(cafile=str(ts.ca))
    with httpx.Client(base_url=f"https://{ts.registry}", auth=_PushTokenAuth(ts), verify=context, timeout=30) as client:
        digest = upload_image(client, repo, image, tag)
    return f"{ts.registry}/{repo}:{tag}", digest


# --- the issuer's log and docker configs ---------------------------------------------------------------


def log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def token_requests(ts: TokenStack, start: int, repo: str) -> list[dict[str, Any]]:
    """The issuer's log entries since byte *start* whose scopes name *repo*."""
    with open(ts.issuer_log, "rb") as f:
        f.seek(start)
        entries = [json.loads(line) for line in f.read().decode().splitlines() if line.strip()]
    return [e for e in entries if any(s.split(":")[1] == repo for s in e.get("scopes", []))]


def registry_log_since(ts: TokenStack, start: int) -> str:
    with open(ts.registry_log, "rb") as f:
        f.seek(start)
        return f.read().decode("utf-8", "replace")


def auths_config(directory: Path, registry: str, user: str, password: str) -> Path:
    """A docker config directory whose config.json has an ``auths`` entry for *registry*."""
    directory.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {registry: {"auth": auth}}}))
    return directory


def client_for(ts: TokenStack, account: str | None, **kwargs: Any) -> RegistryClient:
    config = {"auths": {ts.registry: {"username": account, "password": ts.password(account)}}} if account else {}
    return RegistryClient(docker_config=DockerConfig(config), ca_file=ts.ca, **kwargs)


def assert_no_secret(ts: TokenStack, *texts: str) -> None:
    for text in texts:
        assert not JWT.search(text), "a token leaked into the output"
        for secret in ts.secrets():
            assert secret not in text, "a password leaked into the output"


# --- anonymous ----------------------------------------------------------------------------------------


def test_anonymous_pull_token_for_a_public_repository(token_stack: TokenStack, tmp_path: Path) -> None:
    ts = token_stack
    repo = f"public/{unique('anon')}"
    ref, digest = push(ts, repo, make_image(user="1000"))
    start = log_size(ts.issuer_log)
    env = {"DOCKER_CONFIG": str(tmp_path)}  # no config.json: anonymous
    result = run_cli("check", ref, "--ca-file", str(ts.ca), "--json", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["passed"] and report["pinned"] == f"{ref}@{digest}" and report["user"] == "1000"
    (entry,) = token_requests(ts, start, repo)  # check: HEAD, manifest, config on one token
    assert entry["status"] == 200 and entry["anonymous"] is True and entry["account"] is None
    assert entry["service"] == ts.service
    assert entry["scopes"] == [f"repository:{repo}:pull"] and entry["granted"] == [f"repository:{repo}:pull"]


def test_the_seeded_public_image_resolves_anonymously(token_stack: TokenStack) -> None:
    with client_for(token_stack, None) as client:
        pinned = imagegate.resolve(token_stack.public_image, client=client)
    assert pinned.digest == token_stack.seeded_digest


def test_a_private_repository_is_refused_anonymously_with_a_clear_error(token_stack: TokenStack, tmp_path: Path) -> None:
    ts = token_stack
    repo = parse_reference(ts.private_image).repository
    start = log_size(ts.issuer_log)
    result = run_cli("resolve", ts.private_image, "--ca-file", str(ts.ca), env={"DOCKER_CONFIG": str(tmp_path)})
    assert result.returncode == 2 and result.stdout == ""
    message = result.stderr
    assert f"{ts.registry} refused access to {repo} anonymously" in message
    assert f"docker login {ts.registry}" in message
    as_json = json.loads(
        run_cli("resolve", ts.private_image, "--ca-file", str(ts.ca), "--json", env={"DOCKER_CONFIG": str(tmp_path)}).stdout
    )
    assert as_json["error"]["type"] == "AuthenticationError" and as_json["error"]["status"] == 401
    assert_no_secret(ts, message, json.dumps(as_json))
    entries = token_requests(ts, start, repo)
    assert len(entries) == 2 and all(e["anonymous"] and e["status"] == 200 and e["granted"] == [] for e in entries)


# --- credentials -----------------------------------------------------------------------------------------


def test_scoped_pull_with_credentials_from_config_json_auths(token_stack: TokenStack, tmp_path: Path) -> None:
    ts = token_stack
    repo = f"private/{unique('auths')}"
    ref, digest = push(ts, repo, make_image(user="1000"))
    config = auths_config(tmp_path / "docker", ts.registry, ts.user, ts.password(ts.user))
    start = log_size(ts.issuer_log)
    result = run_cli("check", ref, "--ca-file", str(ts.ca), "--json", env={"DOCKER_CONFIG": str(config)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["pinned"] == f"{ref}@{digest}"
    (entry,) = token_requests(ts, start, repo)
    assert entry["status"] == 200 and entry["account"] == ts.user and entry["anonymous"] is False
    # pull is all imagegate asks for, though this account may push too
    assert entry["scopes"] == [f"repository:{repo}:pull"] and entry["granted"] == [f"repository:{repo}:pull"]


def test_scoped_pull_with_credentials_from_a_credential_helper(token_stack: TokenStack, tmp_path: Path) -> None:
    ts = token_stack
    repo = f"private/{unique('helper')}"
    ref, digest = push(ts, repo, make_image(user="1000"))
    bin_dir, asked = tmp_path / "bin", tmp_path / "asked"
    bin_dir.mkdir()
    answer = json.dumps({"ServerURL": ts.registry, "Username": ts.user, "Secret": ts.password(ts.user)})
    helper = bin_dir / "docker-credential-igtest"
    helper.write_text(
        "#!/bin/sh\n"
        f'[ "$1" = get ] || exit 2\nread -r server\necho "$server" >> {asked}\n'
        f'if [ "$server" = "{ts.registry}" ]; then echo \'{answer}\'; else echo "credentials not found in native keychain"; exit 1; fi\n'
    )
    helper.chmod(0o700)
    config = tmp_path / "docker"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"credHelpers": {ts.registry: "igtest"}}))
    start = log_size(ts.issuer_log)
    env = {"DOCKER_CONFIG": str(config), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = run_cli("check", ref, "--ca-file", str(ts.ca), "--json", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["pinned"] == f"{ref}@{digest}"
    assert asked.read_text().split() == [ts.registry]  # asked once, with the registry's address
    (entry,) = token_requests(ts, start, repo)
    assert entry["status"] == 200 and entry["account"] == ts.user
    assert entry["granted"] == [f"repository:{repo}:pull"]


def test_a_wrong_password_is_a_clear_credential_error(token_stack: TokenStack, tmp_path: Path) -> None:
    ts = token_stack
    wrong = "not-" + ts.password(ts.user)
    config = auths_config(tmp_path / "docker", ts.registry, ts.user, wrong)
    repo = parse_reference(ts.private_image).repository
    start = log_size(ts.issuer_log)
    result = run_cli("resolve", ts.private_image, "--ca-file", str(ts.ca), "--json", env={"DOCKER_CONFIG": str(config)})
    assert result.returncode == 2
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "AuthenticationError" and error["status"] == 401 and error["codes"] == ["UNAUTHORIZED"]
    message = error["message"]
    assert f"token service of {ts.registry} refused repository:{repo}:pull" in message
    assert "incorrect username or password" in message
    assert f"as {ts.user!r} (from {config / 'config.json'} auths[{ts.registry}])" in message  # which, from where
    assert f"docker login {ts.registry}" in message
    assert message in result.stderr  # the same words for a person
    assert wrong not in result.stdout + result.stderr
    assert_no_secret(ts, result.stdout, result.stderr)
    (entry,) = token_requests(ts, start, repo)  # refused once, not retried
    assert entry["status"] == 401 and entry["error"] == "UNAUTHORIZED" and entry["account"] == ts.user


# --- token reuse, expiry and refresh ---------------------------------------------------------------------


def test_one_token_per_scope_serves_many_requests(token_stack: TokenStack) -> None:
    ts = token_stack
    first, second = f"private/{unique('reuse')}", f"private/{unique('reuse')}"
    ref1, digest1 = push(ts, first, make_image(user="1000"))
    ref2, digest2 = push(ts, second, make_image(user="2000"))
    start, reg_start = log_size(ts.issuer_log), log_size(ts.registry_log)
    with client_for(ts, ts.user) as client:
        for _ in range(3):
            assert client.resolve(parse_reference(ref1), fresh=True).digest == digest1
        assert client.inspect(parse_reference(ref1)).user == "1000"
        for _ in range(2):
            assert client.resolve(parse_reference(ref2), fresh=True).digest == digest2
        assert client.inspect(parse_reference(ref2)).user == "2000"
    one, two = token_requests(ts, start, first), token_requests(ts, start, second)
    assert [e["granted"] for e in one] == [[f"repository:{first}:pull"]]
    assert [e["granted"] for e in two] == [[f"repository:{second}:pull"]]
    log = registry_log_since(ts, reg_start)
    served = re.findall(rf'msg="response completed".*http\.request\.uri="?/v2/{re.escape(first)}/', log)
    assert len(served) >= 5  # 3 HEADs, the manifest and the config blob, all on the one token


def test_a_short_lived_token_is_renewed_before_it_expires(token_stack: TokenStack) -> None:
    ts = token_stack
    account = "imagegate-short"
    assert ts.accounts[account]["lifetime"] == 12 and "expires_in" not in ts.accounts[account]
    repo = f"private/{unique('short')}"
    ref, digest = push(ts, repo, make_image(user="1000"))
    start, reg_start = log_size(ts.issuer_log), log_size(ts.registry_log)
    with client_for(ts, account) as client:
        assert client.resolve(parse_reference(ref), fresh=True).digest == digest
        assert client.resolve(parse_reference(ref), fresh=True).digest == digest  # within its life: reused
        time.sleep(2.5)  # imagegate keeps a token until 10 s before expires_in (here 2 s)
        assert client.resolve(parse_reference(ref), fresh=True).digest == digest
    entries = token_requests(ts, start, repo)
    assert [(e["account"], e["status"], e["expires_in"]) for e in entries] == [(account, 200, 12)] * 2
    assert entries[0]["jti"] != entries[1]["jti"]
    assert "invalid token" not in registry_log_since(ts, reg_start)  # renewed by the client, never refused


def test_a_token_the_registry_refuses_as_expired_is_replaced(token_stack: TokenStack) -> None:
    ts = token_stack
    account = "imagegate-stale"
    assert ts.accounts[account]["lifetime"] == 5 and ts.accounts[account]["expires_in"] == 300
    repo = f"private/{unique('stale')}"
    ref, digest = push(ts, repo, make_image(user="1000"))
    start, reg_start = log_size(ts.issuer_log), log_size(ts.registry_log)
    with client_for(ts, account) as client:
        assert client.resolve(parse_reference(ref), fresh=True).digest == digest
        time.sleep(6.0)  # the registry refuses the token 5 s after it was issued; the client thinks it has 300 s
        assert client.resolve(parse_reference(ref), fresh=True).digest == digest
        assert client.inspect(parse_reference(ref)).user == "1000"
    entries = token_requests(ts, start, repo)
    assert [(e["account"], e["status"]) for e in entries] == [(account, 200)] * 2
    refused = [line for line in registry_log_since(ts, reg_start).splitlines() if "invalid token" in line and repo in line]
    assert len(refused) == 1  # the stale token was refused once, then the fresh one served the rest


def test_each_cli_process_fetches_its_own_token(token_stack: TokenStack, tmp_path: Path) -> None:
    """Tokens live in memory only: a second process asks again (nothing is written to disk)."""
    ts = token_stack
    repo = f"private/{unique('cli')}"
    ref, digest = push(ts, repo, make_image(user="1000"))
    config = auths_config(tmp_path / "docker", ts.registry, "imagegate-short", ts.password("imagegate-short"))
    start = log_size(ts.issuer_log)
    for _ in range(2):
        result = run_cli("resolve", ref, "--ca-file", str(ts.ca), env={"DOCKER_CONFIG": str(config)})
        assert result.returncode == 0 and result.stdout.strip() == f"{ref}@{digest}", result.stderr
    assert len(token_requests(ts, start, repo)) == 2


def test_the_wrong_password_error_is_typed_for_the_python_api(token_stack: TokenStack) -> None:
    ts = token_stack
    config = DockerConfig({"auths": {ts.registry: {"username": ts.user, "password": "wrong-password"}}})
    with RegistryClient(docker_config=config, ca_file=ts.ca) as client, pytest.raises(AuthenticationError) as info:
        client.resolve(parse_reference(ts.private_image))
    assert info.value.status == 401 and info.value.registry == ts.registry
    assert "wrong-password" not in str(info.value)


def test_docker_certs_d_trust_covers_the_token_realm(token_stack: TokenStack, tmp_path: Path) -> None:
    """Docker's layout (certs.d/HOST:PORT/ca.crt for the registry) is enough: the realm is reached with the
    registry's TLS trust, as the Docker Engine does."""
    ts = token_stack
    (tmp_path / ts.registry).mkdir()
    (tmp_path / ts.registry / "ca.crt").write_bytes(ts.ca.read_bytes())
    config = DockerConfig({"auths": {ts.registry: {"username": ts.user, "password": ts.password(ts.user)}}})
    with RegistryClient(docker_config=config, certs_dir=tmp_path) as client:
        assert client.resolve(parse_reference(ts.private_image)).digest == ts.seeded_digest
    with RegistryClient(docker_config=config, certs_dir=tmp_path / "elsewhere") as untrusting:
        with pytest.raises(imagegate.RegistryUnreachable, match="not trusted"):
            untrusting.resolve(parse_reference(ts.private_image))
