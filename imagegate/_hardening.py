"""One hardening rule set for Docker and Kubernetes, chosen once. Pure: mappings in, mappings out.

Both runtimes get the same promises, each in its own vocabulary:

==========================  ===================================  ============================================
promise                     Docker (create / host-config kwargs)  Kubernetes (every container of the pod)
==========================  ===================================  ============================================
no privilege escalation     ``security_opt: no-new-privileges``  ``allowPrivilegeEscalation: false``
no capabilities             ``cap_drop: [ALL]``                  ``capabilities.drop: [ALL]``
added capabilities          refused unless the policy lists      refused unless the policy lists them, and
                            them (``allowed-capabilities``)      then only ``NET_BIND_SERVICE`` (restricted)
no privileged mode          ``privileged`` refused                ``privileged`` refused
no host namespaces          ``pid_mode``/``ipc_mode``/``userns``  ``hostPID``/``hostIPC``/``hostNetwork``
                            ``= host`` refused                    refused
confinement kept            ``seccomp``/``apparmor=unconfined``,  ``seccompProfile: RuntimeDefault`` (or
                            ``label=disable`` refused             ``Localhost``); no other volume types
non-root user               the checked user (``non-root``)       ``runAsNonRoot: true``, ``runAsUser`` the
                                                                  image's numeric uid when unset
==========================  ===================================  ============================================

A value the user set is kept when it satisfies the rules and refused, naming its field and the
fix, when it does not: nothing the user wrote is silently replaced, and nothing weaker is launched.
``network_mode="host"`` stays allowed on Docker (a laptop reaching a local database); Kubernetes'
restricted profile refuses ``hostNetwork``.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable, Mapping

from imagegate._errors import ImagegateError
from imagegate._policy import Policy

NO_NEW_PRIVILEGES = "no-new-privileges:true"
RUNTIME_DEFAULT = {"type": "RuntimeDefault"}
ALLOWED_VOLUME_TYPES = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)
ALLOWED_SECCOMP = frozenset({"RuntimeDefault", "Localhost"})
RESTRICTED_ADDABLE = frozenset({"NET_BIND_SERVICE"})
CONTAINER_FIELDS = ("initContainers", "containers", "ephemeralContainers")
_WEAKENING_OPTS = ("seccomp=unconfined", "seccomp:unconfined", "apparmor=unconfined", "apparmor:unconfined",
                   "label=disable", "label:disable", "systempaths=unconfined")


class HardeningError(ImagegateError, ValueError):
    """A launch option that would weaken the hardening; nothing was created. ``problems`` names each field."""

    _fields = ("problems",)

    def __init__(self, problems: Iterable[str], *, runtime: str) -> None:
        self.problems = tuple(problems)
        self.runtime = runtime
        what = "the restricted Pod Security Standard" if runtime == "kubernetes" else "imagegate's Docker hardening"
        super().__init__(
            f"the launch breaks {what} (nothing was created): " + "; ".join(self.problems)
            + ". Fix: remove the option that weakens it (or, for a capability, list it under allowed-capabilities "
            "in the policy)"
        )


def capability(name: str) -> str:
    """``cap_net_admin`` / ``CAP_NET_ADMIN`` / ``NET_ADMIN`` -> ``NET_ADMIN``."""
    return str(name).strip().upper().removeprefix("CAP_")


# -- Docker -------------------------------------------------------------------------------------------


def harden_docker(options: Mapping[str, Any] | None, policy: Policy) -> dict[str, Any]:
    """Docker create / host-config keyword arguments with the hardening merged in.

    Raises:
        HardeningError: naming each option that would weaken it.
    """
    kwargs = dict(options or {})
    problems: list[str] = []
    if kwargs.get("privileged"):
        problems.append("privileged=True undoes every other protection; add the one capability the job needs instead")
    for mode in ("pid_mode", "ipc_mode", "userns_mode"):
        if str(kwargs.get(mode) or "").lower() == "host":
            problems.append(f"{mode}='host' shares the host's namespace")
    for cap in kwargs.get("cap_add") or ():
        if capability(cap) not in policy.allowed_capabilities:
            problems.append(f"cap_add {capability(cap)} is refused (every capability is dropped); "
                            f"allow it with allowed-capabilities = [{capability(cap)!r}] in the policy")
    options_given = [str(opt) for opt in kwargs.get("security_opt") or ()]
    for opt in options_given:
        spelled = opt.replace(" ", "").lower()
        if spelled.startswith("no-new-privileges") and spelled.endswith(("false", "=0", ":0")):
            problems.append(f"security_opt {opt!r} allows privilege escalation")
        if spelled in _WEAKENING_OPTS:
            problems.append(f"security_opt {opt!r} removes the container's confinement")
    if problems:
        raise HardeningError(problems, runtime="docker")
    if not any(opt.replace(" ", "").lower().startswith("no-new-privileges") for opt in options_given):
        options_given.append(NO_NEW_PRIVILEGES)
    kwargs["security_opt"] = options_given
    kwargs["cap_drop"] = sorted({capability(c) for c in kwargs.get("cap_drop") or ()} | {"ALL"})
    if kwargs.get("cap_add"):
        kwargs["cap_add"] = sorted({capability(c) for c in kwargs["cap_add"]})
    return kwargs


def docker_violations(host_config: Mapping[str, Any], policy: Policy) -> list[str]:
    """What a container's ``HostConfig`` (as the engine reports it) breaks: a check that hardening held."""
    problems = []
    if host_config.get("Privileged"):
        problems.append("HostConfig.Privileged is true")
    if "ALL" not in {capability(c) for c in host_config.get("CapDrop") or ()}:
        problems.append("HostConfig.CapDrop lacks ALL")
    extra = {capability(c) for c in host_config.get("CapAdd") or ()} - set(policy.allowed_capabilities)
    if extra:
        problems.append(f"HostConfig.CapAdd holds {sorted(extra)}")
    if not any(str(o).replace("=", ":").startswith("no-new-privileges") and not str(o).endswith("false")
               for o in host_config.get("SecurityOpt") or ()):
        problems.append("HostConfig.SecurityOpt lacks no-new-privileges")
    return problems


