"""``ImagegateDockerClient``: dagster-docker's ``PipesDockerClient`` behind imagegate's gate.

``run()`` plans the launch first (``imagegate.plan_launch``); a refused image raises
:class:`ImageRefused` before any Docker call. Otherwise the container is created from
``registry/repository@sha256:…`` with imagegate's Docker hardening (``imagegate.harden_docker``)
and label scheme, compared with the plan as soon as the engine created it (``imagegate.verify_container``:
removed, never started, unless it is the checked image, hardened, as the checked user), run to completion through the parent's Pipes
session, and removed. The invocation's results carry the pinned reference, the report and the
last lines of the job's output in their metadata.

Killed steps leave nothing behind. The container is labelled with the step (root run, step key, run,
retry) and the launching process. Before a step creates its container it settles the containers of
earlier attempts of the same step — a re-execution of a killed run, or a retry
(``imagegate.settle_predecessors``): with ``reattach=True`` (the default) it follows one that still runs
this step's checked launch (its output from the start, its exit code), and stops and removes every other
one. An interrupted step (SIGTERM or SIGINT: Dagster raises in the step) stops its container (the
parent's ``finally``) and removes it before the error goes on.
"""

from __future__ import annotations

import atexit
import collections
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Mapping, Sequence

import dagster as dg
from dagster_docker import PipesDockerClient
from dagster_docker.pipes import PipesDockerLogsMessageReader
from dagster_pipes import PipesExtras

import imagegate

from dagster_integration._errors import ImagegateDagsterError, LaunchMismatch
from dagster_integration._invocation import ImagegateInvocation
from dagster_integration._resource import ImagegateResource, Preflight, task_identity

RUN_LABEL = "imagegate.dev/launch"  # imagegate.LABEL_LAUNCH: one id per launch, to find exactly that container
PINNED_LABEL = "imagegate.dev/pinned"
ORCHESTRATOR = "dagster"
OUTPUT_LINES = 20


class TailingDockerLogsReader(PipesDockerLogsMessageReader):
    """dagster-docker's log reader that also keeps the job's last output lines.

    Jobs without ``dagster-pipes`` inside (like the example) still get their
    stdout/stderr forwarded to the step's logs; the tail also goes into metadata.
    One reader belongs to one client, which runs one container at a time (as
    Dagster's executors call it: one step per process or thread).
    """

    def __init__(self) -> None:
        super().__init__()
        self.tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_LINES)

    def consume_docker_logs(self, container: Any) -> None:
        self.tail.clear()
        original = container.logs

        def logs(**kwargs: Any) -> Any:
            for chunk in original(**kwargs):
                text = chunk.decode("utf-8", "replace") if isinstance(chunk, bytes) else str(chunk)
                for line in text.splitlines():
                    if line and "__dagster_pipes_version" not in line:
                        self.tail.append(line)
                yield chunk

        container.logs = logs
        try:
            super().consume_docker_logs(container)
        finally:
            container.logs = original


