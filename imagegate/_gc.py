"""Containers and pods imagegate launched that outlived the process that launched them.

::

    a retry (every door, before it launches)          imagegate gc (one host, any time)
      settle_predecessors / pod_verdicts                gc(dry_run=, older_than=)
        the earlier tries of the same task                every container this host launched
        (label imagegate.dev/task-key)                    (label imagegate.dev/host)
        -> reattach to one that still runs the            -> running, launcher gone: stop, remove
           checked launch, or stop and remove it          -> exited longer ago than older_than: remove
                                                          -> anything else (launcher alive, another
                                                             host or pid namespace): left alone

The rules are pure functions over what the runtime recorded (:func:`container_verdicts` over
``docker inspect``, :func:`pod_verdicts` over the stored pod); the Docker calls are thin and the docker
SDK is imported only when one is made. A container a retry reattached to still names its first
launcher (Docker labels cannot change), so the retry records that it adopted it: a labelled,
empty volume (``imagegate.dev/adopts``) that ``gc`` reads — a container a live process watches is
never collected.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Sequence

from imagegate._errors import ImagegateError
from imagegate._gate import LABEL_LAUNCH, LABEL_ORCHESTRATOR, LABEL_PINNED, LABEL_TASK, LaunchMismatch, verify_container
from imagegate._hardening import HardeningError
from imagegate._owner import LABEL_HOST, LABEL_SPEC, LABEL_TASK_KEY, PREFIX, Launcher, TaskIdentity

if TYPE_CHECKING:
    from imagegate._gate import LaunchPlan, PodPlan
    from imagegate._policy import Policy

Action = Literal["reattach", "remove", "keep"]
LABEL_ADOPTS = "imagegate.dev/adopts"  # on an adoption record (a volume): the container a retry reattached to
STOP_TIMEOUT = 3  # seconds between SIGTERM and SIGKILL: Airflow kills a task 5 s after its SIGTERM
_ATTEMPT_KEYS = ("try-number", "run-id", "retry-number")
_LIVE = ("running", "paused", "restarting", "created")
_ZERO_TIME = "0001-01-01T00:00:00Z"


class GcError(ImagegateError):
    """``gc`` could not do its work: the Docker Engine cannot be reached or refused to list containers."""


class GcOptionError(GcError, ValueError):
    """A bad ``gc`` option (``option`` names it, ``value`` is what was given)."""

    _fields = ("option", "value")

    def __init__(self, message: str, *, option: str, value: str) -> None:
        self.option = option
        self.value = value
        super().__init__(message)


@dataclass(frozen=True)
class Predecessor:
    """A container (``kind="container"``) or pod of an earlier try of the task, and what to do with it."""

    kind: str
    id: str
    name: str
    state: str
    action: Action
    reason: str
    attempt: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        tried = ", ".join(f"{k} {v}" for k, v in self.attempt.items())
        short = self.id[:12] if self.kind == "container" else self.id
        return f"{self.kind} {short} ({tried + ', ' if tried else ''}{self.state})"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id, "name": self.name, "state": self.state, "action": self.action,
                "reason": self.reason, "attempt": dict(self.attempt)}


@dataclass(frozen=True)
class Settled:
    """What a retry did with its predecessors: the one it reattached to (if any), the ones it removed or kept."""

    reattached: Predecessor | None
    removed: tuple[Predecessor, ...] = ()
    kept: tuple[Predecessor, ...] = ()


# -- the rules (pure) ----------------------------------------------------------------------------------


def container_verdicts(records: Sequence[Mapping[str, Any]], plan: LaunchPlan, policy: Policy, *,
                       reattach: bool, spec: str | None = None, keep_finished: bool = False,
                       inspect_volume: Callable[[str], Mapping[str, Any]] | None = None) -> list[Predecessor]:
    """What a retry does with each container of its earlier tries (``docker inspect`` records).

    At most one is reattached: the newest that still runs (not paused, not restarting), was asked for
    the same launch (*spec*), and passes :func:`~imagegate.verify_container` against *this* try's plan —
    the checked digest, the hardening, the user, and (given *inspect_volume*, ``APIClient.inspect_volume``)
    each named volume's own record — exactly as a container this try creates would have to.
    Every other one that runs, or was created and never started, is removed; one that finished is
    removed too unless *keep_finished* (``auto_remove="never"``: kept for a post-mortem, never running).
    """
    verdicts: list[Predecessor] = []
    chosen = False
    for record in sorted(records, key=lambda r: str(r.get("Created") or ""), reverse=True):
        state = record.get("State") or {}
        status = str(state.get("Status") or "unknown")
        labels = (record.get("Config") or {}).get("Labels") or {}
        base = dict(kind="container", id=str(record.get("Id") or ""), name=str(record.get("Name") or "").lstrip("/"),
                    state=status, attempt=_attempt(labels))
        if status == "removing":
            verdicts.append(Predecessor(**base, action="keep", reason="the engine is removing it"))
            continue
        if status not in _LIVE:
            action: Action = "keep" if keep_finished else "remove"
            verdicts.append(Predecessor(**base, action=action, reason=f"it exited ({state.get('ExitCode')})"
                                        + ("; kept as auto_remove='never' says" if keep_finished else "")))
            continue
        why = None if reattach else "reattaching is off"
        if why is None and chosen:
            why = "a newer try's container was reattached instead"
        if why is None and status != "running":
            why = f"it is {status}, not running"
        if why is None and spec is not None and labels.get(LABEL_SPEC) != spec:
            why = "it was launched with another command, entrypoint or user than this try's"
        if why is None:
            why = _unverified(record, plan, policy, inspect_volume)
        if why is None:
            chosen = True
            verdicts.append(Predecessor(**base, action="reattach", reason="it still runs this try's checked launch"))
        else:
            verdicts.append(Predecessor(**base, action="remove", reason=why))
    return verdicts


def _unverified(record: Mapping[str, Any], plan: LaunchPlan, policy: Policy,
                inspect_volume: Callable[[str], Mapping[str, Any]] | None) -> str | None:
    try:
        verify_container(record, plan, policy, inspect_volume=inspect_volume)
    except LaunchMismatch as exc:
        return f"it runs {exc.actual}, not the digest this try checked"
    except HardeningError as exc:
        return "it breaks the hardening: " + "; ".join(exc.problems)
    return None


def pod_verdicts(pods: Sequence[Mapping[str, Any]], planned: PodPlan, *, reattach: bool,
                 keep_finished: bool = False, checked_label: str | None = None) -> list[Predecessor]:
    """What a retry does with each pod of its earlier tries (camelCase, as the API server stores them).

    At most one is reattached: the newest that is Pending or Running, not being deleted, not marked
    *checked_label* ``=True`` (the Kubernetes provider's "already checked"), that passes exactly what a pod
    this try creates must pass (:meth:`PodPlan.verify_spec`: every container runs its planned image as the
    checked user and, for a hardened plan, the pod keeps the restricted profile; :meth:`PodPlan.verify_status`
    for the containers started). Every other live pod is removed; a finished one too, unless *keep_finished*.
    """
    verdicts: list[Predecessor] = []
    chosen = False
    for pod in sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""), reverse=True):
        metadata = pod.get("metadata") or {}
        phase = str((pod.get("status") or {}).get("phase") or "Unknown")
        base = dict(kind="pod", id=str(metadata.get("name") or ""), name=str(metadata.get("name") or ""),
                    state=phase, attempt=_attempt(metadata.get("annotations") or {}))
        if metadata.get("deletionTimestamp"):
            verdicts.append(Predecessor(**base, action="keep", reason="it is being deleted"))
            continue
        if phase in ("Succeeded", "Failed"):
            action: Action = "keep" if keep_finished else "remove"
            verdicts.append(Predecessor(**base, action=action, reason=f"it finished ({phase})"
                                        + ("; kept as on_finish_action says" if keep_finished else "")))
            continue
        why = None if reattach else "reattaching is off"
        if why is None and chosen:
            why = "a newer try's pod was reattached instead"
        if why is None and checked_label and (metadata.get("labels") or {}).get(checked_label) == "True":
            why = "an earlier try already processed it"
        if why is None and phase not in ("Pending", "Running"):
            why = f"its phase is {phase}"
        if why is None:
            try:
                planned.verify_spec(pod)
                planned.verify_status(pod)
            except LaunchMismatch as exc:
                why = f"it runs {exc.actual}, not the image this try checked"
            except HardeningError as exc:  # another user, or (a hardened plan) it breaks the restricted profile
                why = "it is not the pod this try would create: " + "; ".join(exc.problems)
        if why is None:
            chosen = True
            verdicts.append(Predecessor(**base, action="reattach", reason="it still runs this try's checked images"))
        else:
            verdicts.append(Predecessor(**base, action="remove", reason=why))
    return verdicts


def _attempt(labels: Mapping[str, str]) -> dict[str, str]:
    """The try a container or pod was launched by (Airflow: its try number; Dagster: its run and retry)."""
    keys = ("try-number",) if labels.get(PREFIX + "try-number") else _ATTEMPT_KEYS
    return {key: labels[PREFIX + key] for key in keys if labels.get(PREFIX + key)}


# -- a retry's predecessors on Docker --------------------------------------------------------------


def settle_predecessors(identity: TaskIdentity, plan: LaunchPlan, policy: Policy, *, reattach: bool = True,
                        spec: str | None = None, keep_finished: bool = False, client: Any = None,
                        log: Callable[[str], None] | None = None, stop_timeout: int = STOP_TIMEOUT) -> Settled:
    """Before a try launches on Docker: find the containers of the task's earlier tries (same
    :attr:`TaskIdentity.key` and orchestrator), decide (:func:`container_verdicts`) and act — stop
    (SIGTERM, SIGKILL after *stop_timeout*) and remove each one not reattached. *log* gets one line
    per container saying which and why. *client*: a docker ``DockerClient`` or ``APIClient``.
    """
    api = _api(client)
    say = log or (lambda line: None)
    records = _inspect_all(api, {"label": [f"{LABEL_TASK_KEY}={identity.key}",
                                           f"{LABEL_ORCHESTRATOR}={identity.orchestrator}"]})
    verdicts = container_verdicts(records, plan, policy, reattach=reattach, spec=spec, keep_finished=keep_finished,
                                  inspect_volume=api.inspect_volume)
    reattached, removed, kept = None, [], []
    for verdict in verdicts:
        if verdict.action == "reattach":
            reattached = verdict
            say(f"imagegate: reattaching to {verdict.describe()} of an earlier try: {verdict.reason}")
        elif verdict.action == "remove":
            retire_container(api, verdict.id, stop_timeout=stop_timeout, remove=True)
            removed.append(verdict)
            say(f"imagegate: stopped and removed {verdict.describe()} of an earlier try: {verdict.reason}")
        else:
            kept.append(verdict)
            say(f"imagegate: left {verdict.describe()} of an earlier try: {verdict.reason}")
    return Settled(reattached, tuple(removed), tuple(kept))


def retire_container(client: Any, container: str, *, stop_timeout: int = STOP_TIMEOUT, remove: bool = True) -> bool:
    """Stop *container* (SIGTERM, SIGKILL after *stop_timeout*) and, with *remove*, remove it and its
    anonymous volumes. True when it is stopped (or gone) afterwards; never raises for a container
    that is already gone. Its adoption records go with it.

    Without *remove* (``auto_remove="never"``: keep what ran, for its logs and exit code) a container that
    never started is removed all the same: it has no output or exit code to keep, and left ``created`` it
    is a launch waiting for anyone's ``docker start`` to run the job with nobody watching it."""
    api = _api(client)
    errors = _errors()
    stopped = _attempt_call(lambda: api.stop(container, timeout=stop_timeout), errors)
    if not remove and _ever_started(api, container, errors):
        return stopped or _attempt_call(lambda: api.kill(container), errors)
    for _ in range(3):  # a forced removal kills what the stop did not
        if _attempt_call(lambda: api.remove_container(container, v=True, force=True), errors):
            drop_adoptions(api, container)
            return True
    return False


