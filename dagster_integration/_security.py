"""Hardened launch settings, as pure functions of the image's user (no Dagster, no clients).

- Docker: ``no-new-privileges``, every capability dropped, the user kept non-root.
- Kubernetes: the *restricted* Pod Security Standard: ``runAsNonRoot``, a numeric
  ``runAsUser`` (the kubelet can only verify a numeric UID), no privilege
  escalation, ``capabilities.drop: [ALL]``, ``seccompProfile: RuntimeDefault``.

A value the user already set is kept when it satisfies the profile; one that
contradicts it (``allowPrivilegeEscalation: true``, ``runAsUser: 0`` …) raises
:class:`ImagegateDagsterError` naming the key — nothing the user wrote is silently
replaced.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

import imagegate

from dagster_integration._errors import ImagegateDagsterError

DOCKER_SECURITY_OPT = "no-new-privileges:true"


numeric_user = imagegate.numeric_ids  # (uid, gid) of a numeric USER; the core owns the rule


def docker_hardening(container_kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``docker containers.create`` keyword arguments with the hardening merged in."""
    kwargs = dict(container_kwargs or {})
    if kwargs.get("privileged"):
        raise ImagegateDagsterError("privileged containers are refused; remove it", setting="container_kwargs.privileged")
    if kwargs.get("cap_add"):
        raise ImagegateDagsterError(
            "adding capabilities is refused (every capability is dropped); remove it",
            setting="container_kwargs.cap_add",
        )
    security_opt = list(kwargs.get("security_opt") or [])
    if not any(opt.replace("=", ":").startswith("no-new-privileges") for opt in security_opt):
        security_opt.append(DOCKER_SECURITY_OPT)
    elif any(opt.replace("=", ":") == "no-new-privileges:false" for opt in security_opt):
        raise ImagegateDagsterError("no-new-privileges:false is refused", setting="container_kwargs.security_opt")
    kwargs["security_opt"] = security_opt
    kwargs["cap_drop"] = sorted(set(kwargs.get("cap_drop") or []) | {"ALL"})
    return kwargs


def _require(mapping: dict[str, Any], key: str, value: Any, where: str) -> None:
    if key in mapping and mapping[key] is not None and mapping[key] != value:
        raise ImagegateDagsterError(
            f"{mapping[key]!r} contradicts the restricted Pod Security Standard (needs {value!r}); remove it",
            setting=f"{where}.{key}",
        )
    mapping[key] = value


def restricted_pod_spec(user: str | None, base_pod_spec: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """*base_pod_spec* (snake_case keys, as ``kubernetes.client.V1PodSpec`` attributes) with the
    restricted security context merged in; every container and init container gets the
    container-level settings.
    """
    spec = copy.deepcopy(dict(base_pod_spec or {}))
    uid, gid = numeric_user(user)
    if uid == 0:
        raise ImagegateDagsterError("the image user is root (UID 0); it cannot run under runAsNonRoot", setting="user")
    pod_ctx = dict(spec.get("security_context") or {})
    _require(pod_ctx, "run_as_non_root", True, "spec.securityContext")
    if uid is not None:
        _require(pod_ctx, "run_as_user", uid, "spec.securityContext")
    if gid is not None:
        _require(pod_ctx, "run_as_group", gid, "spec.securityContext")
    _require(pod_ctx, "seccomp_profile", {"type": "RuntimeDefault"}, "spec.securityContext")
    spec["security_context"] = pod_ctx
    spec["containers"] = [_restricted_container(c, f"spec.containers[{i}]") for i, c in enumerate(spec.get("containers") or [{}])]
    if spec.get("init_containers"):
        spec["init_containers"] = [
            _restricted_container(c, f"spec.initContainers[{i}]") for i, c in enumerate(spec["init_containers"])
        ]
    return spec


def _restricted_container(container: Mapping[str, Any], where: str) -> dict[str, Any]:
    result = dict(container)
    ctx = dict(result.get("security_context") or {})
    where = f"{where}.securityContext"
    if ctx.get("privileged"):
        raise ImagegateDagsterError("privileged containers are refused; remove it", setting=f"{where}.privileged")
    _require(ctx, "allow_privilege_escalation", False, where)
    _require(ctx, "run_as_non_root", True, where)
    caps = dict(ctx.get("capabilities") or {})
    if caps.get("add"):
        raise ImagegateDagsterError("adding capabilities is refused; remove it", setting=f"{where}.capabilities.add")
    caps["drop"] = sorted(set(caps.get("drop") or []) | {"ALL"})
    ctx["capabilities"] = caps
    result["security_context"] = ctx
    return result