# -- Kubernetes ---------------------------------------------------------------------------------------


def harden_pod(pod: Mapping[str, Any], policy: Policy, *, uid: int | None = None, gid: int | None = None) -> dict[str, Any]:
    """A copy of *pod* (a camelCase dict, as the API server reads it) under the restricted profile.

    Defaults fill what is unset — ``runAsNonRoot``, ``seccompProfile: RuntimeDefault``, ``runAsUser``
    / ``runAsGroup`` (*uid*/*gid*: the image's numeric user), and for every init, regular and
    ephemeral container ``allowPrivilegeEscalation: false`` and ``capabilities.drop: [ALL]``. Values
    the user set are kept; the result must then pass :func:`restricted_violations`.

    Raises:
        HardeningError: naming every field that breaks the profile.
    """
    result = copy.deepcopy(dict(pod))
    spec = result.setdefault("spec", {})
    pod_sc = spec.setdefault("securityContext", {}) or {}
    spec["securityContext"] = pod_sc
    pod_profile_given = "seccompProfile" in pod_sc
    pod_sc.setdefault("runAsNonRoot", True)
    pod_sc.setdefault("seccompProfile", dict(RUNTIME_DEFAULT))
    if uid is not None:
        pod_sc.setdefault("runAsUser", uid)
    if gid is not None:
        pod_sc.setdefault("runAsGroup", gid)
    for field in CONTAINER_FIELDS:
        for container in spec.get(field) or ():
            sc = container.setdefault("securityContext", {}) or {}
            container["securityContext"] = sc
            sc.setdefault("allowPrivilegeEscalation", False)
            sc.setdefault("runAsNonRoot", True)
            caps = sc.setdefault("capabilities", {}) or {}
            sc["capabilities"] = caps
            caps["drop"] = sorted({capability(c) for c in caps.get("drop") or ()} | {"ALL"})
            if not pod_profile_given:  # a profile the user chose for the pod is not overridden per container
                sc.setdefault("seccompProfile", dict(RUNTIME_DEFAULT))
    problems = restricted_violations(result, policy)
    if problems:
        raise HardeningError(problems, runtime="kubernetes")
    return result


def restricted_violations(pod: Mapping[str, Any], policy: Policy | None = None) -> list[str]:
    """Every rule of Kubernetes' *restricted* Pod Security Standard (v1.30, baseline included) that
    *pod* breaks, one sentence each naming the container and the field (empty when it passes).

    With a *policy*, added capabilities must also be listed in its ``allowed-capabilities``.
    """
    spec = pod.get("spec") or {}
    pod_sc = spec.get("securityContext") or {}
    problems: list[str] = []
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            problems.append(f"spec.{key} must be unset or false")
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if kinds - ALLOWED_VOLUME_TYPES:
            problems.append(f"volume {volume.get('name')!r} uses {sorted(kinds - ALLOWED_VOLUME_TYPES)}, not allowed")
    if pod_sc.get("runAsUser") == 0:
        problems.append("spec.securityContext.runAsUser must not be 0")
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in ALLOWED_SECCOMP:
        problems.append(f"spec.securityContext.seccompProfile.type {pod_seccomp!r} must be RuntimeDefault or Localhost")
    allowed = RESTRICTED_ADDABLE if policy is None else RESTRICTED_ADDABLE & set(policy.allowed_capabilities)
    for field in CONTAINER_FIELDS:
        for container in spec.get(field) or []:
            problems.extend(_container_violations(container, pod_sc, f"{field}[{container.get('name')}]", allowed))
    return problems


def _container_violations(container: Mapping[str, Any], pod_sc: Mapping[str, Any], where: str,
                          addable: frozenset[str] | set[str]) -> list[str]:
    sc = container.get("securityContext") or {}
    problems: list[str] = []
    if sc.get("privileged"):
        problems.append(f"{where}.securityContext.privileged must be false")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}.securityContext.allowPrivilegeEscalation must be false")
    caps = sc.get("capabilities") or {}
    if "ALL" not in {capability(c) for c in caps.get("drop") or []}:
        problems.append(f"{where}.securityContext.capabilities.drop must include ALL")
    added = {capability(c) for c in caps.get("add") or []} - set(addable)
    if added:
        problems.append(
            f"{where}.securityContext.capabilities.add may hold only NET_BIND_SERVICE, and only when the policy "
            f"allows it (allowed-capabilities), not {sorted(added)}"
        )
    non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
    if non_root is not True:
        problems.append(f"{where}: runAsNonRoot must be true (container or pod securityContext)")
    if sc.get("runAsUser") == 0:
        problems.append(f"{where}.securityContext.runAsUser must not be 0")
    seccomp = (sc.get("seccompProfile") or {}).get("type") or (pod_sc.get("seccompProfile") or {}).get("type")
    if seccomp not in ALLOWED_SECCOMP:
        problems.append(f"{where}: seccompProfile.type must be RuntimeDefault or Localhost (container or pod)")
    for port in container.get("ports") or []:
        if port.get("hostPort"):
            problems.append(f"{where}.ports: hostPort must be unset or 0")
    return problems
