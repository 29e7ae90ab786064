"""The token issuer (scripts/localstack/token_issuer.py) and the token registry's material and config
(registry_token.py, registries.py, state.py, stack_cli.py).

No Docker, no registry: the issuer's logic runs in-process, its HTTP side on a loopback port in a thread, and
signatures are made by the real ``openssl`` and checked with ``cryptography``.
"""

from __future__ import annotations

import base64
import json
import shutil
import threading
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from localstack import registries, registry_token, stack_cli, state, token_issuer
from localstack.token_issuer import ConfigError, Grant, RequestError

yaml = pytest.importorskip("yaml")
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _config(tmp_path: Path, **overrides: Any) -> token_issuer.IssuerConfig:
    doc = {
        "listen": {"host": "127.0.0.1", "port": 0},
        "service": "svc",
        "issuer": "iss",
        "signing": {"key": str(tmp_path / "signing.key"), "cert": str(tmp_path / "signing.crt")},
        "log": str(tmp_path / "requests.log"),
        "anonymous": [{"repository": "public/*", "actions": ["pull"]}],
        "accounts": {
            "alice": {
                "password": token_issuer.hash_password("alice-pw", iterations=1000),
                "access": [{"repository": "*", "actions": ["pull", "push"]}],
            },
            "short": {
                "password": token_issuer.hash_password("short-pw", iterations=1000),
                "access": [{"repository": "team/*", "actions": ["pull"]}],
                "lifetime": 3,
                "expires_in": 300,
            },
        },
        **overrides,
    }
    return token_issuer.parse_config(doc)


def _issuer(tmp_path: Path, **overrides: Any) -> token_issuer.Issuer:
    return token_issuer.Issuer(_config(tmp_path, **overrides), lambda data: b"sig:" + data[:8], ["CERT"])


# --- config --------------------------------------------------------------------------------------------


def test_parse_config_defaults_and_accounts(tmp_path):
    config = _config(tmp_path)
    assert (config.service, config.issuer, config.registry_leeway, config.anonymous_lifetime) == ("svc", "iss", 60, 300)
    assert config.anonymous == (Grant("public/*", frozenset({"pull"})),)
    alice, short = config.accounts["alice"], config.accounts["short"]
    assert (alice.lifetime, alice.expires_in) == (300, 300)  # expires_in defaults to the lifetime
    assert (short.lifetime, short.expires_in) == (3, 300)
    assert "alice-pw" not in repr(alice) and config.tls_cert is None


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"anonymous": [{"repository": "x", "actions": ["steal"]}]}, "anonymous[0].actions"),
        ({"anonymous": [{"actions": ["pull"]}]}, "anonymous[0] needs a 'repository'"),
        ({"anonymous": "public/*"}, "anonymous must be a list"),
        ({"accounts": {"bob": {"password": "plain", "access": []}}}, "pbkdf2_sha256"),
        ({"accounts": {"bob": {"password": "pbkdf2_sha256$1$00$00", "lifetime": 0}}}, "lifetime"),
        ({"accounts": {"bob": {"password": "pbkdf2_sha256$1$00$00", "lifetime": True}}}, "lifetime"),
        ({"accounts": {"bob": {"password": "pbkdf2_sha256$1$00$00", "expires_in": 86401}}}, "expires_in"),
        ({"listen": {}}, "missing or bad setting"),
    ],
)
def test_parse_config_refuses_bad_settings(tmp_path, change, words):
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("$", r"\$")):
        _config(tmp_path, **change)


def test_passwords_are_pbkdf2_and_checked_in_constant_form():
    encoded = token_issuer.hash_password("s3cret", iterations=1000)
    scheme, iterations, salt, digest = encoded.split("$")
    assert (scheme, iterations, len(salt), len(digest)) == ("pbkdf2_sha256", "1000", 32, 64)
    assert token_issuer.verify_password("s3cret", encoded)
    assert not token_issuer.verify_password("s3cret ", encoded)
    assert token_issuer.hash_password("s3cret", iterations=1000) != encoded  # salted
    for broken in ("", "pbkdf2_sha256$x$00$00", "md5$1$00$00", "pbkdf2_sha256$1$zz$00"):
        assert not token_issuer.verify_password("s3cret", broken)


