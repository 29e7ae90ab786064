"""The gate: an image source in, one immutable launch plan out. Every door (Airflow, Dagster, CLI) calls this.

::

    ImageSource(image= | lock_name= | job_dir=)
        -> reference          (as given; from the lock file; or built, linted once, pushed)
        -> check()            (one Report under the policy, for the backend and the runtime user)
        -> LaunchPlan         (the report, the pinned Reference, the launch string REPO@sha256:…,
                               the digests the engine may report running, the user to run as)

A refused image raises :class:`~imagegate.CheckFailed` (carrying the report, and for a helper
container its role and the fix) before anything is created. :func:`plan_pod` does the same for
every container of a Kubernetes pod — init containers, sidecars, containers from a pod template,
an XCom sidecar — and applies the restricted profile (:mod:`imagegate._hardening`).
After the runtime created the container, :func:`verify_container` (Docker: the engine's record of
the container — its image id, its ``HostConfig`` and mounts under the hardening, its user; every
Docker door calls it between create and start) and :meth:`PodPlan.verify_spec` /
:meth:`PodPlan.verify_status` (Kubernetes: the created pod's images, each container's user, the restricted
profile when the plan applied it, and each container status ``imageID``) refuse anything that is not the plan;
:meth:`PodPlan.verify_request` holds the pod about to be created to the same.

The one label scheme both runtimes carry is here too (:func:`container_labels`, :func:`pod_metadata`).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from imagegate._api import check, shared_client
from imagegate._checks import numeric_ids
from imagegate._errors import CheckFailed, ImagegateError, typed_errors
from imagegate._hardening import (
    CONTAINER_FIELDS,
    HardeningError,
    docker_violations,
    harden_pod,
    mount_violations,
    restricted_violations,
    volume_violations,
)
from imagegate._owner import LABEL_SPEC, LABEL_TASK_KEY, PREFIX, Launcher, TaskIdentity
from imagegate._policy import Backend, Policy
from imagegate._reference import Reference, launch_reference, parse_reference
from imagegate._report import Report

if TYPE_CHECKING:
    from imagegate._registry import RegistryClient
    from imagegate.build._builder import BuildResult
    from imagegate.build._lint import LintReport

LOCK_ENV = "IMAGEGATE_LOCK_FILE"
LABEL_PINNED = "imagegate.dev/pinned"  # the checked reference, REPO:TAG@sha256:… (a pod annotation)
LABEL_IMAGES = "imagegate.dev/images"  # a pod annotation: {container: pinned reference} as JSON
LABEL_LAUNCH = "imagegate.dev/launch"  # one id per launch, to find exactly that container again
LABEL_ORCHESTRATOR = "imagegate.dev/orchestrator"  # airflow | dagster | cli
LABEL_TASK = "imagegate.dev/task"  # Airflow DAG.TASK, Dagster asset or op


class SourceError(ImagegateError, ValueError):
    """The image source is not exactly one of image / lock name / job directory, or one is unusable.

    ``option`` names the argument to fix.
    """

    _fields = ("option",)

    def __init__(self, message: str, *, option: str | None = None) -> None:
        self.option = option
        super().__init__(message)


class LaunchMismatch(ImagegateError):
    """The runtime created a container from something other than the checked image (it was removed)."""

    _fields = ("expected", "actual", "container")

    def __init__(self, expected: tuple[str, ...], actual: str, container: str) -> None:
        self.expected = expected
        self.actual = actual
        self.container = container
        super().__init__(
            f"{container} was created from {actual}, not the checked image ({' / '.join(expected)}); "
            "it was removed without being trusted. Something changed the image between the check and the launch"
        )


@dataclass(frozen=True)
class BuildOptions:
    """How a job directory is built (see :func:`imagegate.build_image`)."""

    dockerfile: str | None = None
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    platform: str | None = None
    tag_policy: str = "content"
    lint: str = "on-build"  # "always": lint an image that is already up to date, too


@dataclass(frozen=True)
class ImageSource:
    """Where the image comes from: exactly one of ``image``, ``lock_name`` or ``job_dir``.

    ``start`` is the directory relative paths and the lock-file search start from (an Airflow
    DAG's folder, a Dagster component's folder; default: the working directory). The lock file is
    ``lock_file`` if given, else ``$IMAGEGATE_LOCK_FILE``, else the nearest ``imagegate.lock.json``
    from ``start`` upwards. ``job_dir`` is built and pushed to ``repository``.
    """

    image: str | Reference | None = None
    lock_name: str | None = None
    job_dir: str | os.PathLike[str] | None = None
    lock_file: str | os.PathLike[str] | None = None
    repository: str | None = None
    build: BuildOptions = field(default_factory=BuildOptions)
    start: str | os.PathLike[str] | None = None

    def validate(self) -> None:
        given = [name for name in ("image", "lock_name", "job_dir") if getattr(self, name)]
        if len(given) != 1:
            raise SourceError(
                "name exactly one image source — an image reference (image=), a lock-file name (lock_name=) or a "
                f"job directory to build (job_dir=, job_directory= in Dagster); got {', '.join(given) or 'none'}. "
                "E.g. image='registry.example.com/team/etl:1.4.2' or lock_name='etl'",
                option=given[1] if len(given) > 1 else "image",
            )
        if self.job_dir and not self.repository:
            raise SourceError(
                f"job_dir={str(self.job_dir)!r} needs repository= (where the image is pushed), "
                "e.g. 'registry.example.com/jobs/etl'",
                option="repository",
            )

    @property
    def base(self) -> Path:
        return Path(self.start) if self.start else Path.cwd()

    def lock_path(self) -> Path:
        """The lock file this source reads ``lock_name`` from (the one rule for every door)."""
        from imagegate.build._lockfile import LOCK_FILE, find_lock_file

        given = self.lock_file or os.environ.get(LOCK_ENV)
        if given:
            path = Path(given)
            return path if path.is_absolute() else self.base / path
        found = find_lock_file(self.base)
        if found is None:
            raise SourceError(
                f"lock_name={self.lock_name!r} needs a lock file: none named {LOCK_FILE} in {self.base} or its "
                f"parents; pass lock_file= or set {LOCK_ENV}",
                option="lock_file",
            )
        return found


@dataclass(frozen=True)
class LaunchPlan:
    """What passed the gate, and exactly what to launch.

    ``launch`` is ``REGISTRY/REPO@sha256:…`` (no tag: nothing downstream can resolve one again);
    ``image_ids`` the digests the runtime may report for it (the image config digest a Docker
    Engine calls the image id, the platform manifest digest, the launched digest); ``uid``/``gid``
    the numeric user to run as where known (Kubernetes' ``runAsUser``/``runAsGroup``).
    """

    report: Report
    pinned: Reference
    launch: str
    backend: Backend
    user: str | None
    uid: int | None
    gid: int | None
    image_ids: frozenset[str]
    role: str | None = None
    build: BuildResult | None = field(default=None, compare=False)
    lint: LintReport | None = field(default=None, compare=False)

    @property
    def digest(self) -> str:
        return self.pinned.digest or ""

    def verify(self, reported: str, *, container: str) -> None:
        """Raise :class:`LaunchMismatch` unless *reported* (an image id or ``repo@sha256:…``) is this plan's."""
        digest = reported_digest(reported)
        if digest not in self.image_ids:
            raise LaunchMismatch(tuple(sorted(self.image_ids)), reported, container)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pinned": str(self.pinned),
            "launch": self.launch,
            "backend": self.backend.value,
            "user": self.user,
            "role": self.role,
            "report": self.report.to_dict(),
            "build": self.build.to_dict() if self.build is not None else None,
            "lint": self.lint.to_dict() if self.lint is not None else None,
        }