def _ever_started(api: Any, container: str, errors: Any) -> bool:
    """Whether the engine ever started *container* (True when that cannot be told: then it is kept, as asked)."""
    try:
        state = api.inspect_container(container).get("State") or {}
    except errors.NotFound:
        return True  # gone: nothing to remove
    except errors.APIError:
        return True
    if state.get("Status") != "created":
        return True
    # the engine's zero time ("0001-01-01T00:00:00Z") until the first start
    return not str(state.get("StartedAt") or "").startswith("0001-01-01")


def _attempt_call(action: Callable[[], Any], errors: Any) -> bool:
    try:
        action()
    except errors.NotFound:
        return True
    except errors.APIError as exc:
        return exc.status_code == 304  # already stopped
    return True


# -- adoption records: a reattached container's live watcher ----------------------------------------


def record_adoption(client: Any, container: str, *, launch_id: str, launcher: Launcher | None = None) -> str:
    """Record that this process (*launcher*) now watches *container*, which names an earlier launcher:
    an empty volume labelled ``imagegate.dev/adopts``. Returns its name (for :func:`drop_adoption`)."""
    api = _api(client)
    name = f"imagegate-adopts-{launch_id}"
    api.create_volume(name=name, labels={LABEL_ADOPTS: container, LABEL_LAUNCH: launch_id,
                                         **(launcher or Launcher.current()).labels()})
    return name


