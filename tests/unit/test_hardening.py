"""The one hardening rule set, as pure functions: tables of good and bad options for both runtimes."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from imagegate import HardeningError, Policy, docker_violations, harden_docker, harden_pod, restricted_violations

ALLOW_NET = Policy(allowed_capabilities=("NET_BIND_SERVICE",))


# -- Docker -------------------------------------------------------------------------------------------


def test_docker_defaults_are_added_and_user_options_kept() -> None:
    given = {"mem_limit": "64m", "security_opt": ["apparmor=docker-default"], "cap_drop": ["NET_RAW"]}
    kwargs = harden_docker(given, Policy())
    assert kwargs["mem_limit"] == "64m"
    assert kwargs["security_opt"] == ["apparmor=docker-default", "no-new-privileges:true"]
    assert kwargs["cap_drop"] == ["ALL", "NET_RAW"]
    assert given["cap_drop"] == ["NET_RAW"]  # the input is not changed
    assert harden_docker({"security_opt": ["no-new-privileges"]}, Policy())["security_opt"] == ["no-new-privileges"]
    assert docker_violations({"CapDrop": kwargs["cap_drop"], "SecurityOpt": kwargs["security_opt"]}, Policy()) == []


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"privileged": True}, "privileged=True"),
        ({"cap_add": ["SYS_ADMIN"]}, "cap_add SYS_ADMIN is refused"),
        ({"cap_add": ["cap_net_bind_service"]}, "cap_add NET_BIND_SERVICE is refused"),
        ({"security_opt": ["no-new-privileges:false"]}, "allows privilege escalation"),
        ({"security_opt": ["no-new-privileges=false"]}, "allows privilege escalation"),
        ({"security_opt": ["seccomp=unconfined"]}, "confinement"),
        ({"security_opt": ["apparmor:unconfined"]}, "confinement"),
        ({"security_opt": ["label=disable"]}, "confinement"),
        ({"pid_mode": "host"}, "pid_mode='host'"),
        ({"ipc_mode": "host"}, "ipc_mode='host'"),
        ({"userns_mode": "host"}, "userns_mode='host'"),
    ],
)
def test_docker_weakening_is_refused_naming_the_option(options: dict[str, Any], problem: str) -> None:
    with pytest.raises(HardeningError) as caught:
        harden_docker(options, Policy())
    assert any(problem in p for p in caught.value.problems), caught.value.problems
    assert "nothing was created" in str(caught.value)


def test_a_capability_the_policy_allows_may_be_added_back() -> None:
    kwargs = harden_docker({"cap_add": ["net_bind_service"]}, ALLOW_NET)
    assert kwargs["cap_add"] == ["NET_BIND_SERVICE"] and kwargs["cap_drop"] == ["ALL"]


def test_host_network_stays_allowed_on_docker() -> None:
    assert harden_docker({"network_mode": "host"}, Policy())["network_mode"] == "host"


def test_docker_violations_read_the_engines_host_config() -> None:
    assert docker_violations({"Privileged": True, "CapDrop": None, "CapAdd": ["NET_ADMIN"], "SecurityOpt": None}, Policy()) == [
        "HostConfig.Privileged is true", "HostConfig.CapDrop lacks ALL", "HostConfig.CapAdd holds ['NET_ADMIN']",
        "HostConfig.SecurityOpt lacks no-new-privileges",
    ]


# -- Kubernetes ------------------------------------------------------------------------------------------


def pod(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "main", "image": "x"}], **spec}}


def test_every_container_gets_the_restricted_defaults() -> None:
    given = pod(initContainers=[{"name": "init", "image": "y"}], ephemeralContainers=[{"name": "debug", "image": "z"}])
    hardened = harden_pod(given, Policy(), uid=10001, gid=10002)
    assert hardened["spec"]["securityContext"] == {
        "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}, "runAsUser": 10001, "runAsGroup": 10002,
    }
    for field in ("initContainers", "containers", "ephemeralContainers"):
        (container,) = hardened["spec"][field]
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False, "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }
    assert "securityContext" not in given["spec"]  # the input is not changed
    assert restricted_violations(hardened) == []


def test_user_values_are_kept_where_they_satisfy_the_profile() -> None:
    given = pod(securityContext={"fsGroup": 2000, "runAsUser": 2000, "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}})
    given["spec"]["containers"][0]["securityContext"] = {"readOnlyRootFilesystem": True, "capabilities": {"drop": ["NET_RAW"]}}
    hardened = harden_pod(given, Policy(), uid=10001)
    assert hardened["spec"]["securityContext"]["runAsUser"] == 2000  # yours wins
    assert hardened["spec"]["securityContext"]["seccompProfile"]["type"] == "Localhost"
    container = hardened["spec"]["containers"][0]["securityContext"]
    assert container["readOnlyRootFilesystem"] is True and container["capabilities"]["drop"] == ["ALL", "NET_RAW"]
    assert "seccompProfile" not in container  # the pod's own profile is not overridden per container


@pytest.mark.parametrize(
    ("container", "problem"),
    [
        ({"allowPrivilegeEscalation": True}, "allowPrivilegeEscalation must be false"),
        ({"privileged": True}, "privileged must be false"),
        ({"runAsUser": 0}, "runAsUser must not be 0"),
        ({"runAsNonRoot": False}, "runAsNonRoot must be true"),
        ({"capabilities": {"add": ["NET_ADMIN"]}}, "NET_BIND_SERVICE"),
        ({"capabilities": {"add": ["NET_BIND_SERVICE"]}}, "only when the policy allows it"),
        ({"seccompProfile": {"type": "Unconfined"}}, "seccompProfile.type"),
    ],
)
def test_kubernetes_contradictions_are_refused_naming_the_field(container: dict[str, Any], problem: str) -> None:
    given = pod()
    given["spec"]["containers"][0]["securityContext"] = container
    with pytest.raises(HardeningError) as caught:
        harden_pod(given, Policy(), uid=10001)
    assert any(problem in p and "containers[main]" in p for p in caught.value.problems), caught.value.problems


def test_net_bind_service_with_the_policy() -> None:
    given = pod()
    given["spec"]["containers"][0]["securityContext"] = {"capabilities": {"add": ["NET_BIND_SERVICE"]}}
    assert restricted_violations(harden_pod(given, ALLOW_NET, uid=10001), ALLOW_NET) == []


GOOD: dict[str, Any] = {
    "spec": {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "base", "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}],
        "volumes": [{"name": "x", "emptyDir": {}}],
    }
}


def _with(path: list[Any], value: Any) -> dict[str, Any]:
    result = copy.deepcopy(GOOD)
    node: Any = result
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return result


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["spec", "hostNetwork"], True, "hostNetwork"),
        (["spec", "hostPID"], True, "hostPID"),
        (["spec", "securityContext", "runAsNonRoot"], False, "runAsNonRoot must be true"),
        (["spec", "securityContext", "runAsUser"], 0, "runAsUser must not be 0"),
        (["spec", "securityContext", "seccompProfile"], {"type": "Unconfined"}, "seccompProfile"),
        (["spec", "containers", 0, "securityContext", "privileged"], True, "privileged"),
        (["spec", "containers", 0, "securityContext", "allowPrivilegeEscalation"], True, "allowPrivilegeEscalation"),
        (["spec", "containers", 0, "securityContext", "capabilities"], {"drop": ["NET_RAW"]}, "drop must include ALL"),
        (["spec", "containers", 0, "securityContext", "capabilities"], {"drop": ["ALL"], "add": ["SYS_ADMIN"]}, "NET_BIND_SERVICE"),
        (["spec", "containers", 0, "ports"], [{"containerPort": 80, "hostPort": 80}], "hostPort"),
        (["spec", "volumes"], [{"name": "h", "hostPath": {"path": "/"}}], "hostPath"),
    ],
)
def test_restricted_rules_catch_each_violation(path: list[Any], value: Any, message: str) -> None:
    assert restricted_violations(GOOD) == []
    problems = restricted_violations(_with(path, value))
    assert any(message in p for p in problems), problems
