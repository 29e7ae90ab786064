"""``ImagegateDockerOperator``: the provider's DockerOperator behind imagegate's gate.

Before anything is created the image is resolved (or built), checked and pinned
(``imagegate.plan_launch``); the container is created from ``REPO@sha256:…`` only, with
imagegate's Docker hardening (``imagegate.harden_docker``: no privilege escalation, every
capability dropped unless the policy allows it, no bind mount of a host path that gives away the
host), labelled with imagegate's label scheme, and verified before it starts: the engine's record of
the container must be the checked image, hardened, run as the checked user (``imagegate.verify_container``). Importing this module does not import
the Kubernetes provider.
"""

from __future__ import annotations

import os
import uuid
from functools import cached_property
from typing import TYPE_CHECKING, Any, Sequence

from airflow.exceptions import AirflowException
from airflow.providers.docker.operators.docker import DockerOperator

from airflow_plugin import _gate
from airflow_plugin.links import LaunchedImageLink

if TYPE_CHECKING:
    from docker import APIClient

    from imagegate import LaunchPlan, Policy, Report


class ImagegateDockerOperator(DockerOperator):
    """Run a container from a checked, digest-pinned image on a Docker Engine.

    Give exactly one of ``image`` (a reference), ``lock_name`` (a name in
    ``imagegate.lock.json``) or ``job_dir`` (a directory with a Dockerfile,
    built and pushed to ``repository``). Every other argument is the
    provider's ``DockerOperator`` argument, plus:

    :param policy: a :class:`imagegate.Policy`, a policy file path, or ``None`` for the nearest
        ``imagegate.toml`` / ``pyproject.toml [tool.imagegate]`` from the DAG file's folder.
    :param lock_file: the lock file for ``lock_name`` (default: ``$IMAGEGATE_LOCK_FILE`` or the nearest).
    :param repository: where ``job_dir`` builds are pushed. (templated)
    :param build_options: ``dockerfile``, ``build_args``, ``target``, ``platform``, ``tag_policy``.
    :param security_opt: more Docker security options (``no-new-privileges`` is always added).
    :param cap_drop: capabilities to drop (``ALL`` is always dropped); ``cap_add`` may add back only
        what the policy lists under ``allowed-capabilities``.

    XCom: ``return_value`` is the provider's (the last log line); ``imagegate`` the record
    ``{"pinned", "launched", "report"}``: the pinned reference, what the engine ran (container
    id, image id) and the check report — pushed whether the container succeeded or failed, and
    with ``launched: null`` when a check refused the image.
    """

    template_fields: Sequence[str] = (*DockerOperator.template_fields, "lock_name", "job_dir", "repository")
    operator_extra_links = (LaunchedImageLink(),)
    imagegate_gated = True  # the cluster policy leaves this operator alone
    imagegate_report: Report | None = None  # set by gate()
    imagegate_plan: LaunchPlan | None = None
    imagegate_launched: dict[str, Any] | None = None  # set when the container is created

    def __init__(
        self,
        *,
        image: str | None = None,
        lock_name: str | None = None,
        job_dir: str | None = None,
        repository: str | None = None,
        lock_file: str | os.PathLike[str] | None = None,
        build_options: dict[str, Any] | None = None,
        policy: Policy | str | os.PathLike[str] | None = None,
        security_opt: Sequence[str] | None = None,
        cap_drop: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("privileged"):  # refused whatever the policy: say so when the DAG is parsed, not at run time
            with _gate.airflow_errors():
                _gate._core().harden_docker({"privileged": True}, _gate._core().Policy())
        super().__init__(image=image or "", **kwargs)
        _gate.init_attributes(
            self,
            lock_name=lock_name,
            job_dir=job_dir,
            repository=repository,
            lock_file=lock_file,
            build_options=dict(build_options or {}),
            policy=policy,
            security_opt=list(security_opt or ()),
            cap_drop=list(cap_drop or ()),
        )
        _gate.validate_source(image, lock_name, job_dir, repository)

    # -- the gate ---------------------------------------------------------------------

    def gate(self, context: Any) -> Report:
        """Resolve (or build) the image, check it, and point ``self.image`` at the pinned digest.

        Raises :class:`~airflow_plugin.ImageRefused` (nothing is created) when a check fails, and
        :class:`~airflow_plugin.HardeningViolation` for an option that would weaken the hardening.
        """
        policy = _gate.load_policy(self.policy, _gate.dag_folder(self))
        with _gate.airflow_errors(context):
            # refuse weakening options before the registry is asked anything
            _gate._core().harden_docker(self._host_options(), policy)
        plan = _gate.plan(self, context, backend="docker", user=_gate.normalise_user(self.user), policy=policy)
        self.imagegate_plan, self.imagegate_report, self._imagegate_policy = plan, plan.report, policy
        self.image = plan.launch
        return plan.report

    def _host_options(self) -> dict[str, Any]:
        return {"privileged": self.privileged, "cap_add": self.cap_add, "cap_drop": self.cap_drop,
                "security_opt": self.security_opt, "ipc_mode": self.ipc_mode, "mounts": self.mounts}

    def execute(self, context: Any) -> Any:
        self.gate(context)
        return self.launch(context)

    def launch(self, context: Any) -> Any:
        """Run the container from the checked digest (call :meth:`gate` first)."""
        if self.imagegate_plan is None:
            raise _gate.ImageSourceError("launch() before gate(): nothing was checked", option="image")
        self.force_pull = False  # a digest never changes: pulling it again cannot fetch another image
        try:
            return super().execute(context)
        finally:  # a container that ran and failed is recorded too: what ran matters most after a failure
            _gate.push_record(context, self.imagegate_report, self.imagegate_launched)

    # -- the engine client: hardening and verification ----------------------------------

    @cached_property
    def _gated_cli(self) -> _GatedClient:
        return _GatedClient(self.hook.api_client, self)

    @property
    def cli(self) -> APIClient:
        return self._gated_cli  # type: ignore[return-value]


class _GatedClient:
    """The provider's docker ``APIClient`` with three changes; everything else passes through.

    - ``create_host_config`` merges in ``imagegate.harden_docker`` (the provider has no
      ``security_opt``/``cap_drop`` arguments; bind mounts of host paths that give away the host are refused);
    - ``create_container`` refuses a call for another image than the operator's and adds imagegate's labels;
    - after creating, it reads the engine's record of the container and removes the container without
      starting it unless that record is the plan (``imagegate.verify_container``: the checked image, the
      hardened ``HostConfig`` and mounts, the checked user).
    """

    def __init__(self, client: APIClient, operator: ImagegateDockerOperator) -> None:
        self._client = client
        self._operator = operator

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def create_host_config(self, **kwargs: Any) -> Any:
        op = self._operator
        given = {**kwargs, "security_opt": op.security_opt, "cap_drop": op.cap_drop}
        with _gate.airflow_errors():
            hardened = _gate._core().harden_docker(given, op._imagegate_policy)
        return self._client.create_host_config(**hardened)

    def create_container(self, **kwargs: Any) -> dict[str, Any]:
        op = self._operator
        plan = op.imagegate_plan
        if plan is None or kwargs.get("image") != op.image:
            raise _gate.ImageSourceError(f"refusing to create a container from unchecked image {kwargs.get('image')!r}")
        # Whatever changed op.image or the host config after the gate, the engine's record decides below.
        core = _gate._core()
        kwargs["labels"] = core.container_labels(plan, orchestrator=_gate.ORCHESTRATOR, task=_gate.task_label(op),
                                                 launch_id=uuid.uuid4().hex, given=kwargs.get("labels"))
        container = self._client.create_container(**kwargs)
        record = self._client.inspect_container(container["Id"])
        try:
            actual = core.verify_container(record, plan, op._imagegate_policy,
                                           remove=lambda: self._client.remove_container(container["Id"], force=True))
        except core.HardeningError as exc:
            raise LaunchTampered(exc) from exc
        except core.LaunchMismatch as exc:
            raise _gate.LaunchMismatch(exc.expected, exc.actual, exc.container) from exc
        op.imagegate_launched = {
            "pinned": str(plan.pinned),
            "launched": plan.launch,
            "container_id": container["Id"],
            "image_id": actual,
        }
        op.log.info("imagegate: container %s runs image %s (%s)", container["Id"][:12], actual, plan.pinned)
        return container


class LaunchTampered(_gate.HardeningViolation):
    """The engine created the container weaker than imagegate asked (its ``HostConfig``, mounts or user
    break the hardening): it was removed without starting. ``.problems`` names each field."""

    def __init__(self, error: Any) -> None:  # error: imagegate.HardeningError with .container
        self.problems = list(error.problems)
        self.runtime = error.runtime
        self.container = error.container
        AirflowException.__init__(self, str(error))  # the core's message: created, removed unstarted, find the cause