class ImagegateDockerClient(PipesDockerClient):
    """A ``PipesDockerClient`` that launches only checked, digest-pinned, hardened containers.

    Args:
        imagegate: the settings (policy, lock file, build repository); default: discovered policy.
        env, registry, context_injector: as for ``PipesDockerClient``.
        remove: remove the container after it exits, in the background (default True; the
            parent leaves it). ``wait_for_removals()`` blocks until pending removals finish. A step that
            fails or is interrupted removes its container before the error goes on.
        reattach: a container of an earlier attempt of the step (a killed run's, re-executed) that still
            runs this step's checked launch is followed instead of starting a second one (default True);
            with False it is stopped and removed first.
    """

    def __init__(
        self,
        imagegate: ImagegateResource | None = None,
        *,
        env: Mapping[str, str] | None = None,
        registry: Mapping[str, str] | None = None,
        context_injector: Any = None,
        remove: bool = True,
        reattach: bool = True,
    ) -> None:
        super().__init__(env=env, registry=registry, context_injector=context_injector, message_reader=TailingDockerLogsReader())
        self.imagegate = imagegate or ImagegateResource()
        self.remove = remove
        self.reattach = reattach
        self.settled: imagegate.Settled | None = None  # what the last run() did with earlier attempts' containers
        self._local = threading.local()  # the launch in progress, per thread (a client may serve several steps)

    def run(  # type: ignore[override]
        self,
        *,
        context: dg.OpExecutionContext | dg.AssetExecutionContext,
        image: str | None = None,
        lock_name: str | None = None,
        job_directory: str | Path | None = None,
        command: str | Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
        extras: PipesExtras | None = None,
        registry: Mapping[str, str] | None = None,
        container_kwargs: Mapping[str, Any] | None = None,
        build_args: Mapping[str, str] | None = None,
        dockerfile: str | None = None,
    ) -> ImagegateInvocation:
        """Gate, then run the container to completion.

        Name the image by exactly one of *image* (a reference), *lock_name* (an
        entry of the resource's lock file) or *job_directory* (built and pushed).
        *user* overrides the image's ``USER`` (it is checked, too).

        Raises:
            ImageRefused: a check failed under enforce; no container was created.
            BuildRefused: lint errors refused the job directory's build; nothing was built or created.
            ImagegateDagsterError: a bad setting (``container_kwargs`` that weaken the hardening;
                ``dockerfile_lint`` declared where nothing is linted), before the registry is asked.
            DagsterPipesError: the container exited non-zero (from dagster-docker).
        """
        policy = self.imagegate.load_policy()
        kwargs = _hardened(container_kwargs, policy)  # bad kwargs fail before the registry is asked
        user = _user(user, kwargs)
        gate = self.imagegate.preflight(
            context, image=image, lock_name=lock_name, job_directory=job_directory, dockerfile=dockerfile,
            build_args=build_args, backend="docker", user=user, policy=policy,
        )
        launch_id = uuid.uuid4().hex
        identity = task_identity(context)
        spec = imagegate.spec_key(image=gate.launch, command=command, user=user)
        adopted, adoption, engine = None, None, None
        if identity is not None:
            import docker

            engine = docker.from_env()
            self.settled = imagegate.settle_predecessors(
                identity, gate.plan, policy, reattach=self.reattach, spec=spec, keep_finished=not self.remove,
                client=engine, log=context.log.info)
            if self.settled.reattached is not None:
                adopted = self.settled.reattached.id
                adoption = imagegate.record_adoption(engine, adopted, launch_id=launch_id)
        kwargs["labels"] = imagegate.container_labels(gate.plan, orchestrator=ORCHESTRATOR, task=_task(context),
                                                      launch_id=launch_id, given=kwargs.get("labels"),
                                                      identity=identity, spec=spec)
        if user:
            kwargs["user"] = user
        self._local.gate = gate
        self._local.policy = policy
        self._local.adopt = adopted
        failed = True
        try:
            try:
                inner = super().run(
                    context=context,
                    image=gate.launch,
                    extras=extras,
                    command=command,
                    env=env,
                    registry=registry,
                    container_kwargs=kwargs,
                )
                failed = False
            except BaseException:
                gate.log_checks(context)  # the step fails: record the checks now
                raise
        finally:
            self._local.gate = None
            self._local.adopt = None
            if adoption is not None and engine is not None:
                imagegate.drop_adoption(engine, adoption)
            if failed:  # a failed or interrupted step: never leave its container running; removed now
                _remove_containers(launch_id, adopted, keep=not self.remove)
            elif self.remove:
                _remove_in_background(launch_id, adopted)
            if engine is not None:
                engine.close()
        return ImagegateInvocation(inner, gate, self._output_tail())

    def _create_container(self, client: Any, image: str, *args: Any, **kwargs: Any) -> Any:
        """The parent's create, then the engine's record of the new container is compared with the plan
        (``imagegate.verify_container``: the checked image, the hardened ``HostConfig`` and mounts, the
        checked user); anything else is removed unstarted.

        dagster-docker has no public hook between creating and starting a container; this is the
        method its ``run`` calls for the create (and only that), so the check sits here.
        """
        gate: Preflight | None = getattr(self._local, "gate", None)
        adopted = getattr(self._local, "adopt", None)
        if adopted is not None and gate is not None and image == gate.launch:
            return _adopted(client.containers.get(adopted))
        container = super()._create_container(client, image, *args, **kwargs)
        if gate is None or image != gate.launch:
            container.remove(force=True)
            raise LaunchMismatch(f"refusing to run a container from unchecked image {image!r}")
        try:  # containers.create returns the engine's full record (docker inspect) as .attrs
            imagegate.verify_container(container.attrs, gate.plan, self._local.policy,
                                       remove=lambda: container.remove(force=True),
                                       inspect_volume=client.api.inspect_volume)
        except (imagegate.LaunchMismatch, imagegate.HardeningError) as exc:
            raise LaunchMismatch(str(exc)) from exc
        return container

    def _output_tail(self) -> list[str]:
        reader = self.message_reader
        return list(reader.tail) if isinstance(reader, TailingDockerLogsReader) else []