# --- scopes and grants ------------------------------------------------------------------------------------


def test_parse_scopes_reads_repeated_and_space_separated_scopes():
    scopes = token_issuer.parse_scopes(["repository:team/etl:pull,push", "repository:a:pull registry:catalog:*"])
    assert [str(s) for s in scopes] == ["repository:team/etl:pull,push", "repository:a:pull", "registry:catalog:*"]
    assert token_issuer.parse_scopes([]) == []
    (plugin,) = token_issuer.parse_scopes(["repository(plugin):vieux/sshfs:pull,pull"])
    assert (plugin.type, plugin.name, plugin.actions) == ("repository(plugin)", "vieux/sshfs", ("pull",))


@pytest.mark.parametrize(
    "scope",
    ["repository", "repository:etl", "repository::pull", ":etl:pull", "repository:Team/etl:pull",
     "repository:../etl:pull", "repository:a//b:pull", "repository:" + "a" * 256 + ":pull"],
)
def test_parse_scopes_refuses_malformed_scopes(scope):
    with pytest.raises(RequestError) as info:
        token_issuer.parse_scopes([scope])
    assert info.value.status == 400 and info.value.code == "invalid_request"


def test_parse_scopes_has_a_limit():
    with pytest.raises(RequestError, match="more than 32 scopes"):
        token_issuer.parse_scopes([" ".join(f"repository:r{i}:pull" for i in range(33))])


def test_granted_access_is_the_intersection_of_asked_and_allowed():
    grants = (Grant("public/*", frozenset({"pull"})), Grant("team/etl", frozenset({"push"})))
    scopes = token_issuer.parse_scopes(
        ["repository:public/busybox:pull,push", "repository:private/x:pull", "repository:team/etl:pull,push",
         "repository:public/busybox:pull", "registry:catalog:*"]
    )
    assert token_issuer.granted_access(grants, scopes) == [
        {"type": "repository", "name": "public/busybox", "actions": ["pull"]},
        {"type": "repository", "name": "team/etl", "actions": ["push"]},
    ]
    assert token_issuer.entitled(grants, "public/a/b") == {"pull"}  # fnmatch: * crosses /
    assert token_issuer.entitled(grants, "publicity") == frozenset()


# --- tokens -----------------------------------------------------------------------------------------------


def test_token_claims_count_the_registry_leeway(tmp_path):
    config = _config(tmp_path)
    claims, expires_in = token_issuer.token_claims(config, config.accounts["alice"], [], 1000, "j")
    assert claims == {"iss": "iss", "sub": "alice", "aud": "svc", "exp": 1000 + 300 - 60, "nbf": 1000, "iat": 1000,
                      "jti": "j", "access": []}
    assert expires_in == 300
    short, expires_in = token_issuer.token_claims(config, config.accounts["short"], [], 1000, "j")
    assert short["exp"] == 1000 + 3 - 60 and expires_in == 300  # the registry refuses it at 1003 (exp + leeway)
    anonymous, expires_in = token_issuer.token_claims(config, None, [], 1000, "j")
    assert anonymous["sub"] == "" and anonymous["exp"] == 1240 and expires_in == 300


def test_issue_anonymous_gets_public_pull_only(tmp_path):
    issuer = _issuer(tmp_path)
    body, fields = issuer.issue({"service": ["svc"], "scope": ["repository:public/bb:pull,push", "repository:p/x:pull"]}, None)
    assert body["token"] == body["access_token"] and body["expires_in"] == 300 and body["issued_at"].endswith("Z")
    header, claims = token_issuer.decode_jwt_unverified(body["token"])
    assert header == {"typ": "JWT", "alg": "RS256", "x5c": ["CERT"]}
    assert claims["access"] == [{"type": "repository", "name": "public/bb", "actions": ["pull"]}]
    assert fields["anonymous"] is True and fields["account"] is None
    assert fields["granted"] == ["repository:public/bb:pull"]
    assert fields["scopes"] == ["repository:public/bb:pull,push", "repository:p/x:pull"]
    assert fields["jti"] == claims["jti"] and len(claims["jti"]) == 32