def reported_digest(reported: str) -> str:
    """The digest in what a runtime reports: ``sha256:…``, ``repo@sha256:…`` or ``docker-pullable://repo@sha256:…``."""
    return reported.rpartition("@")[2] if "@" in reported else reported


@typed_errors
def plan_launch(
    source: ImageSource,
    *,
    backend: str | Backend = Backend.DOCKER,
    user: str | None = None,
    policy: Policy | None = None,
    client: RegistryClient | None = None,
    progress: Callable[[str], None] | None = None,
    role: str | None = None,
    fix: str | None = None,
    today: dt.date | None = None,
) -> LaunchPlan:
    """Resolve (or build) *source*, check it for *backend* as *user*, and return what to launch.

    Raises:
        SourceError: the source names no image or more than one, or lacks what it needs.
        CheckFailed: a check failed under enforce (``.report``; ``.role``/``.fix`` for a helper).
        LintFailed: lint errors refused a job directory's build (``imagegate.build``).
        ImagegateError: bad reference, unreadable lock file, unreachable registry, …
    """
    source.validate()
    policy = policy or Policy()
    mode = Backend.parse(backend)
    reference, build, lint = _reference_of(source, policy, client, progress)
    report = check(reference, backend=mode, user=user, policy=policy, client=client, today=today)
    if not report.passed or report.pinned is None:
        raise CheckFailed(report, role=role, fix=fix, build=build, lint=lint)
    pinned = parse_reference(report.pinned)
    facts = report.facts or {}
    uid, gid = numeric_ids(user if user is not None else report.user)
    return LaunchPlan(
        report=report,
        pinned=pinned,
        launch=launch_reference(report.pinned),
        backend=mode,
        user=user,
        uid=uid,
        gid=gid,
        image_ids=frozenset(d for d in (facts.get("config_digest"), facts.get("manifest_digest"), facts.get("digest")) if d),
        role=role,
        build=build,
        lint=lint,
    )


