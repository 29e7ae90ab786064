"""Run a planned image on the Docker Engine the way a task launches it, with its output streamed here.

::

    LaunchPlan + RunSpec
        -> docker_launch()      pinned digest, hardened host config, imagegate's labels (pure)
        -> pull by digest       only when the engine does not have it (progress to ``progress``)
        -> create               nothing runs yet
        -> verify               the engine's record: the checked digest, a HostConfig and mounts that hold
                                the hardening, the checked user (verify_container): else removed, unstarted
        -> attach, start        stdout and stderr copied to two streams as they come
        -> wait, remove         the container's exit status; removed unless RunSpec.remove is False

Whatever interrupts the run — Ctrl-C, a signal handler raising, a closed output, an engine error —
the container of this launch (found again by its ``imagegate.dev/launch`` label, so even one whose
create call had not returned yet) is stopped (SIGTERM, SIGKILL after ``stop_timeout``) and removed
unless it is to be kept, before the exception goes on. The docker SDK loads only here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Callable, Iterable, Mapping

from imagegate._errors import ImagegateError, typed_errors
from imagegate._gate import LaunchMismatch, verify_container
from imagegate._hardening import HardeningError
from imagegate._policy import Policy
from imagegate._runspec import DockerLaunch, RunSpec, docker_launch, launch_filter

if TYPE_CHECKING:
    from imagegate._gate import LaunchPlan

Progress = Callable[[str], None]


class RunError(ImagegateError):
    """The engine could not run the container: ``stage`` is connect, pull, create, start, output or wait;
    ``container`` the container id when one was created (it was removed unless kept)."""

    _fields = ("stage", "container")

    def __init__(self, message: str, *, stage: str, container: str | None = None) -> None:
        self.stage = stage
        self.container = container
        super().__init__(message)


@dataclass(frozen=True)
class RunResult:
    """A finished run: the container, the image the engine ran it from, its exit status."""

    container_id: str
    image_id: str
    exit_code: int
    removed: bool
    launch_id: str
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.container_id,
            "name": self.name,
            "image_id": self.image_id,
            "launch_id": self.launch_id,
            "removed": self.removed,
        }


@typed_errors
def run_container(
    plan: LaunchPlan,
    spec: RunSpec,
    *,
    policy: Policy | None = None,
    stdout: IO[bytes] | None = None,
    stderr: IO[bytes] | None = None,
    progress: Progress | None = None,
    client: Any = None,
    launch_id: str | None = None,
    orchestrator: str = "cli",
    task: str = "-",
    on_created: Callable[[str], None] | None = None,
) -> RunResult:
    """Run *plan*'s digest as *spec* says, copy its output to *stdout* / *stderr*, return its exit status.

    *client* is a docker ``DockerClient`` or ``APIClient`` (default: one from the environment,
    ``DOCKER_HOST`` …); give it ``timeout=None`` when a job may be silent longer than its timeout.
    *on_created* is called with the container id as soon as the engine created it.

    Raises:
        RunOptionError, HardeningError: the spec is refused (nothing was created).
        LaunchMismatch: the engine created the container from another image (removed, never started).
        HardeningError: the created container's HostConfig or mounts break the hardening, or it runs as
            another user than the checked one (``.container`` set; removed, never started).
        RunError: the engine failed (``stage``); the container was removed unless kept.
    """
    policy = policy or Policy()
    launch = docker_launch(plan, spec, policy, launch_id=launch_id or uuid.uuid4().hex,
                           orchestrator=orchestrator, task=task)
    control, streaming = _clients(client)
    say = progress or (lambda line: None)
    _ensure_image(streaming, plan, policy, say)
    keep = not spec.remove
    container: str | None = None
    try:
        container = _create(control, launch)
        if on_created is not None:
            on_created(container)
        image_id = _verify(control, plan, policy, container)
        code = _attach_start_wait(control, streaming, container, stdout, stderr)
    except (LaunchMismatch, HardeningError):
        _discard(control, launch.launch_id, spec.stop_timeout, keep=False)  # never keep what was not the plan
        raise
    except BaseException:
        _discard(control, launch.launch_id, spec.stop_timeout, keep=keep)
        raise
    if not keep:
        _remove(control, container)
    return RunResult(container, image_id, code, not keep, launch.launch_id, spec.name)


# -- the engine ------------------------------------------------------------------------------------


def _clients(client: Any) -> tuple[Any, Any]:
    """(control, streaming) low-level clients: the streaming one has no read timeout (a job may be silent)."""
    if client is not None:
        api = getattr(client, "api", client)
        return api, api
    import docker  # only a run needs the docker SDK

    try:
        control = docker.from_env().api
        streaming = docker.from_env(timeout=None, version=control.api_version).api
    except (docker.errors.DockerException, OSError) as exc:
        raise RunError(f"cannot reach the Docker Engine: {exc}; start it or set DOCKER_HOST", stage="connect") from None
    return control, streaming


def _errors() -> Any:
    import docker.errors

    return docker.errors


def _engine() -> tuple[type[BaseException], ...]:
    """What a failed engine call raises: the SDK's errors, and the transport's (requests' are OSErrors)."""
    return (_errors().DockerException, OSError)


def _ensure_image(api: Any, plan: LaunchPlan, policy: Policy, say: Progress) -> None:
    """Pull the pinned digest unless the engine has it: a digest names one image, so nothing is re-pulled."""
    errors = _errors()
    try:
        api.inspect_image(plan.launch)
        return
    except errors.ImageNotFound:
        pass
    except _engine() as exc:
        raise RunError(f"the engine could not look up {plan.launch}: {_explain(exc)}", stage="pull") from None
    repository, _, digest = plan.launch.rpartition("@")
    say(f"pulling {plan.launch} ({policy.platform})")
    try:
        for item in api.pull(repository, tag=digest, stream=True, decode=True, platform=str(policy.platform)):
            _relay_pull(item, say)
    except RunError:
        raise
    except _engine() as exc:
        raise RunError(f"pulling {plan.launch} failed: {_explain(exc)}", stage="pull") from None


def _relay_pull(item: Mapping[str, Any], say: Progress) -> None:
    if "error" in item or "errorDetail" in item:
        message = item.get("error") or (item.get("errorDetail") or {}).get("message") or "unknown error"
        raise RunError(f"pull failed: {message}", stage="pull")
    status = item.get("status")
    if not status:
        return
    text = f"pull {item['id']}: {status}" if item.get("id") else f"pull: {status}"
    if item.get("progress"):
        say("\r" + f"{text} {item['progress']}")
    else:
        say(text)


def _create(api: Any, launch: DockerLaunch) -> str:
    try:
        host_config = api.create_host_config(**launch.host_config)
        created = api.create_container(host_config=host_config, **launch.create)
    except _engine() as exc:
        raise RunError(f"the engine refused to create the container: {_explain(exc)}", stage="create") from None
    return str(created["Id"])


def _verify(api: Any, plan: LaunchPlan, policy: Policy, container: str) -> str:
    """The engine's record of the created container: the checked image, hardened, as the checked user
    (:func:`~imagegate._gate.verify_container`, as in every Docker door). Returns its image id."""
    try:
        attrs = api.inspect_container(container)
    except _engine() as exc:
        raise RunError(f"cannot inspect the created container: {_explain(exc)}", stage="create", container=container) from None
    # on a refusal run_container discards it by its launch label
    return verify_container(attrs, plan, policy, inspect_volume=api.inspect_volume)


def _attach_start_wait(control: Any, streaming: Any, container: str, stdout: IO[bytes] | None,
                       stderr: IO[bytes] | None) -> int:
    errors = _errors()
    try:  # attached before it starts; logs=True also replays anything written before the attach took hold
        output = streaming.attach(container, stdout=True, stderr=True, stream=True, logs=True, demux=True)
    except errors.APIError:
        try:  # a log driver that cannot be read back (syslog, none): the live streams only, as docker run does
            output = streaming.attach(container, stdout=True, stderr=True, stream=True, logs=False, demux=True)
        except _engine() as exc:
            raise RunError(f"cannot attach to the container: {_explain(exc)}", stage="start", container=container) from None
    except _engine() as exc:
        raise RunError(f"cannot attach to the container: {_explain(exc)}", stage="start", container=container) from None
    try:
        try:
            control.start(container)
        except _engine() as exc:
            raise RunError(f"the container did not start: {_explain(exc)}", stage="start", container=container) from None
        _copy(output, stdout, stderr, container)
    finally:
        output.close()
    try:
        status = streaming.wait(container)
    except _engine() as exc:
        raise RunError(f"cannot read the exit status: {_explain(exc)}", stage="wait", container=container) from None
    return int(status.get("StatusCode", -1))


def _copy(frames: Iterable[tuple[bytes | None, bytes | None]], stdout: IO[bytes] | None,
          stderr: IO[bytes] | None, container: str) -> None:
    """Each frame to its stream as it comes, flushed (a person is watching)."""
    received = iter(frames)
    while True:
        try:
            frame = next(received, None)
        except OSError as exc:
            raise RunError(f"lost the container's output from the engine ({exc}); the container was stopped",
                           stage="output", container=container) from None
        if frame is None:
            return
        try:
            for data, sink in zip(frame, (stdout, stderr)):
                if data and sink is not None:
                    sink.write(data)
                    sink.flush()
        except (BrokenPipeError, ValueError) as exc:  # ValueError: a closed file
            raise RunError(f"the output stream was closed ({exc}); the container was stopped", stage="output",
                           container=container) from None


def _remove(api: Any, container: str) -> None:
    errors = _errors()
    try:
        api.remove_container(container, v=True, force=True)
    except errors.NotFound:
        pass
    except _engine() as exc:
        raise RunError(f"the container exited but could not be removed: {_explain(exc)}", stage="wait",
                       container=container) from None


def _discard(api: Any, launch_id: str, stop_timeout: int, *, keep: bool) -> None:
    """Stop every container of this launch (SIGTERM, then SIGKILL after *stop_timeout*) and remove it
    unless kept. A second interrupt during the grace period kills at once. Never raises: the error
    that brought us here is the one that matters."""
    try:
        containers = [c["Id"] for c in api.containers(all=True, filters=launch_filter(launch_id))]
    except BaseException:  # noqa: BLE001 - cleanup must not mask the original error
        return
    for container in containers:
        stopped = _attempt(lambda: api.stop(container, timeout=stop_timeout))
        if keep:
            if not stopped:
                _attempt(lambda: api.kill(container))
            continue
        for _ in range(3):  # a forced removal kills what the stop did not
            if _attempt(lambda: api.remove_container(container, v=True, force=True)):
                break


def _attempt(action: Callable[[], Any]) -> bool:
    """True when *action* succeeded or its container is already gone."""
    try:
        action()
    except BaseException as exc:  # noqa: BLE001 - a second Ctrl-C or an engine error: the caller escalates
        return isinstance(exc, _errors().NotFound)
    return True


def _explain(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc)