def drop_adoption(client: Any, name: str) -> None:
    """Drop an adoption record (the watcher is done). Never raises for one already gone."""
    api = _api(client)
    errors = _errors()
    try:
        api.remove_volume(name, force=True)
    except (errors.NotFound, errors.APIError):
        pass


def drop_adoptions(client: Any, container: str) -> None:
    """Drop every adoption record of *container* (it was removed)."""
    for volume in _adoptions(_api(client), container):
        drop_adoption(client, volume["Name"])


def _adoptions(api: Any, container: str | None = None) -> list[dict[str, Any]]:
    label = f"{LABEL_ADOPTS}={container}" if container else LABEL_ADOPTS
    try:
        return list((api.volumes(filters={"label": label}) or {}).get("Volumes") or [])
    except _errors().APIError:
        return []


# -- imagegate gc ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Collected:
    """One container ``gc`` looked at: ``action`` is ``removed``, ``would remove`` (dry run) or ``kept``."""

    id: str
    name: str
    state: str
    action: str
    reason: str
    orchestrator: str = ""
    task: str = ""
    pinned: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "state": self.state, "action": self.action, "reason": self.reason,
                "orchestrator": self.orchestrator, "task": self.task, "pinned": self.pinned}

    def describe(self) -> str:
        what = f"{self.orchestrator} {self.task}".strip()
        return f"{self.action} {self.id[:12]} {self.name} ({self.state}{', ' + what if what else ''}): {self.reason}"


