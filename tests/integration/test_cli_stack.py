"""The `imagegate` command line against the real registry: output, JSON and exit codes."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Stack, build_and_push, free_port, run_cli, unique
from tests.support.push import push_image
from tests.support.oci import make_image

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def images(stack: Stack, docker_client: Any) -> dict[str, tuple[str, str]]:
    """name -> (reference, digest) for images built from real Dockerfiles and pushed with docker."""
    repo = unique("cli")
    built = {}
    for name, dockerfile, tag in [
        ("root", "FROM {base}\nCMD [\"id\"]\n", "1.0.0"),
        ("uid", "FROM {base}\nUSER 1000\nCMD [\"id\"]\n", "1.0.0-uid"),
        ("named", "FROM {base}\nUSER app\nCMD [\"id\"]\n", "1.0.0-named"),
        ("latest", "FROM {base}\nUSER 1000\nCMD [\"id\"]\n", "latest"),
    ]:
        digest = build_and_push(docker_client, stack, dockerfile, repo, tag)
        built[name] = (f"{stack.registry}/{repo}:{tag}", digest)
    return built


def test_resolve_prints_the_pinned_reference(images: dict[str, tuple[str, str]]) -> None:
    ref, digest = images["uid"]
    result = run_cli("resolve", ref)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{ref}@{digest}"
    as_json = json.loads(run_cli("resolve", ref, "--json", "--platform", "linux/amd64").stdout)
    assert as_json["pinned"] == f"{ref}@{digest}" and as_json["digest"] == digest


@pytest.mark.parametrize(
    ("image", "backend", "code", "failed"),
    [
        ("root", "docker", 1, {"non-root"}),
        ("uid", "docker", 0, set()),
        ("uid", "kubernetes", 0, set()),
        ("named", "docker", 0, set()),
        ("named", "kubernetes", 1, {"non-root"}),
        ("latest", "docker", 1, {"pinned"}),
    ],
)
def test_check_verdicts(images: dict[str, tuple[str, str]], image: str, backend: str, code: int, failed: set[str]) -> None:
    ref, digest = images[image]
    result = run_cli("check", ref, "--backend", backend, "--json")
    assert result.returncode == code, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert {c["check"] for c in report["checks"] if c["outcome"] == "fail"} == failed
    assert report["pinned"] == f"{ref}@{digest}"


def test_digest_reference_passes_pinned_even_for_latest(images: dict[str, tuple[str, str]]) -> None:
    ref, digest = images["latest"]
    result = run_cli("check", f"{ref}@{digest}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pinned by digest" in result.stdout


def test_user_override_is_checked(images: dict[str, tuple[str, str]]) -> None:
    ref, _ = images["uid"]
    result = run_cli("check", ref, "--user", "root")
    assert result.returncode == 1 and "runtime user override" in result.stdout


def test_text_report_names_input_pin_and_fix(images: dict[str, tuple[str, str]]) -> None:
    ref, digest = images["root"]
    out = run_cli("check", ref).stdout
    assert ref in out and digest in out and "REFUSED" in out and "fix: add `USER 10001`" in out


def test_policy_file_changes_the_verdict(images: dict[str, tuple[str, str]], tmp_path: Path) -> None:
    ref, _ = images["root"]
    policy = tmp_path / "imagegate.toml"
    policy.write_text('[checks]\nnon-root = "warn"\n')
    result = run_cli("check", ref, "--policy", str(policy))
    assert result.returncode == 0 and "WARN" in result.stdout
    discovered = run_cli("check", ref, cwd=tmp_path)
    assert discovered.returncode == 0


def test_registry_down_is_exit_2_with_a_clear_message() -> None:
    port = free_port()
    result = run_cli("check", f"127.0.0.1:{port}/team/etl:1.0.0", "--json")
    assert result.returncode == 2
    assert f"cannot reach 127.0.0.1:{port}" in result.stderr
    assert json.loads(result.stdout)["error"]["type"] == "RegistryUnreachable"


def test_bad_reference_and_bad_policy_are_exit_2(tmp_path: Path) -> None:
    bad = run_cli("resolve", "Team/ETL:1")
    assert bad.returncode == 2 and "invalid image reference 'Team/ETL:1'" in bad.stderr
    policy = tmp_path / "p.toml"
    policy.write_text("pined = true\n")
    result = run_cli("check", "127.0.0.1:1/x:1.0.0", "--policy", str(policy))
    assert result.returncode == 2 and "unknown key 'pined'" in result.stderr
    usage = run_cli("check")
    assert usage.returncode == 2


def test_unknown_tag_is_exit_2(stack: Stack) -> None:
    result = run_cli("resolve", f"{stack.registry}/{unique('none')}:1.0.0")
    assert result.returncode == 2 and "not found" in result.stderr


def test_auth_registry_through_docker_config_env(stack: Stack, tmp_path: Path) -> None:
    repo = unique("cli-private")
    digest = push_image(f"https://{stack.auth_registry}", repo, make_image(user="1000"), tag="1.0.0",
                        auth=(stack.auth_user, stack.auth_password), verify=str(stack.auth_ca))
    token = base64.b64encode(f"{stack.auth_user}:{stack.auth_password}".encode()).decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {f"https://{stack.auth_registry}": {"auth": token}}}))
    ref = f"{stack.auth_registry}/{repo}:1.0.0"
    ok = run_cli("check", ref, "--ca-file", str(stack.auth_ca), env={"DOCKER_CONFIG": str(tmp_path)})
    assert ok.returncode == 0, ok.stderr
    assert digest in ok.stdout
    denied = run_cli("check", ref, "--ca-file", str(stack.auth_ca), env={"DOCKER_CONFIG": str(tmp_path / "none")})
    assert denied.returncode == 2 and "docker login" in denied.stderr and stack.auth_password not in denied.stderr


def test_untrusted_tls_certificate_says_how_to_trust_it(stack: Stack) -> None:
    result = run_cli("resolve", f"{stack.auth_registry}/anything:1.0.0")
    assert result.returncode == 2
    assert "not trusted" in result.stderr and "--ca-file" in result.stderr
