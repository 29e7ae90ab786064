"""``ContainerTask``: declare a container task once, run it on Docker or on Kubernetes.

The backend is a setting, not code: ``backend=`` if given, else ``$IMAGEGATE_BACKEND``,
else ``[imagegate] backend`` in Airflow's config (``AIRFLOW__IMAGEGATE__BACKEND``), else
``docker``. An Airflow Variable is read only when the config says so
(``[imagegate] backend = variable:NAME``): a Variable at parse time is a metadata-DB
query in every parsing process, which Airflow's best practices advise against and which
costs DAG files ~50-80 ms. The Kubernetes provider is imported only when the backend is
``kubernetes``. Nothing here touches the network at parse time.

Shared arguments map to each backend:

==============  =====================  =========================================
ContainerTask   Docker                 Kubernetes
==============  =====================  =========================================
command         command                arguments (the image's CMD)
entrypoint      entrypoint             cmds (the image's ENTRYPOINT)
environment     environment            env_vars
user            user                   security_context.runAsUser (numeric only)
==============  =====================  =========================================

``durable`` (default True: a retry reattaches to the container or pod a killed try left running, else
stops and removes it) is an argument of both operators, so it is passed as is.

Backend-specific options go in ``docker_options={…}`` / ``kubernetes_options={…}``
(each used only on its backend). A backend-specific option passed directly
that the chosen backend does not take is refused with an error naming it and
its counterpart — never silently dropped.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import shlex
from typing import Any, Mapping

from airflow.exceptions import AirflowException

log = logging.getLogger(__name__)

BACKENDS = ("docker", "kubernetes")
VARIABLE = "imagegate_backend"

# Counterparts, for the error message when an option does not exist on the chosen backend.
_COUNTERPART: Mapping[str, str] = {
    "mounts": "kubernetes_options={'volumes': [...], 'volume_mounts': [...]}",
    "volumes": "docker_options={'mounts': [...]}",
    "volume_mounts": "docker_options={'mounts': [...]}",
    "cpus": "kubernetes_options={'container_resources': V1ResourceRequirements(...)}",
    "mem_limit": "kubernetes_options={'container_resources': V1ResourceRequirements(...)}",
    "container_resources": "docker_options={'cpus': ..., 'mem_limit': ...}",
    "network_mode": "nothing: pods use the cluster network",
    "namespace": "nothing: Docker has no namespaces",
    "env_vars": "environment= (shared)",
    "arguments": "command= (shared)",
    "cmds": "entrypoint= (shared)",
    "docker_url": "kubernetes_options={'kubernetes_conn_id': ...}",
    "kubernetes_conn_id": "docker_options={'docker_url': ...} or docker_conn_id",
    "privileged": "nothing: refused on both backends by the hardened defaults",
}


class BackendOptionError(AirflowException, TypeError):
    """An option the chosen backend does not take; ``.option`` and ``.backend`` name it."""

    def __init__(self, option: str, backend: str, hint: str | None = None) -> None:
        self.option = option
        self.backend = backend
        other = "kubernetes" if backend == "docker" else "docker"
        advice = f"; on {backend} use {hint}" if hint else ""
        super().__init__(
            f"ContainerTask option {option!r} is not a {backend}-backend option{advice}. "
            f"To keep one DAG for both backends, pass it as {other}_options={{{option!r}: ...}} "
            f"(used only on {other})"
        )


def _parse_backend(value: str, origin: str) -> str:
    chosen = value.strip().lower()
    if chosen not in BACKENDS:
        raise AirflowException(f"{origin} = {value!r} is not a backend; use 'docker' or 'kubernetes'")
    return chosen


@functools.lru_cache(maxsize=8)
def _variable_backend(name: str) -> str | None:
    """The Variable *name*, read once per process (None when unset or unreadable)."""
    try:
        from airflow.sdk import Variable

        value = Variable.get(name, default=None)
    except Exception as exc:  # no metadata DB / API at parse time: fall through to the default
        log.debug("imagegate: Variable %s not readable here (%s)", name, exc)
        return None
    return None if value in (None, "") else str(value)


@functools.lru_cache(maxsize=8)
def _configured_backend(environment_value: str | None) -> str:
    """``[imagegate] backend``, read once per process (per value of its environment override):
    ``conf.get`` costs ~0.3 ms, which a DAG of 100 tasks would otherwise pay 100 times."""
    from airflow.configuration import conf

    return conf.get("imagegate", "backend", fallback="docker") or "docker"


def backend_setting() -> str:
    """The configured backend: ``$IMAGEGATE_BACKEND``, ``[imagegate] backend`` (or the Variable it names), docker."""
    env = os.environ.get("IMAGEGATE_BACKEND")
    if env:
        return _parse_backend(env, "IMAGEGATE_BACKEND")
    configured = _configured_backend(os.environ.get("AIRFLOW__IMAGEGATE__BACKEND"))
    if configured.startswith("variable:"):
        name = configured.split(":", 1)[1] or VARIABLE
        return _parse_backend(_variable_backend(name) or "docker", f"Variable {name}")
    return _parse_backend(configured, "[imagegate] backend")


@functools.cache
def _accepted(cls: type) -> frozenset[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for param in inspect.signature(init).parameters.values():
            if param.kind in (param.KEYWORD_ONLY, param.POSITIONAL_OR_KEYWORD) and param.name != "self":
                names.add(param.name)
    return frozenset(names)


def _operator_class(backend: str) -> type:
    if backend == "kubernetes":
        from airflow_plugin.kubernetes import ImagegateKubernetesPodOperator

        return ImagegateKubernetesPodOperator
    from airflow_plugin.docker import ImagegateDockerOperator

    return ImagegateDockerOperator


def _preload_configured_backend() -> None:
    """Import the configured backend's operator module now, while the DAG file imports this one.

    Deferring it to the first ``ContainerTask(...)`` call would run the import inside the
    ``with DAG(...)`` block, several frames deeper than a plain DAG file's top-level import of
    ``DockerOperator``. On CPython 3.11 and 3.12 a call that keeps crossing a frame-stack chunk
    boundary maps and unmaps a chunk each time (python/cpython#142183, fixed in 3.13), and where
    the boundary falls depends on that depth: the docker SDK's urllib3 regex compiles hit it in
    the parse benchmark (5,600 extra mmap/munmap, ~40 ms on a 100-task DAG). Importing here keeps
    the import's stack shape close to a plain DAG file's. A setting that cannot be read cheaply
    (a Variable) or is invalid is left to the first call, which reports it with its fix.
    """
    try:
        env = os.environ.get("IMAGEGATE_BACKEND")
        configured = env or _configured_backend(os.environ.get("AIRFLOW__IMAGEGATE__BACKEND"))
        if configured.startswith("variable:"):
            return
        _operator_class(_parse_backend(configured, "backend"))
    except Exception as exc:  # reported with its fix by the first ContainerTask(...) call
        log.debug("imagegate: backend not preloaded (%s)", exc)


def ContainerTask(  # noqa: N802 - a factory that reads like the class it returns
    *,
    task_id: str,
    image: str | None = None,
    lock_name: str | None = None,
    job_dir: str | None = None,
    command: str | list[str] | None = None,
    entrypoint: str | list[str] | None = None,
    environment: dict[str, str] | None = None,
    user: str | int | None = None,
    backend: str | None = None,
    docker_options: Mapping[str, Any] | None = None,
    kubernetes_options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> Any:
    """Return an ``ImagegateDockerOperator`` or ``ImagegateKubernetesPodOperator`` for the backend setting.

    ``kwargs`` are BaseOperator arguments (``retries``, ``pool``…), imagegate's (``policy``,
    ``repository``, ``lock_file``, ``build_options``) or options of the chosen backend.
    """
    chosen = _parse_backend(backend, "backend=") if backend else backend_setting()
    cls = _operator_class(chosen)
    args: dict[str, Any] = {"task_id": task_id, "image": image, "lock_name": lock_name, "job_dir": job_dir}
    if chosen == "docker":
        shared = {"command": command, "entrypoint": entrypoint, "environment": environment, "user": user}
        specific = dict(docker_options or {})
    else:
        shared = {"arguments": _as_list(command), "cmds": _as_list(entrypoint), "env_vars": environment}
        specific = dict(kubernetes_options or {})
        if user is not None:
            from imagegate import numeric_ids  # the core's reading of a user; loaded only when one is given

            uid, gid = numeric_ids(str(user))
            if uid is None:
                raise BackendOptionError("user", chosen, "a numeric UID (runAsUser); the kubelet cannot check a user name")
            context = dict(specific.get("security_context") or {})
            context.setdefault("runAsUser", uid)
            if gid is not None:
                context.setdefault("runAsGroup", gid)
            specific["security_context"] = context
    args.update({k: v for k, v in shared.items() if v is not None})
    accepted = _accepted(cls)
    for name in kwargs:
        if name not in accepted:
            raise BackendOptionError(name, chosen, _COUNTERPART.get(name))
    for name in specific:
        if name not in accepted:
            raise BackendOptionError(name, chosen, _COUNTERPART.get(name))
    args.update(specific)  # a backend's own options win over the shared mapping
    return cls(**args, **kwargs)


def _as_list(value: str | list[str] | None) -> list[str] | None:
    """Docker splits a string command like a shell; do the same for the pod."""
    if value is None or isinstance(value, list):
        return value
    return shlex.split(value)


_preload_configured_backend()