@dataclass(frozen=True)
class GcReport:
    """What :func:`gc` removed (or, with ``dry_run``, would remove) and what it left, and why."""

    host: str
    dry_run: bool
    older_than: dt.timedelta | None
    removed: tuple[Collected, ...]
    kept: tuple[Collected, ...]
    records_released: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "dry_run": self.dry_run,
            "older_than_seconds": None if self.older_than is None else self.older_than.total_seconds(),
            "removed": [c.to_dict() for c in self.removed],
            "kept": [c.to_dict() for c in self.kept],
            "adoption_records_released": self.records_released,
        }

    def render_text(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        lines = [c.describe() for c in self.removed]
        lines.append(f"{verb} {len(self.removed)} container(s) imagegate launched on {self.host}; "
                     f"left {len(self.kept)}" + (" (dry run: nothing changed)" if self.dry_run else ""))
        return "\n".join(lines)


def gc(*, dry_run: bool = False, older_than: dt.timedelta | str | None = None, labels: Sequence[str] = (),
       client: Any = None, now: dt.datetime | None = None, stop_timeout: int = 10) -> GcReport:
    """Remove, on this host, the containers imagegate launched that nobody will come back for.

    Only containers labelled with this host (``imagegate.dev/host``, set by every Docker door and
    ``imagegate run``) are looked at; nothing without imagegate's labels is ever touched. Of those:

    - one that runs (or was created, paused, restarting) whose launching process is gone — its pid is
      free or belongs to another process (the start time differs), or the host rebooted — is stopped
      (SIGTERM, SIGKILL after *stop_timeout*) and removed, unless a live retry reattached to it;
    - with *older_than* (a ``timedelta`` or ``"90s"``, ``"30m"``, ``"12h"``, ``"7d"``, ``"1h30m"``), one
      that exited longer ago than that is removed (the provider keeps failed containers for a post-mortem);
    - anything else is left: a live launcher, one in another pid namespace (a launcher inside another
      container), a recent exit.

    *labels* (``KEY`` or ``KEY=VALUE``, as ``docker ps --filter label=``) narrow it further, e.g. to one
    DAG: ``["imagegate.dev/dag-id=etl"]``. With *dry_run* nothing changes and :attr:`GcReport.removed`
    says what would be removed. Adoption records whose watcher is gone are dropped too.

    Raises:
        GcOptionError: *older_than* is not a duration, or a label is empty.
        GcError: the Docker Engine cannot be reached.
    """
    age = parse_duration(older_than) if isinstance(older_than, str) else older_than
    if age is not None and age < dt.timedelta(0):
        raise GcOptionError("--older-than must not be negative", option="--older-than", value=str(older_than))
    for label in labels:
        if not label or not label.partition("=")[0].strip():
            raise GcOptionError("--label needs KEY or KEY=VALUE", option="--label", value=label)
    here = Launcher.current()
    moment = now or dt.datetime.now(dt.timezone.utc)
    try:
        api = _api(client)
        watched, stale = _watched(api)
        records = _inspect_all(api, {"label": [f"{LABEL_HOST}={here.host}", LABEL_ORCHESTRATOR, *labels]})
    except (_errors().DockerException, OSError) as exc:
        raise GcError(f"cannot list containers on the Docker Engine: {exc}; start it or set DOCKER_HOST") from None
    removed, kept = [], []
    for record in records:
        labels = (record.get("Config") or {}).get("Labels") or {}
        state = record.get("State") or {}
        status = str(state.get("Status") or "unknown")
        reason = _collectable(record, status, labels, watched, age, moment)
        item = dict(id=str(record.get("Id") or ""), name=str(record.get("Name") or "").lstrip("/"), state=status,
                    orchestrator=labels.get(LABEL_ORCHESTRATOR, ""), task=labels.get(LABEL_TASK, ""),
                    pinned=labels.get(LABEL_PINNED, ""))
        if reason.startswith("keep:"):
            kept.append(Collected(**item, action="kept", reason=reason[5:].strip()))
        elif dry_run:
            removed.append(Collected(**item, action="would remove", reason=reason))
        elif retire_container(api, item["id"], stop_timeout=stop_timeout, remove=True):
            removed.append(Collected(**item, action="removed", reason=reason))
        else:
            kept.append(Collected(**item, action="kept", reason=f"removing it failed ({reason})"))
    released = 0
    if not dry_run:
        for name in stale:
            drop_adoption(api, name)
            released += 1
    return GcReport(here.host, dry_run, age, tuple(removed), tuple(kept), released)


def _collectable(record: Mapping[str, Any], status: str, labels: Mapping[str, str], watched: Mapping[str, str],
                 age: dt.timedelta | None, now: dt.datetime) -> str:
    """Why the container is to be removed, or ``"keep: why not"``."""
    if status == "removing":
        return "keep: the engine is removing it"
    if status in _LIVE:
        container = str(record.get("Id") or "")
        if container in watched:
            return f"keep: a retry reattached to it and still watches it ({watched[container]})"
        launcher = Launcher.from_labels(labels)
        if launcher is None:
            return "keep: its labels name no launching process"
        verdict = launcher.status()
        if verdict == "gone":
            return f"its launcher ({launcher.describe()}) is gone"
        if verdict == "alive":
            return f"keep: its launcher ({launcher.describe()}) is alive"
        return f"keep: its launcher ({launcher.describe()}) is in another pid namespace; run gc where it ran"
    finished = _timestamp(str((record.get("State") or {}).get("FinishedAt") or "")) or _timestamp(
        str(record.get("Created") or ""))
    if age is None:
        return "keep: it exited; --older-than removes exited containers"
    if finished is None:
        return "keep: it exited at an unknown time"
    if now - finished >= age:
        return f"it exited {_human(now - finished)} ago (--older-than {_human(age)})"
    return f"keep: it exited {_human(now - finished)} ago, not longer than {_human(age)}"


def _watched(api: Any) -> tuple[dict[str, str], list[str]]:
    """(container -> its live watcher, adoption records whose watcher is gone)."""
    watched: dict[str, str] = {}
    stale: list[str] = []
    for volume in _adoptions(api):
        labels = volume.get("Labels") or {}
        launcher = Launcher.from_labels(labels)
        status = launcher.status() if launcher is not None else "gone"
        if status == "gone":
            stale.append(str(volume.get("Name")))
        elif launcher is not None:
            watched[labels.get(LABEL_ADOPTS, "")] = launcher.describe()
    return watched, stale


_DURATION = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> dt.timedelta:
    """``"90s"``, ``"30m"``, ``"12h"``, ``"7d"``, ``"2w"``, or a sum like ``"1h30m"``; ``"0"`` is zero.

    Raises:
        GcOptionError: anything else (a bare number other than 0 is refused: seconds or days?).
    """
    value = text.strip().lower()
    if value == "0":
        return dt.timedelta(0)
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise GcOptionError(f"--older-than {text!r} is not a duration; use e.g. 90s, 30m, 12h, 7d or 1h30m",
                            option="--older-than", value=text)
    return dt.timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in parts))


def _timestamp(text: str) -> dt.datetime | None:
    """The engine's RFC 3339 time (nanoseconds: cut to microseconds), or None for its zero time."""
    if not text or text.startswith("0001-01-01"):
        return None
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", text.strip())
    if match is None:
        return None
    fraction = (match.group(2) or "")[:7]
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    return dt.datetime.fromisoformat(match.group(1) + fraction + zone)


def _human(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}".removesuffix(".0") + unit
    return f"{seconds}s"


# -- the engine ------------------------------------------------------------------------------------


def _api(client: Any) -> Any:
    """The low-level ``APIClient`` of *client* (a ``DockerClient`` or ``APIClient``), or one from the environment."""
    if client is not None:
        return getattr(client, "api", client)
    import docker  # only an engine call needs the docker SDK

    return docker.from_env().api


def _errors() -> Any:
    import docker.errors

    return docker.errors


def _inspect_all(api: Any, filters: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``docker inspect`` of every container (running or not) the *filters* match; one removed meanwhile is skipped."""
    errors = _errors()
    records = []
    for entry in api.containers(all=True, filters=dict(filters)):
        try:
            records.append(api.inspect_container(entry["Id"]))
        except errors.NotFound:
            continue
    return records