def _reference_of(source: ImageSource, policy: Policy, client: RegistryClient | None,
                  progress: Callable[[str], None] | None) -> tuple[str | Reference, Any, Any]:
    if source.image:
        image = source.image
        return (image.strip() if isinstance(image, str) else image), None, None
    if source.lock_name:
        from imagegate.build._lockfile import LockFile

        return LockFile.load(source.lock_path()).get(source.lock_name), None, None
    from imagegate.build._builder import build_image  # the build wing loads only for job_dir=

    context = Path(source.job_dir or "")
    context = context if context.is_absolute() else source.base / context
    if not context.is_dir():
        raise SourceError(f"job_dir={str(source.job_dir)!r}: {context} is not a directory", option="job_dir")
    options = source.build
    result = build_image(
        context,
        repository=source.repository or "",
        dockerfile=options.dockerfile,
        target=options.target,
        build_args=dict(options.build_args),
        platform=options.platform,
        tag_policy=options.tag_policy,
        policy=policy,
        progress=progress,
        client=client or shared_client(policy.insecure_registries),
        lint=options.lint,
    )
    return result.pinned, result, result.lint


# -- pods -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PodPlan:
    """A pod with every container's image checked and pinned (and the restricted profile applied).

    ``hardened`` says whether :func:`plan_pod` applied the restricted profile (under ``policy``): then
    every later look at the pod — before it is created, as the API server stored it, on a retry's
    reattach — holds it to that profile too, not only to the images.
    """

    pod: dict[str, Any]  # camelCase, as the API server reads it
    plans: Mapping[str, LaunchPlan]  # container name -> its plan
    hardened: bool = False
    policy: Policy | None = field(default=None, compare=False)

    def verify_request(self, pod: Mapping[str, Any]) -> None:
        """The pod about to be created — after whatever ran between the plan and the create call (a provider
        callback gets the very object) — is still the plan: its images, users and profile, and this launch.

        Raises:
            LaunchMismatch: a container's image is not its planned one.
            HardeningError: (no ``.container``: nothing was created) a container runs another user than the
                one checked, the pod breaks the restricted profile it was planned under, or it is not this launch.
        """
        self._verify_images(pod)
        problems = self._problems(pod)
        launch = ((self.pod.get("metadata") or {}).get("labels") or {}).get(LABEL_LAUNCH)
        given = ((pod.get("metadata") or {}).get("labels") or {}).get(LABEL_LAUNCH)
        if launch and given != launch:
            problems.append(f"metadata.labels[{LABEL_LAUNCH}] is {given!r}, not this launch's {launch!r}. Fix: create "
                            "the pod this plan returned; nothing may relabel it")
        if problems:
            raise HardeningError(problems, runtime="kubernetes")

    def verify_spec(self, created: Mapping[str, Any]) -> None:
        """The pod as the API server stored it (after admission webhooks), or an earlier try's pod a retry
        would reattach to, runs exactly the planned images, each as the user the gate checked it as, and
        (``hardened``) passes the restricted profile.

        Raises:
            LaunchMismatch: a container's image is not its planned one.
            HardeningError: (``.container`` is the pod's name) another user, or the profile is broken.
        """
        self._verify_images(created)
        problems = self._problems(created)
        if problems:
            name = str((created.get("metadata") or {}).get("name") or "(the created pod)")
            raise HardeningError(problems, runtime="kubernetes", container=name)

    def _verify_images(self, pod: Mapping[str, Any]) -> None:
        for container in _containers(pod):
            plan = self.plans.get(container.get("name", ""))
            image = container.get("image", "")
            if plan is None or image != plan.launch:
                expected = (plan.launch,) if plan else tuple(sorted(p.launch for p in self.plans.values()))
                raise LaunchMismatch(expected, image or "(no image)", f"container {container.get('name')!r} of the pod")

    def _problems(self, pod: Mapping[str, Any]) -> list[str]:
        """Users that are not the checked ones, then (``hardened``) every break of the restricted profile."""
        problems = self._user_problems(pod)
        if self.hardened:
            problems += restricted_violations(pod, self.policy)
        return problems

    def _user_problems(self, pod: Mapping[str, Any]) -> list[str]:
        return [problem for container in _containers(pod)
                if (problem := self._user_problem(pod, container.get("name", ""))) is not None]

    def _user_problem(self, pod: Mapping[str, Any], name: str) -> str | None:
        """Whether container *name* runs as the user its image was checked as (the non-root check holds for
        that user only). Kubernetes runs the container's ``runAsUser``, else the pod's, else the image's USER.

        A plan checked as the image's USER (no override) accepts no ``runAsUser`` or exactly that USER's
        numeric uid (what :func:`harden_pod` sets); a plan checked as an override accepts exactly its uid.
        """
        plan = self.plans.get(name)
        if plan is None:
            return None  # _verify_images refused it already
        effective = pod_user(pod, name)
        if effective is None and plan.user is None:
            return None
        if effective is not None and plan.uid is not None and effective == str(plan.uid):
            return None
        checked = plan.user if plan.user is not None else plan.report.user
        runs = f"runAsUser {effective}" if effective is not None else "the image's USER (no runAsUser)"
        return (f"container {name!r} runs as {runs}, not the user imagegate checked ({checked!r}). Fix: set runAsUser "
                "in the pod before it is gated (the task's security contexts or pod template), not in a callback or "
                "mutating webhook that changes the pod after the check")

    def verify_status(self, created: Mapping[str, Any]) -> None:
        """Every container status that reports an ``imageID`` reports one of its plan's digests."""
        status = created.get("status") or {}
        for field_name in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"):
            for entry in status.get(field_name) or ():
                image_id = entry.get("imageID") or ""
                plan = self.plans.get(entry.get("name", ""))
                if image_id and plan is not None:
                    plan.verify(image_id, container=f"container {entry.get('name')!r} of the pod")


