"""The Pod Security Standards' baseline rules (and the restricted profile's exact comparisons) that every
Kubernetes door relies on: a table of fields the admission refuses, each refused by restricted_violations (the
read-back) and by harden_pod (the plan) naming its field, and a table of the values it allows, kept as written.

The oracle is k8s.io/pod-security-admission/policy/check_*.go (imagegate._hardening.PSA_SOURCE)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from imagegate import HardeningError, Policy, harden_pod, restricted_violations
from imagegate._hardening import SAFE_SYSCTLS

ALLOW_NET = Policy(allowed_capabilities=("NET_BIND_SERVICE",))
GOOD: dict[str, Any] = {
    "metadata": {"name": "p", "annotations": {"imagegate.dev/pinned": "x"}},
    "spec": {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "main", "image": "x",
                        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}],
    },
}
POD_SC = ["spec", "securityContext"]
MAIN_SC = ["spec", "containers", 0, "securityContext"]
ANNOTATIONS = ["metadata", "annotations"]


def _with(path: list[Any], value: Any) -> dict[str, Any]:
    """GOOD with *value* set at *path* (missing mappings created)."""
    result = copy.deepcopy(GOOD)
    node: Any = result
    for key in path[:-1]:
        node = node[key] if isinstance(key, int) else node.setdefault(key, {})
    node[path[-1]] = value
    return result


REFUSED = [
    (MAIN_SC + ["seLinuxOptions"], {"type": "spc_t"}, "containers[main].securityContext.seLinuxOptions.type"),
    (POD_SC + ["seLinuxOptions"], {"type": "unconfined_t"}, "spec.securityContext.seLinuxOptions.type"),
    (POD_SC + ["seLinuxOptions"], {"type": "container_engine_t"}, "spec.securityContext.seLinuxOptions.type"),
    (MAIN_SC + ["seLinuxOptions"], {"user": "system_u"}, "containers[main].securityContext.seLinuxOptions.user"),
    (POD_SC + ["seLinuxOptions"], {"role": "system_r"}, "spec.securityContext.seLinuxOptions.role"),
    (MAIN_SC + ["procMount"], "Unmasked", "containers[main].securityContext.procMount"),
    (MAIN_SC + ["appArmorProfile"], {"type": "Unconfined"}, "containers[main].securityContext.appArmorProfile.type"),
    (POD_SC + ["appArmorProfile"], {"type": "Unconfined"}, "spec.securityContext.appArmorProfile.type"),
    (ANNOTATIONS + ["container.apparmor.security.beta.kubernetes.io/main"], "unconfined",
     "container.apparmor.security.beta.kubernetes.io/main"),
    (ANNOTATIONS + ["container.apparmor.security.beta.kubernetes.io/other"], "unconfined",
     "container.apparmor.security.beta.kubernetes.io/other"),
    (ANNOTATIONS + ["seccomp.security.alpha.kubernetes.io/pod"], "unconfined", "seccomp.security.alpha.kubernetes.io/pod"),
    (ANNOTATIONS + ["container.seccomp.security.alpha.kubernetes.io/main"], "unconfined",
     "container.seccomp.security.alpha.kubernetes.io/main"),
    (POD_SC + ["sysctls"], [{"name": "kernel.shm_rmid_forced", "value": "1"}, {"name": "net.core.somaxconn", "value": "1"}],
     "spec.securityContext.sysctls[1].name 'net.core.somaxconn'"),
    (POD_SC + ["sysctls"], [{"name": "kernel/shm_rmid_forced", "value": "1"}], "sysctls[0].name"),  # compared exactly
    (POD_SC + ["sysctls"], [{"name": "net.ipv4.tcp_keepalive_time", "value": "60"}], "sysctls[0].name"),  # 1.29+ only
    (MAIN_SC + ["windowsOptions"], {"hostProcess": True}, "containers[main].securityContext.windowsOptions.hostProcess"),
    (POD_SC + ["windowsOptions"], {"hostProcess": True}, "spec.securityContext.windowsOptions.hostProcess"),
    (["spec", "containers", 0, "livenessProbe"], {"httpGet": {"host": "10.0.0.1", "port": 80}},
     "containers[main].livenessProbe.httpGet.host"),
    (["spec", "containers", 0, "lifecycle"], {"preStop": {"tcpSocket": {"host": "169.254.169.254", "port": 80}}},
     "containers[main].lifecycle.preStop.tcpSocket.host"),
    # the restricted rules, compared as the admission compares them
    (POD_SC + ["runAsNonRoot"], False, "spec.securityContext.runAsNonRoot"),  # even with every container's true
    (MAIN_SC + ["seccompProfile"], {}, "containers[main].securityContext.seccompProfile.type"),
    (MAIN_SC + ["capabilities"], {"drop": ["ALL"], "add": ["cap_net_bind_service"]},
     "containers[main].securityContext.capabilities.add"),
]


# harden_pod adds ALL to every drop list itself; the read-back must not take "all" for it
READ_BACK_ONLY = [(MAIN_SC + ["capabilities"], {"drop": ["all"]}, "containers[main].securityContext.capabilities.drop")]


@pytest.mark.parametrize(("path", "value", "field"), REFUSED + READ_BACK_ONLY)
def test_the_read_back_refuses_each_field_the_admission_refuses(path: list[Any], value: Any, field: str) -> None:
    pod = _with(path, value)
    if path == POD_SC + ["runAsNonRoot"]:
        pod["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] = True
    assert restricted_violations(GOOD, ALLOW_NET) == []
    problems = restricted_violations(pod, ALLOW_NET)
    assert any(field in p for p in problems), problems


@pytest.mark.parametrize(("path", "value", "field"), REFUSED)
def test_harden_pod_refuses_what_the_user_wrote_naming_the_field(path: list[Any], value: Any, field: str) -> None:
    """A user's value is never overwritten with a safe one: the launch is refused, naming it."""
    given = _with(path, value)
    before = copy.deepcopy(given)
    with pytest.raises(HardeningError) as caught:
        harden_pod(given, ALLOW_NET, uid=10001)
    assert any(field in p for p in caught.value.problems), caught.value.problems
    assert given == before