_removals: set[threading.Thread] = set()
_removals_lock = threading.Lock()


def _hardened(container_kwargs: Mapping[str, Any] | None, policy: imagegate.Policy) -> dict[str, Any]:
    try:
        return imagegate.harden_docker(container_kwargs, policy)
    except imagegate.HardeningError as exc:
        raise ImagegateDagsterError(str(exc), setting="container_kwargs") from exc


def _user(user: str | None, kwargs: Mapping[str, Any]) -> str | None:
    """The user the container will run as, so the gate checks that one: *user*, or ``container_kwargs["user"]``."""
    given = kwargs.get("user")
    if given is None or given == "":
        return user
    if user is not None and str(given) != str(user):
        raise ImagegateDagsterError(
            f"user={user!r} and container_kwargs['user']={given!r} disagree; give the user once (user=)",
            setting="container_kwargs",
        )
    return str(given)


def _task(context: Any) -> str:
    """The asset key (or op name) a container runs for: its ``imagegate.dev/task`` label."""
    keys = getattr(context, "selected_asset_keys", None) or ()
    return ",".join(sorted(k.to_user_string() for k in keys)) or getattr(getattr(context, "op", None), "name", "") or "-"


def _adopted(container: Any) -> Any:
    """A container of an earlier attempt that this step follows: the parent's ``start()`` must not start it
    again (it may have exited meanwhile: that would run the job twice), so it does nothing here."""

    def start(*args: Any, **kwargs: Any) -> None:
        return None

    container.start = start
    return container


def _remove_in_background(launch_id: str, container_id: str | None = None) -> None:
    """Remove the exited container off the step's critical path (``docker rm`` takes ~0.1 s).

    The process waits for pending removals when it exits (``atexit``); a process killed first
    leaves a stopped container labelled ``imagegate.dev/launch`` (``imagegate gc --older-than``).
    """
    thread = threading.Thread(target=_remove_containers, args=(launch_id, container_id),
                              name=f"imagegate-rm-{launch_id[:8]}", daemon=True)
    with _removals_lock:
        _removals.add(thread)
    thread.start()


def wait_for_removals(timeout: float = 30.0) -> None:
    """Block until the containers of finished launches are removed (tests, process exit)."""
    with _removals_lock:
        pending = list(_removals)
    deadline = time.monotonic() + timeout
    for thread in pending:
        thread.join(max(0.0, deadline - time.monotonic()))


atexit.register(wait_for_removals)


def _remove_containers(launch_id: str, container_id: str | None = None, *, keep: bool = False) -> None:
    """Stop and remove (with *keep*: only stop) the container(s) of this launch and the followed one."""
    import docker

    client = docker.from_env()
    try:
        found = [c["Id"] for c in client.api.containers(all=True, filters={"label": f"{RUN_LABEL}={launch_id}"})]
        for container in dict.fromkeys([*found, *([container_id] if container_id else [])]):
            imagegate.retire_container(client, container, remove=not keep)
    finally:
        client.close()
        with _removals_lock:
            _removals.discard(threading.current_thread())