def test_issue_for_an_account_and_its_refusals(tmp_path):
    issuer = _issuer(tmp_path)
    body, fields = issuer.issue({"scope": ["repository:x/y:push,pull"]}, _basic("alice", "alice-pw"))
    assert token_issuer.decode_jwt_unverified(body["token"])[1]["access"][0]["actions"] == ["push", "pull"]
    assert fields["account"] == "alice" and fields["lifetime"] == 300
    body, fields = issuer.issue({"scope": ["repository:x/y:pull"]}, _basic("short", "short-pw"))
    assert fields["granted"] == [] and body["expires_in"] == 300 and fields["lifetime"] == 3
    for header in (_basic("alice", "wrong"), _basic("nobody", "alice-pw"), "Basic !!!", "Bearer abc", "Basic " +
                   base64.b64encode(b"alice").decode()):
        with pytest.raises(RequestError) as info:
            issuer.issue({}, header)
        assert info.value.status == 401 and "alice-pw" not in info.value.message
    with pytest.raises(RequestError, match="unknown service"):
        issuer.issue({"service": ["other"]}, None)
    with pytest.raises(RequestError, match="does not match"):
        issuer.issue({"account": ["bob"]}, _basic("alice", "alice-pw"))


@needs_openssl
def test_openssl_signature_is_rs256_over_the_signing_input(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    key, crt = tmp_path / "signing.key", tmp_path / "signing.crt"
    registry_token.run(registry_token.signing_argv("openssl", key, crt), what="openssl")
    token = token_issuer.encode_jwt({"alg": "RS256"}, {"sub": "a"}, token_issuer.openssl_signer(str(key)))
    head, claims, sig = token.split(".")
    cert = x509.load_der_x509_certificate(token_issuer.pem_to_der(crt.read_text()))
    signature = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    cert.public_key().verify(signature, f"{head}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())
    assert cert.subject.rfc4514_string() == "CN=imagegate stack token signer"
    with pytest.raises(RuntimeError, match="openssl dgst -sign failed"):
        token_issuer.openssl_signer(str(tmp_path / "missing.key"))(b"x")


# --- the HTTP side ----------------------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, token_issuer.IssuerConfig]]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    registry_token.run(registry_token.signing_argv("openssl", tmp_path / "signing.key", tmp_path / "signing.crt"))
    config = _config(tmp_path)
    server = token_issuer.make_server(config)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", config
    finally:
        server.shutdown()
        server.server_close()


def _log(config: token_issuer.IssuerConfig) -> list[dict]:
    return [json.loads(line) for line in Path(config.log).read_text().splitlines()]


def test_server_issues_logs_and_refuses(served):
    url, config = served
    assert httpx.get(f"{url}/healthz").text == "ok\n"
    ok = httpx.get(f"{url}/token", params={"service": "svc", "scope": "repository:team/a:pull"}, auth=("alice", "alice-pw"))
    assert ok.status_code == 200 and ok.headers["Cache-Control"] == "no-store"
    body = ok.json()
    assert set(body) == {"token", "access_token", "expires_in", "issued_at"}
    header, claims = token_issuer.decode_jwt_unverified(body["token"])
    assert header["alg"] == "RS256" and base64.b64decode(header["x5c"][0]) == token_issuer.pem_to_der(
        Path(config.signing_cert).read_text()
    )
    assert claims["sub"] == "alice" and claims["aud"] == "svc" and claims["iss"] == "iss"
    bad = httpx.get(f"{url}/token", params={"service": "svc", "scope": "repository:team/a:pull"}, auth=("alice", "nope"))
    assert bad.status_code == 401 and bad.headers["WWW-Authenticate"].startswith("Basic ")
    assert bad.json() == {"errors": [{"code": "UNAUTHORIZED", "message": "incorrect username or password"}]}
    assert httpx.get(f"{url}/token", params={"scope": "repository:BAD:pull"}).status_code == 400
    assert httpx.post(f"{url}/token", data={"grant_type": "password"}).json()["error"] == "unsupported_grant_type"
    assert httpx.get(f"{url}/other").status_code == 404
    issued, refused, malformed = _log(config)  # /healthz, POST and 404 are not token requests
    assert (issued["status"], issued["account"], issued["granted"]) == (200, "alice", ["repository:team/a:pull"])
    assert (refused["status"], refused["account"], refused["error"]) == (401, "alice", "UNAUTHORIZED")
    assert (malformed["status"], malformed["anonymous"]) == (400, True)
    text = Path(config.log).read_text()
    assert "alice-pw" not in text and "nope" not in text and body["token"] not in text


# --- the stack's side ---------------------------------------------------------------------------------------


def test_issuer_config_hashes_passwords_and_round_trips(tmp_path):
    material = {k: f"/m/{k}" for k in registry_token.MATERIAL_FILES}
    accounts = registry_token.new_accounts()
    doc = registry_token.issuer_config(4321, material, accounts, tmp_path / "req.log")
    text = json.dumps(doc)
    assert all(acc["password"] not in text for acc in accounts.values())
    config = token_issuer.parse_config(doc)
    assert (config.port, config.tls_cert, config.signing_cert) == (4321, "/m/server_cert", "/m/signing_cert")
    assert (config.service, config.issuer) == (registry_token.SERVICE, registry_token.ISSUER)
    for name, acc in accounts.items():
        assert token_issuer.verify_password(acc["password"], config.accounts[name].password_hash)
    assert config.accounts[registry_token.SHORT_USER].expires_in == 12
    assert config.accounts[registry_token.STALE_USER].lifetime == 5
    assert config.accounts[registry_token.STALE_USER].expires_in == 300
    assert config.anonymous == (Grant("public/*", frozenset({"pull"})),)


def test_new_accounts_have_distinct_random_passwords():
    a, b = registry_token.new_accounts(), registry_token.new_accounts()
    assert set(a) == {registry_token.PUSH_USER, registry_token.SHORT_USER, registry_token.STALE_USER}
    passwords = [acc["password"] for acc in (*a.values(), *b.values())]
    assert len(set(passwords)) == 6 and all(len(p) >= 24 for p in passwords)


def test_token_material_reuses_existing_files(tmp_path):
    old = {}
    for k in registry_token.MATERIAL_FILES:
        (tmp_path / k).write_text("x")
        old[k] = str(tmp_path / k)
    assert registry_token.token_material(tmp_path / "auth", {**old, "pid": 1}) == old
    assert (tmp_path / "auth").stat().st_mode & 0o777 == 0o700


def test_signing_argv():
    argv = registry_token.signing_argv("openssl", Path("/a/s.key"), Path("/a/s.crt"))
    assert argv[:3] == ["openssl", "req", "-x509"] and argv[argv.index("-keyout") + 1] == "/a/s.key"
    assert argv[argv.index("-out") + 1] == "/a/s.crt" and "keyUsage=critical,digitalSignature" in argv


def test_token_registry_config_renders_auth_token(tmp_path):
    token = registry_token.token_auth_block("https://127.0.0.1:9/token", {"server_cert": "/c", "server_key": "/k",
                                                                          "signing_cert": "/sign.crt"})
    doc = yaml.safe_load(registries.registry_config("token-registry", 5005, tmp_path, None, token=token))
    assert doc["http"]["tls"] == {"certificate": "/c", "key": "/k"}
    assert doc["auth"] == {"token": {"realm": "https://127.0.0.1:9/token", "service": registry_token.SERVICE,
                                     "issuer": registry_token.ISSUER, "rootcertbundle": "/sign.crt"}}
    with pytest.raises(ValueError, match="not both"):
        registries.registry_config("r", 1, tmp_path, {"server_cert": "/c", "server_key": "/k", "htpasswd": "/h"},
                                   token=token)
    rec = registries.registry_record(5005, None, tmp_path / "c.yml", tmp_path, tmp_path / "a.log", token)
    assert rec["url"] == "https://127.0.0.1:5005" and rec["token"] is True and rec["realm"] == token["realm"]
    assert "auth" not in rec


def test_token_env_is_empty_until_up_and_reads_the_password(tmp_path):
    assert set(state.token_env({}).values()) == {""}
    accounts = tmp_path / "accounts.json"
    accounts.write_text(json.dumps({"imagegate-token": {"password": "pw"}}))
    st = {
        "token_issuer": {"realm": "https://127.0.0.1:2/token", "service": "s", "request_log": "/r.log"},
        "token_registry": {"addr": "127.0.0.1:3", "url": "https://127.0.0.1:3", "log": "/t.log", "ca_cert": "/ca",
                           "user": "imagegate-token", "accounts": str(accounts),
                           "images": {"public": {"ref": "127.0.0.1:3/public/busybox:1"}}},
    }
    env = state.token_env(st)
    assert env["IMAGEGATE_TOKEN_PASSWORD"] == "pw" and env["IMAGEGATE_TOKEN_USER"] == "imagegate-token"
    assert env["IMAGEGATE_TOKEN_REALM"] == "https://127.0.0.1:2/token" and env["IMAGEGATE_TOKEN_ISSUER_LOG"] == "/r.log"
    assert env["IMAGEGATE_TOKEN_PUBLIC_IMAGE"] == "127.0.0.1:3/public/busybox:1"
    assert env["IMAGEGATE_TOKEN_PRIVATE_IMAGE"] == ""
    accounts.unlink()
    assert state.token_env(st)["IMAGEGATE_TOKEN_PASSWORD"] == ""
    assert "IMAGEGATE_TOKEN_PASSWORD" in stack_cli.SECRET_ENV


def test_stack_cli_knows_the_token_pieces():
    assert ("token-issuer", "token_issuer") in stack_cli.COMPONENTS
    assert ("token-registry", "token_registry") in stack_cli.COMPONENTS
    st = {"images": {"busybox": {"ref": "r/b:1"}},
          "token_registry": {"images": {"public": {"ref": "t/public/b:1"}, "private": {"ref": "t/private/b:1"}}}}
    assert stack_cli.registry_refs(st) == ["r/b:1", "t/private/b:1", "t/public/b:1"]
    assert stack_cli.token_image_status({}) == []
    assert stack_cli.token_image_status({"token_registry": {"images": {}}}) == [
        (False, "token public   MISSING (up did not finish)"),
        (False, "token private  MISSING (up did not finish)"),
    ]


def test_sync_accounts_keeps_passwords_and_takes_grants_from_the_code(tmp_path):
    path = tmp_path / "accounts.json"
    material = {"accounts": str(path)}
    first = registry_token.sync_accounts(material)  # no file yet: new passwords
    assert set(first) == set(registry_token.ACCOUNTS) and json.loads(path.read_text()) == first
    stale = {name: {**acc, "lifetime": 1, "access": []} for name, acc in first.items()}
    del stale[registry_token.STALE_USER]
    path.write_text(json.dumps(stale))
    second = registry_token.sync_accounts(material)
    for name, spec in registry_token.ACCOUNTS.items():
        assert {k: v for k, v in second[name].items() if k != "password"} == spec
    assert second[registry_token.PUSH_USER]["password"] == first[registry_token.PUSH_USER]["password"]
    assert second[registry_token.STALE_USER]["password"] != first[registry_token.STALE_USER]["password"]
    assert json.loads(path.read_text()) == second and path.stat().st_mode & 0o777 == 0o600
    spec = json.loads(registry_token.issuer_spec())
    assert spec["accounts"] == registry_token.ACCOUNTS and spec["code"].startswith("sha256:")