ALLOWED = [
    (MAIN_SC + ["seLinuxOptions"], {"type": "container_t", "level": "s0:c1,c2"}),
    (POD_SC + ["seLinuxOptions"], {"type": "", "level": "s0:c1,c2"}),
    (POD_SC + ["seLinuxOptions"], {"type": "container_init_t"}),
    (MAIN_SC + ["seLinuxOptions"], {"type": "container_kvm_t"}),
    (MAIN_SC + ["procMount"], "Default"),
    (MAIN_SC + ["appArmorProfile"], {"type": "RuntimeDefault"}),
    (POD_SC + ["appArmorProfile"], {"type": "Localhost", "localhostProfile": "k8s-apparmor-example"}),
    (ANNOTATIONS + ["container.apparmor.security.beta.kubernetes.io/main"], "runtime/default"),
    (ANNOTATIONS + ["container.apparmor.security.beta.kubernetes.io/main"], "localhost/k8s-apparmor-example"),
    (ANNOTATIONS + ["seccomp.security.alpha.kubernetes.io/pod"], "runtime/default"),
    (ANNOTATIONS + ["container.seccomp.security.alpha.kubernetes.io/main"], "localhost/profile.json"),
    (POD_SC + ["sysctls"], [{"name": name, "value": "1"} for name in sorted(SAFE_SYSCTLS)]),
    (MAIN_SC + ["windowsOptions"], {"hostProcess": False, "runAsUserName": "app"}),
    (["spec", "hostUsers"], False),
    (["spec", "hostUsers"], True),  # the baseline has no rule against it
    (["spec", "containers", 0, "readinessProbe"], {"httpGet": {"path": "/ready", "port": 8080}}),
    (["spec", "containers", 0, "lifecycle"], {"preStop": {"httpGet": {"host": "", "port": 8080}}}),
    (MAIN_SC + ["capabilities"], {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}),
]


@pytest.mark.parametrize(("path", "value"), ALLOWED)
def test_what_the_admission_allows_passes_and_is_kept_as_written(path: list[Any], value: Any) -> None:
    pod = _with(path, value)
    assert restricted_violations(pod, ALLOW_NET) == []
    hardened = harden_pod(pod, ALLOW_NET, uid=10001)
    node: Any = hardened
    for key in path:
        node = node[key]
    assert node == value


def test_the_safe_sysctls_are_those_every_release_from_1_28_allows() -> None:
    """check_sysctls.go at 1.27/1.28; later additions (1.29, 1.32, 1.37) are refused on purpose."""
    assert SAFE_SYSCTLS == {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies",
                            "net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start",
                            "net.ipv4.ip_local_reserved_ports"}


def test_every_kind_of_container_is_checked() -> None:
    pod = copy.deepcopy(GOOD)
    for field in ("initContainers", "ephemeralContainers"):
        pod["spec"][field] = [{"name": field, "securityContext": {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "procMount": "Unmasked"}}]
    problems = restricted_violations(pod)
    for field in ("initContainers", "ephemeralContainers"):
        assert any(f"{field}[{field}].securityContext.procMount" in p for p in problems), problems


def test_what_harden_pod_writes_passes_the_baseline() -> None:
    """The defaults written into a bare pod break none of the rules (nothing refused that the user did not write)."""
    bare = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "main", "image": "x"}],
                                                 "initContainers": [{"name": "init", "image": "y"}]}}
    assert restricted_violations(harden_pod(bare, Policy(), uid=10001, gid=10001)) == []
