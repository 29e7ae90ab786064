"""``ImagegateDockerOperator``: the provider's DockerOperator behind imagegate's gate.

Before anything is created the image is resolved (or built), checked and pinned
(``imagegate.plan_launch``); the container is created from ``REPO@sha256:…`` only, with
imagegate's Docker hardening (``imagegate.harden_docker``: no privilege escalation, every
capability dropped unless the policy allows it, no bind mount of a host path that gives away the
host), labelled with imagegate's label scheme, and verified before it starts: the engine's record of
the container must be the checked image, hardened, run as the checked user (``imagegate.verify_container``).

Killed tasks leave nothing behind. The container is labelled with the task instance (DAG, task, run, map
index, try) and the launching process; before a try creates its container it settles the containers of
earlier tries (``imagegate.settle_predecessors``): it reattaches to one that still runs this try's checked
launch (``durable=True``, the default, as the Kubernetes provider's ``durable``) — its output from the
start and its exit code become this try's — and stops and removes every other one. On SIGTERM
(``on_kill``) and on any exception that leaves it running, the container is stopped and removed
(``auto_remove="never"`` keeps it, stopped). Importing this module does not import the Kubernetes provider.
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
    :param auto_remove: the provider's ``never`` / ``success`` / ``force``; default ``success`` here (the
        provider's is ``never``). On kill the container is stopped and, unless ``never``, removed.
    :param durable: if the worker dies while the container runs, the next try reattaches to it (when it
        still runs the digest, hardening, user, command and entrypoint this try would launch) instead of
        starting a second one; with ``False`` the next try stops and removes it and starts afresh.

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
    imagegate_settled: Any = None  # imagegate.Settled: what this try did with earlier tries' containers

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
        auto_remove: str = "success",
        durable: bool = True,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("privileged"):  # refused whatever the policy: say so when the DAG is parsed, not at run time
            with _gate.airflow_errors():
                _gate._core().harden_docker({"privileged": True}, _gate._core().Policy())
        super().__init__(image=image or "", auto_remove=auto_remove, **kwargs)
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
            durable=bool(durable),
            _imagegate_context=None,
            _imagegate_killed=False,
            _imagegate_launch_id=None,
            _imagegate_reattached=None,
            _imagegate_adoption=None,
            _imagegate_retired=[],
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
        self._imagegate_context = context
        try:
            return super().execute(context)
        except BaseException:
            self._never_left_running()
            raise
        finally:  # a container that ran and failed is recorded too: what ran matters most after a failure
            if self._imagegate_adoption is not None:
                _gate._core().drop_adoption(self.hook.api_client, self._imagegate_adoption)
                self._imagegate_adoption = None
            _gate.push_record(context, self.imagegate_report, self.imagegate_launched)

    def on_kill(self) -> None:
        """SIGTERM (Airflow calls this from its signal handler): nothing more is created or started, and the
        container is stopped (SIGTERM, SIGKILL 3 s later: Airflow kills the task 5 s after its SIGTERM) and
        removed unless ``auto_remove="never"``. A container whose create call had not returned yet is found
        by its launch label. No Docker client is opened just for this: without one nothing was created."""
        self._imagegate_killed = True
        if not self.hook.client_created:
            self.log.info("imagegate: killed before any container was created")
            return
        for container in self._own_containers():
            self._retire(container, "the task was killed")
            self._imagegate_retired.append(container)

    def _own_containers(self) -> list[str]:
        """This try's container: the one created or reattached, and any labelled with this launch."""
        found = [c for c in ((self.container or {}).get("Id"), self._imagegate_reattached) if c]
        if self._imagegate_launch_id:
            try:
                listed = self.hook.api_client.containers(
                    all=True, filters={"label": f"imagegate.dev/launch={self._imagegate_launch_id}"})
            except Exception as exc:  # noqa: BLE001 - the container we know of is still retired below
                self.log.warning("imagegate: could not list this launch's containers: %s", exc)
                listed = []
            found += [c["Id"] for c in listed]
        return list(dict.fromkeys(found))

    def _retire(self, container: str, why: str) -> None:
        keep = self.auto_remove == "never"
        _gate._core().retire_container(self.hook.api_client, container, remove=not keep)
        if keep and not self._exists(container):
            keep = False  # it never started: nothing to keep (retire_container says why)
        self.log.info("imagegate: %s: container %s stopped%s", why, container[:12],
                      " and kept (auto_remove='never')" if keep else " and removed")

    def _exists(self, container: str) -> bool:
        try:
            self.hook.api_client.inspect_container(container)
        except Exception:  # noqa: BLE001 - not found (or the engine cannot say): not kept
            return False
        return True

    def _never_left_running(self) -> None:
        """After any exception: a container of this try that still runs is stopped (and removed unless "never")."""
        if not self.hook.client_created:
            return
        for container in self._own_containers():
            try:
                state = self.hook.api_client.inspect_container(container).get("State") or {}
            except Exception:  # noqa: BLE001 - gone already
                continue
            if state.get("Status") in ("running", "created", "paused", "restarting"):
                self._retire(container, "the task failed while its container ran")

    def _check_alive(self, container: str | None = None) -> None:
        """Raise :class:`~airflow_plugin._gate.TaskKilled` once ``on_kill`` ran (retiring *container*, created meanwhile, first)."""
        if not self._imagegate_killed:
            return
        if container and container not in self._imagegate_retired:
            self._retire(container, "the task was killed")
            self._imagegate_retired.append(container)
        done = "stopped and kept (auto_remove='never')" if self.auto_remove == "never" else "stopped and removed"
        retired = tuple(self._imagegate_retired)
        what = f"container {', '.join(c[:12] for c in retired)} {done}" if retired else "no container was created"
        raise _gate.TaskKilled(f"the task was killed (SIGTERM): {what}", retired)

    # -- the engine client: hardening and verification ----------------------------------

    @cached_property
    def _gated_cli(self) -> _GatedClient:
        return _GatedClient(self.hook.api_client, self)

    @property
    def cli(self) -> APIClient:
        return self._gated_cli  # type: ignore[return-value]


