"""Kubernetes' *restricted* Pod Security Standard, as a pure function over a pod.

``restricted_violations(pod)`` takes the pod as the API server sees it (a
camelCase dict, e.g. ``ApiClient().sanitize_for_serialization(v1pod)``) and
returns one sentence per violated rule, naming the container and the field.
The rules follow https://kubernetes.io/docs/concepts/security/pod-security-standards/
(baseline + restricted, v1.30).
"""

from __future__ import annotations

from typing import Any, Mapping

ALLOWED_VOLUME_TYPES = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)
ALLOWED_SECCOMP = frozenset({"RuntimeDefault", "Localhost"})


def restricted_violations(pod: Mapping[str, Any]) -> list[str]:
    """Every restricted-profile rule *pod* breaks (empty when it passes)."""
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
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(field) or []:
            problems.extend(_container_violations(container, pod_sc, f"{field}[{container.get('name')}]"))
    return problems


def _container_violations(container: Mapping[str, Any], pod_sc: Mapping[str, Any], where: str) -> list[str]:
    sc = container.get("securityContext") or {}
    problems: list[str] = []
    if sc.get("privileged"):
        problems.append(f"{where}.securityContext.privileged must be false")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}.securityContext.allowPrivilegeEscalation must be false")
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        problems.append(f"{where}.securityContext.capabilities.drop must include ALL")
    added = set(caps.get("add") or []) - {"NET_BIND_SERVICE"}
    if added:
        problems.append(f"{where}.securityContext.capabilities.add may only hold NET_BIND_SERVICE, not {sorted(added)}")
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
