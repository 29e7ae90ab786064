"""What looks like a secret, and its redaction from reports."""

from __future__ import annotations

import json

import pytest

from imagegate._secrets import REDACTED, looks_secret_name, looks_secret_value, redact_argv, redact_labels
from tests.support.fakeregistry import FakeRegistry
from tests.support.oci import make_image


@pytest.mark.parametrize(
    "name",
    ["PASSWORD", "PGPASSWORD", "MYSQL_PWD", "DBPASS", "DB_PASS", "SMTP_PASSWD", "GITHUB_TOKEN", "ACCESS_TOKENS",
     "AWS_SECRET_ACCESS_KEY", "API_KEY", "APIKEY", "PRIVATE_KEY", "CLIENT_SECRET", "GOOGLE_CREDENTIALS", "NPM_AUTH",
     "db.password", "--token", "--password", "vault-passphrase"],
)
def test_secret_names(name: str) -> None:
    assert looks_secret_name(name)


@pytest.mark.parametrize(
    "name",
    ["PWD", "OLDPWD", "PATH", "HOME", "POSTGRES_PASSWORD_FILE", "DB_PASSWORD_PATH", "TOKENIZERS_PARALLELISM",
     "BYPASS_CACHE", "GPG_KEY", "KEYRING", "org.opencontainers.image.authors", "PYTHONUNBUFFERED", "PASSTHROUGH_MODE"],
)
def test_not_secret_names(name: str) -> None:
    assert not looks_secret_name(name)


@pytest.mark.parametrize(
    "value",
    ["AKIAIOSFODNN7EXAMPLE", "ghp_" + "a" * 36, "postgres://user:pa55@db/x", "-----BEGIN RSA PRIVATE KEY-----",
     "xoxb-1234567890-abc", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig"],
)
def test_secret_values(value: str) -> None:
    assert looks_secret_value(value)


def test_argv_redaction() -> None:
    argv = ["psql", "--password=hunter2", "--token", "abc", "-h", "db", "postgres://u:p@h/x",
            "sh", "-c", "PGPASSWORD=s3 psql --pass s4 && echo ok"]
    out = redact_argv(argv)
    assert out is not None
    text = " ".join(out)
    for secret in ("hunter2", "abc", ":p@", "s3", "s4"):
        assert secret not in text, secret
    assert out[:2] == ("psql", f"--password={REDACTED}") and "-h" in out and "db" in out and "echo ok" in text
    assert redact_argv(None) is None


def test_label_redaction() -> None:
    assert redact_labels({"db.password": "x", "url": "https://a:b@c/", "maintainer": "me"}) == {
        "db.password": REDACTED, "url": f"https://{REDACTED}@c/", "maintainer": "me"}


def test_reports_never_carry_secret_values_from_the_image() -> None:
    import imagegate
    from imagegate import DockerConfig, RegistryClient

    registry = FakeRegistry()
    registry.put_image("team/etl", make_image(
        user="1000", env={"PGPASSWORD": "env-secret"}, labels={"api.token": "label-secret"},
        entrypoint=["run", "--password=argv-secret"], cmd=["AKIAIOSFODNN7EXAMPLE"],
        healthcheck={"Test": ["CMD", "curl", "http://u:health-secret@localhost/"]}), tag="1.0.0")
    client = RegistryClient(transport=registry.transport, docker_config=DockerConfig({}))
    report = imagegate.check("registry.test/team/etl:1.0.0", client=client)
    text = report.to_json() + report.render_text() + json.dumps(report.to_dict())
    for secret in ("env-secret", "label-secret", "argv-secret", "AKIAIOSFODNN7EXAMPLE", "health-secret"):
        assert secret not in text, secret
    assert report.facts and report.facts["labels"] == {"api.token": REDACTED}