class _GatedClient:
    """The provider's docker ``APIClient`` with these changes; everything else passes through.

    - ``create_host_config`` merges in ``imagegate.harden_docker`` (the provider has no
      ``security_opt``/``cap_drop`` arguments; bind mounts of host paths that give away the host are refused);
    - ``create_container`` refuses a call for another image than the operator's, settles the containers of
      earlier tries of the task (``imagegate.settle_predecessors``: reattach to one, stop and remove the
      rest), and adds imagegate's labels (the task instance, the launching process);
    - after creating, it reads the engine's record of the container and removes the container without
      starting it unless that record is the plan (``imagegate.verify_container``: the checked image, the
      hardened ``HostConfig`` and mounts, the checked user);
    - a reattached container is attached with its output from the start and is never started again
      (it may have exited meanwhile: starting it would run the job twice);
    - after ``on_kill`` nothing is created or started, and a container that cannot be removed because it
      runs is stopped first.
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
        op._check_alive()
        # Whatever changed op.image or the host config after the gate, the engine's record decides below.
        core = _gate._core()
        identity = _gate.task_identity(op._imagegate_context)
        spec = core.spec_key(image=plan.launch, command=kwargs.get("command"), entrypoint=kwargs.get("entrypoint"),
                             user=kwargs.get("user"), working_dir=kwargs.get("working_dir"))
        if identity is not None:
            op.imagegate_settled = core.settle_predecessors(
                identity, plan, op._imagegate_policy, reattach=op.durable, spec=spec,
                keep_finished=op.auto_remove == "never", client=self._client, log=op.log.info)
            if op.imagegate_settled.reattached is not None:
                return self._reattach(op.imagegate_settled.reattached.id, plan)
        op._imagegate_launch_id = uuid.uuid4().hex
        kwargs["labels"] = core.container_labels(plan, orchestrator=_gate.ORCHESTRATOR, task=_gate.task_label(op),
                                                 launch_id=op._imagegate_launch_id, given=kwargs.get("labels"),
                                                 identity=identity, spec=spec)
        container = self._client.create_container(**kwargs)
        op._check_alive(container["Id"])
        record = self._client.inspect_container(container["Id"])
        try:
            actual = core.verify_container(record, plan, op._imagegate_policy,
                                           remove=lambda: self._client.remove_container(container["Id"], force=True),
                                           inspect_volume=self._client.inspect_volume)
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

    def _reattach(self, container: str, plan: LaunchPlan) -> dict[str, Any]:
        """This try takes over *container* of an earlier try (verified by ``settle_predecessors`` against
        this try's plan): recorded as adopted, so ``imagegate gc`` leaves it to this process."""
        op = self._operator
        op._imagegate_reattached = container
        op._imagegate_adoption = _gate._core().record_adoption(self._client, container, launch_id=uuid.uuid4().hex)
        image_id = str(self._client.inspect_container(container).get("Image") or "")
        op.imagegate_launched = {"pinned": str(plan.pinned), "launched": plan.launch, "container_id": container,
                                 "image_id": image_id, "reattached": True}
        return {"Id": container, "Warnings": []}

    def attach(self, container: Any, *args: Any, **kwargs: Any) -> Any:
        if container == self._operator._imagegate_reattached:
            # its output from the start, then live (the engine's log, followed: an attach that replays
            # logs can drop lines written between the replay and the live stream)
            return self._client.logs(container, stdout=kwargs.get("stdout", True), stderr=kwargs.get("stderr", True),
                                     stream=True, follow=True)
        return self._client.attach(container, *args, **kwargs)

    def start(self, container: Any, *args: Any, **kwargs: Any) -> Any:
        op = self._operator
        op._check_alive(container)
        if container == op._imagegate_reattached:
            op.log.info("imagegate: following container %s of an earlier try (not started again)", container[:12])
            return None
        return self._client.start(container, *args, **kwargs)

    def wait(self, container: Any, *args: Any, **kwargs: Any) -> Any:
        op = self._operator
        try:
            result = self._client.wait(container, *args, **kwargs)
        except Exception:
            if not op._imagegate_killed:
                raise
            result = None  # on_kill removed it: say so (below) rather than "no such container"
        op._check_alive()
        return result

    def remove_container(self, container: Any, *args: Any, **kwargs: Any) -> Any:
        """The provider's removal (``auto_remove``), made safe for a container that still runs (an interrupt
        between start and exit) or that ``on_kill`` already removed."""
        import docker.errors

        try:
            result = self._client.remove_container(container, *args, **kwargs)
        except docker.errors.NotFound:
            return None  # removed already (on_kill)
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: it runs, or a removal is under way
                raise
            _gate._core().retire_container(self._client, container, remove=True)
            return None
        _gate._core().drop_adoptions(self._client, container)
        return result


class LaunchTampered(_gate.HardeningViolation):
    """The engine created the container weaker than imagegate asked (its ``HostConfig``, mounts or user
    break the hardening): it was removed without starting. ``.problems`` names each field."""

    def __init__(self, error: Any) -> None:  # error: imagegate.HardeningError with .container
        self.problems = list(error.problems)
        self.runtime = error.runtime
        self.container = error.container
        AirflowException.__init__(self, str(error))  # the core's message: created, removed unstarted, find the cause