def verify_pod_images(pod: Mapping[str, Any]) -> None:
    """For a pod :func:`plan_pod` made (its ``imagegate.dev/images`` annotation), found again after a
    restart or a deferral: every container runs its pinned digest, by spec and by status."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    try:
        images = json.loads(annotations.get(LABEL_IMAGES) or "{}")
    except ValueError:
        images = {}
    expected = {name: parse_reference(ref).digest for name, ref in images.items() if isinstance(ref, str)}
    for container in _containers(pod):
        name = container.get("name", "")
        digest = expected.get(name)
        image = container.get("image", "")
        if digest is None or reported_digest(image) != digest:
            raise LaunchMismatch((digest or "(not planned)",), image, f"container {name!r} of the pod")
    status = pod.get("status") or {}
    for field_name in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"):
        for entry in status.get(field_name) or ():
            image_id = entry.get("imageID") or ""
            digest = expected.get(entry.get("name", ""))
            if image_id and digest and reported_digest(image_id) != digest:
                raise LaunchMismatch((digest,), image_id, f"container {entry.get('name')!r} of the pod")


def pod_user(pod: Mapping[str, Any], container: str) -> str | None:
    """The ``runAsUser`` *container* of *pod* runs as (its own, else the pod's), as text; None when unset."""
    spec = pod.get("spec") or {}
    for entry in _containers(pod):
        if entry.get("name") == container:
            value = (entry.get("securityContext") or {}).get("runAsUser")
            if value is not None:
                return str(value)
    value = (spec.get("securityContext") or {}).get("runAsUser")
    return None if value is None else str(value)


@typed_errors
def plan_pod(
    pod: Mapping[str, Any],
    *,
    policy: Policy | None = None,
    primary: LaunchPlan | None = None,
    primary_container: str | None = None,
    harden: bool = True,
    roles: Mapping[str, str] | None = None,
    fixes: Mapping[str, str] | None = None,
    client: RegistryClient | None = None,
    today: dt.date | None = None,
    orchestrator: str | None = None,
    task: str | None = None,
    identity: TaskIdentity | None = None,
    launch_id: str | None = None,
) -> PodPlan:
    """Gate every container of *pod* (init, regular, ephemeral): check each image, pin it, and with
    *harden* apply the restricted profile. *primary* is the already planned image of
    *primary_container* (the task's own); every other container is checked as a reference, as the
    user it will run as. ``roles``/``fixes`` name a helper container and how to fix its refusal.

    Raises:
        CheckFailed: a container's image is refused (``.role`` names it); nothing is created.
        HardeningError: the pod breaks the restricted profile, or gives *primary_container* another
            ``runAsUser`` than the user *primary* was checked as.
    """
    policy = policy or Policy()
    roles, fixes = roles or {}, fixes or {}
    result = copy.deepcopy(dict(pod))
    plans: dict[str, LaunchPlan] = {}
    if primary is not None and primary_container is not None:
        plans[primary_container] = primary
    if harden:
        result = harden_pod(result, policy, uid=primary.uid if primary else None, gid=primary.gid if primary else None)
    for container in _containers(result):
        name = container.get("name", "")
        plan = plans.get(name)
        if plan is None:
            image = container.get("image")
            role = roles.get(name, f"container {name!r}")
            if not image:
                raise SourceError(f"{role} has no image", option=f"containers[{name}].image")
            plan = plan_launch(
                ImageSource(image=image), backend=Backend.KUBERNETES, user=pod_user(result, name), policy=policy,
                client=client, role=role, fix=fixes.get(name), today=today,
            )
            plans[name] = plan
        container["image"] = plan.launch
        container["imagePullPolicy"] = "IfNotPresent"
    metadata = result.setdefault("metadata", {}) or {}
    result["metadata"] = metadata
    labels, annotations = pod_metadata(
        primary, images={name: str(plan.pinned) for name, plan in plans.items()}, orchestrator=orchestrator, task=task,
        identity=identity, launch_id=launch_id,
    )
    metadata["labels"] = {**(metadata.get("labels") or {}), **labels}
    metadata["annotations"] = {**(metadata.get("annotations") or {}), **annotations}
    planned = PodPlan(result, plans, hardened=harden, policy=policy)
    # Each helper was just checked as the user it runs as; the primary was planned before this pod was seen,
    # so a runAsUser the pod gives it (a template, a base pod spec) must be the one its image was checked as.
    problems = planned._user_problems(result)
    if problems:
        raise HardeningError(problems, runtime="kubernetes")
    return planned


def _containers(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    spec = pod.get("spec") or {}
    return [c for field_name in CONTAINER_FIELDS for c in (spec.get(field_name) or ())]


# -- Docker: the created container ------------------------------------------------------------------


def verify_container(inspect: Mapping[str, Any], plan: LaunchPlan, policy: Policy, *,
                     remove: Callable[[], object] | None = None,
                     inspect_volume: Callable[[str], Mapping[str, Any]] | None = None) -> str:
    """The engine's record of a created, not yet started container (``docker inspect``) against *plan*.

    What the engine recorded decides, not what a door asked for: the image id must be the checked
    image (:meth:`LaunchPlan.verify`); ``HostConfig`` and ``Mounts`` must hold the hardening
    (:func:`~imagegate._hardening.docker_violations`, :func:`~imagegate._hardening.mount_violations`:
    privileged mode, capabilities, no-new-privileges, confinement, host namespaces, host paths); and
    ``Config.User`` must be the user the gate checked (the override, else the image's ``USER``). With
    *inspect_volume* (``APIClient.inspect_volume``) each named volume mounted is looked up: one created
    beforehand with the local driver's ``type``/``o``/``device`` options mounts what they name, and the
    container's record shows only its name (:func:`~imagegate._hardening.volume_violations`).
    Every Docker door calls this between create and start. On a failure *remove* is called first (the
    container must never start), then the error is raised. Returns the container's image id.

    Raises:
        LaunchMismatch: the container's image is not the checked one.
        HardeningError: (``.container`` set) its configuration breaks the hardening or runs another user.
    """
    container = str(inspect.get("Id") or "(the created container)")
    image_id = str(inspect.get("Image") or "")
    try:
        plan.verify(image_id, container=container)
        problems = docker_violations(inspect.get("HostConfig") or {}, policy)
        problems += mount_violations(inspect.get("Mounts"), policy)
        if inspect_volume is not None:
            problems += _volume_problems(inspect.get("Mounts"), inspect_volume)
        user = str((inspect.get("Config") or {}).get("User") or "")
        checked = plan.report.user or ""
        if user != checked:
            problems.append(f"Config.User is {user!r}, not the user imagegate checked ({checked!r})")
        if problems:
            raise HardeningError(problems, runtime="docker", container=container)
    except (LaunchMismatch, HardeningError) as exc:
        if remove is not None:
            try:
                remove()
            except Exception as cleanup:  # noqa: BLE001 - the refusal is the error that matters
                exc.add_note(f"removing {container} failed too ({cleanup}); remove it by hand, never start it")
        raise
    return image_id


MAX_VOLUMES = 64  # named volumes looked up per container: a launch mounts a few; more is refused, never half-checked


def _volume_problems(mounts: Any, inspect_volume: Callable[[str], Mapping[str, Any]]) -> list[str]:
    """What the named volumes in a container's ``Mounts`` break, each looked up by its ``docker volume
    inspect`` record (:func:`~imagegate._hardening.volume_violations`). A volume that cannot be looked up
    is judged as created with unknown options; a volume mount without a name, or more than
    :data:`MAX_VOLUMES` volumes, is refused rather than passed unread."""
    entries = [m for m in (mounts if isinstance(mounts, list) else ())
               if isinstance(m, Mapping) and str(m.get("Type") or "").lower() == "volume"]
    names = list(dict.fromkeys(str(m.get("Name") or "") for m in entries))
    problems: list[str] = []
    if "" in names:
        names.remove("")
        problems.append("a volume mount has no volume name, so its volume cannot be looked up. Fix: mount a named "
                        "volume")
    if len(names) > MAX_VOLUMES:
        problems.append(f"{len(names)} named volumes are mounted; imagegate looks up at most {MAX_VOLUMES}. Fix: "
                        "mount fewer volumes")
        names = names[:MAX_VOLUMES]
    found: list[Mapping[str, Any]] = []
    for name in names:
        try:
            record = inspect_volume(name)
        except Exception as exc:  # noqa: BLE001 - not verified: refused below, never passed
            record = {"Name": name, "Driver": "local", "Options": {"device": f"(unknown: {exc})"}}
        found.append(record if isinstance(record, Mapping) else {"Name": name, "Driver": "local",
                                                                  "Options": {"device": "(unknown)"}})
    return problems + volume_violations(found)


# -- labels -------------------------------------------------------------------------------------------


def container_labels(plan: LaunchPlan, *, orchestrator: str, task: str, launch_id: str,
                     given: Mapping[str, str] | Sequence[str] | None = None, identity: TaskIdentity | None = None,
                     launcher: Launcher | None = None, spec: str | None = None) -> dict[str, str]:
    """The labels every container imagegate launches on Docker carries, over the *given* ones (a dict,
    or a list of keys with empty values, as the docker SDK takes them): imagegate's own always win.

    Who launched it: the *identity* of the task and this try (``imagegate.dev/task-key`` and every id,
    see :class:`~imagegate.TaskIdentity`), and the launching process (*launcher*, default this one:
    host, pid, the pid's start time, boot id, pid namespace — what ``imagegate gc`` reads); *spec* is
    :func:`~imagegate.spec_key` of what was asked to run (a retry reattaches only to the same).
    """
    labels = dict.fromkeys(map(str, given), "") if isinstance(given, (list, tuple)) else dict(given or {})
    labels = {key: value for key, value in labels.items() if not str(key).startswith(PREFIX)}  # none may pose as ours
    labels.update({
        LABEL_PINNED: str(plan.pinned),
        LABEL_LAUNCH: launch_id,
        LABEL_ORCHESTRATOR: orchestrator,
        LABEL_TASK: task,
    })
    labels.update((launcher or Launcher.current()).labels())
    if identity is not None:
        labels.update(identity.labels())
    if spec:
        labels[LABEL_SPEC] = spec
    return labels


def pod_metadata(primary: LaunchPlan | None, *, images: Mapping[str, str], orchestrator: str | None = None,
                 task: str | None = None, identity: TaskIdentity | None = None,
                 launch_id: str | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """(labels, annotations) for a pod: label values must be short and plain (at most 63 characters of
    ``[A-Za-z0-9-_.]``), so references and the task's ids are annotations; the labels are the
    orchestrator, the launch id and :attr:`TaskIdentity.key` (what a retry selects its predecessors by)."""
    labels = {LABEL_ORCHESTRATOR: orchestrator} if orchestrator else {}
    annotations = {LABEL_IMAGES: json.dumps(dict(images), sort_keys=True)}
    if primary is not None:
        annotations[LABEL_PINNED] = str(primary.pinned)
    if task:
        annotations[LABEL_TASK] = task
    if launch_id:
        labels[LABEL_LAUNCH] = launch_id
    if identity is not None:
        labels[LABEL_TASK_KEY] = identity.key
        annotations.update({k: v for k, v in identity.labels().items() if k != LABEL_TASK_KEY})
    return labels, annotations
