"""What a local Docker run of a planned image looks like: options in, engine arguments out. Pure.

``docker run``'s options that a job needs — a command, an entrypoint, environment variables,
bind mounts, a user, a network, a working directory — are parsed here with Docker's own grammar
(``-e``/``--env-file``, ``-v``, ``--mount``) and translated by :func:`docker_launch` into the
create and host-config arguments of the Engine API, with the gate's hardening
(:func:`~imagegate.harden_docker`) and label scheme (:func:`~imagegate.container_labels`) applied.
:mod:`imagegate._run` is the half that talks to the engine.

Where Docker would do something imagegate cannot check — create a missing bind source as root,
mount a named or anonymous volume, let a label pose as imagegate's own — the option is refused,
naming it and the fix. Environment values are never printed (:meth:`DockerLaunch.describe` lists
the names only): they are where secrets live.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from imagegate._errors import ImagegateError
from imagegate._gate import LABEL_LAUNCH, container_labels
from imagegate._hardening import harden_docker
from imagegate._policy import Policy

if TYPE_CHECKING:
    from imagegate._gate import LaunchPlan

LABEL_PREFIX = "imagegate.dev/"
MAX_ENV_FILE = 1 << 20  # an env file larger than this is not an env file
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")  # the engine's container name grammar
_VOLUME_FLAGS = frozenset({"ro", "rw", "z", "Z"})
_TRUE, _FALSE = frozenset({"", "1", "true"}), frozenset({"0", "false"})


class RunOptionError(ImagegateError, ValueError):
    """A run option that cannot be used (nothing was created). ``option`` names it, e.g. ``-v``."""

    _fields = ("option", "value")

    def __init__(self, message: str, *, option: str, value: str | None = None) -> None:
        self.option = option
        self.value = value
        shown = f"{option} {value!r}: " if value is not None else f"{option}: "
        super().__init__(shown + message)


@dataclass(frozen=True)
class Bind:
    """A host file or directory bind-mounted into the container (``source`` absolute, ``target`` absolute)."""

    source: str
    target: str
    read_only: bool = False

    @classmethod
    def parse_volume(cls, text: str, *, cwd: str | os.PathLike[str] | None = None) -> Bind:
        """``-v SRC:DST[:OPTS]`` as Docker reads it on Linux; OPTS is ``ro``/``rw`` (and SELinux ``z``/``Z``).

        SRC must be a host path (absolute, or starting with ``.``): a bare name is a Docker named
        volume and ``-v /dst`` an anonymous one, neither of which a local run of a job needs.
        """
        parts = text.split(":")
        if len(parts) not in (2, 3) or not all(parts[:2]):
            raise RunOptionError(
                "expected HOST_PATH:CONTAINER_PATH[:ro] (a path containing ':' needs --mount)", option="-v", value=text
            )
        source, target = parts[0], parts[1]
        flags = parts[2].split(",") if len(parts) == 3 else []
        unknown = [flag for flag in flags if flag not in _VOLUME_FLAGS]
        if unknown:
            raise RunOptionError(
                f"unsupported option {unknown[0]!r}: imagegate run takes ro or rw (and z/Z) here", option="-v", value=text
            )
        if "ro" in flags and "rw" in flags:
            raise RunOptionError("both ro and rw given; choose one", option="-v", value=text)
        return cls._checked(source, target, "ro" in flags, "-v", text, cwd)

    @classmethod
    def parse_mount(cls, text: str, *, cwd: str | os.PathLike[str] | None = None) -> Bind:
        """``--mount type=bind,source=SRC,target=DST[,readonly]`` (CSV, as Docker reads it); only ``type=bind``."""
        try:
            fields = next(csv.reader([text], strict=True))
        except (csv.Error, StopIteration):
            raise RunOptionError("is not a comma-separated list of KEY=VALUE", option="--mount", value=text) from None
        values: dict[str, str] = {}
        for item in fields:
            key, sep, value = item.partition("=")
            key = key.strip().lower()
            canonical = {"src": "source", "dst": "target", "destination": "target", "ro": "readonly"}.get(key, key)
            if canonical not in ("type", "source", "target", "readonly"):
                raise RunOptionError(
                    f"unsupported key {key!r}: imagegate run takes type=bind, source, target and readonly",
                    option="--mount", value=text,
                )
            if canonical in values:
                raise RunOptionError(f"{key!r} given twice", option="--mount", value=text)
            if canonical != "readonly" and not sep:
                raise RunOptionError(f"{key!r} needs a value ({key}=…)", option="--mount", value=text)
            values[canonical] = value
        if values.get("type") != "bind":
            raise RunOptionError(
                "imagegate run mounts host paths only: add type=bind (Docker's default is a named volume)",
                option="--mount", value=text,
            )
        if not values.get("source") or not values.get("target"):
            raise RunOptionError("needs source=HOST_PATH and target=CONTAINER_PATH", option="--mount", value=text)
        flag = values.get("readonly")
        if flag is not None and flag.lower() not in _TRUE | _FALSE:
            raise RunOptionError(f"readonly={flag!r} is not true or false", option="--mount", value=text)
        read_only = flag is not None and flag.lower() in _TRUE
        return cls._checked(values["source"], values["target"], read_only, "--mount", text, cwd)

    @classmethod
    def _checked(cls, source: str, target: str, read_only: bool, option: str, text: str,
                 cwd: str | os.PathLike[str] | None) -> Bind:
        if not (source.startswith("/") or source.startswith(".")):
            raise RunOptionError(
                f"{source!r} is not a host path (a bare name is a Docker named volume, which imagegate run does "
                f"not mount); write ./{source} for a directory here, or an absolute path",
                option=option, value=text,
            )
        if not target.startswith("/"):
            raise RunOptionError(f"the container path {target!r} must be absolute", option=option, value=text)
        if "\x00" in source or "\x00" in target:
            raise RunOptionError("a path holds a NUL byte", option=option, value=text)
        path = Path(cwd or os.getcwd()) / source
        absolute = os.path.normpath(str(path))
        if not os.path.exists(absolute):
            raise RunOptionError(
                f"{absolute} does not exist (Docker would create it, owned by root); create it first",
                option=option, value=text,
            )
        return cls(absolute, os.path.normpath(target), read_only)

    def to_api(self) -> dict[str, Any]:
        """The Engine API's ``HostConfig.Mounts`` entry (a missing source is an error there, never created)."""
        return {"Type": "bind", "Source": self.source, "Target": self.target, "ReadOnly": self.read_only}

    def __str__(self) -> str:
        return f"{self.source}:{self.target}{':ro' if self.read_only else ''}"


def parse_env_file(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``--env-file``, read as Docker reads it: ``KEY=VALUE`` lines (the value verbatim, no quotes
    removed), ``#`` comments and blank lines skipped, a bare ``KEY`` taken from *environ* when set there."""
    name = str(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_ENV_FILE + 1)
    except OSError as exc:
        raise RunOptionError(f"cannot read it: {exc.strerror or exc}", option="--env-file", value=name) from None
    if len(data) > MAX_ENV_FILE:
        raise RunOptionError(f"is larger than {MAX_ENV_FILE} bytes", option="--env-file", value=name)
    out: dict[str, str] = {}
    for number, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.removesuffix(b"\r")
        if number == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        try:
            line = raw.decode("utf-8").lstrip()
        except UnicodeDecodeError:
            raise RunOptionError(f"line {number} is not UTF-8", option="--env-file", value=name) from None
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.lstrip(" \t")
        problem = _env_problem(key, value)
        if problem:
            raise RunOptionError(f"line {number}: {problem}", option="--env-file", value=name)
        if sep:
            out[key] = value
        elif environ is not None and key in environ:
            out[key] = environ[key]
    return out


def parse_env(pairs: Iterable[str], *, files: Iterable[str | os.PathLike[str]] = (),
              environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The container's environment as ``docker run`` builds it: every ``--env-file`` in order, then
    every ``-e KEY=VALUE`` (a bare ``-e KEY`` copies KEY from *environ*, and is left out when unset there)."""
    environ = os.environ if environ is None else environ
    out: dict[str, str] = {}
    for path in files:
        out.update(parse_env_file(path, environ=environ))
    for pair in pairs:
        key, sep, value = pair.partition("=")
        problem = _env_problem(key, value)
        if problem:
            raise RunOptionError(problem, option="-e", value=key if not sep else f"{key}=…")
        if sep:
            out[key] = value
        elif key in environ:
            out[key] = environ[key]
    return out


def _env_problem(key: str, value: str) -> str | None:
    if not key:
        return "no variable name before '='"
    if any(c in key for c in " \t"):
        return f"variable name {key!r} contains whitespace"
    if "\x00" in key or "\x00" in value:
        return "a NUL byte cannot be passed to a process"
    return None


@dataclass(frozen=True)
class RunSpec:
    """How to run a planned image locally, in ``docker run``'s terms.

    ``command`` replaces the image's ``CMD`` (``None``: keep it); ``entrypoint`` replaces its
    ``ENTRYPOINT`` with one executable (``""`` clears it, as ``--entrypoint ""`` does); ``user``
    is the runtime user (it must also be the user the gate checked). ``remove``: delete the
    container after it exits (``docker run --rm``); ``stop_timeout``: seconds between SIGTERM and
    SIGKILL when the run is interrupted. ``cap_add``, ``security_opt`` and ``privileged`` pass
    through :func:`~imagegate.harden_docker`, which refuses what would weaken it.
    """

    command: tuple[str, ...] | None = None
    entrypoint: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    binds: tuple[Bind, ...] = ()
    user: str | None = None
    workdir: str | None = None
    network: str | None = None
    name: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    cap_add: tuple[str, ...] = ()
    security_opt: tuple[str, ...] = ()
    privileged: bool = False
    read_only: bool = False
    remove: bool = True
    stop_timeout: int = 10

    def validate(self, policy: Policy) -> None:
        """Refuse what cannot be launched, before the registry is asked anything.

        Raises:
            RunOptionError: a value Docker would refuse or imagegate cannot honour.
            HardeningError: an option that weakens the hardening (``privileged``, a capability, …).
        """
        if self.command is not None and not self.command:
            raise RunOptionError("an empty command; give one after --, or leave -- out to run the image's CMD",
                                 option="command")
        if self.workdir is not None and not self.workdir.startswith("/"):
            raise RunOptionError("the working directory must be an absolute path", option="--workdir", value=self.workdir)
        if self.name is not None and not _NAME.fullmatch(self.name):
            raise RunOptionError("a container name is [a-zA-Z0-9][a-zA-Z0-9_.-]+", option="--name", value=self.name)
        if self.network is not None and not self.network.strip():
            raise RunOptionError("an empty network name", option="--network", value=self.network)
        if self.stop_timeout < 0:
            raise RunOptionError("must be 0 or more seconds", option="--stop-timeout", value=str(self.stop_timeout))
        for key in self.labels:
            if not key:
                raise RunOptionError("a label needs a key (KEY=VALUE)", option="--label", value="")
            if key.startswith(LABEL_PREFIX):
                raise RunOptionError(
                    f"{LABEL_PREFIX}* labels are imagegate's own (they say what was checked); choose another key",
                    option="--label", value=key,
                )
        harden_docker(self.host_options(), policy)

    def host_options(self) -> dict[str, Any]:
        """The host-config keyword arguments this spec asks for, before hardening."""
        options: dict[str, Any] = {"privileged": self.privileged}
        if self.cap_add:
            options["cap_add"] = list(self.cap_add)
        if self.security_opt:
            options["security_opt"] = list(self.security_opt)
        if self.network:
            options["network_mode"] = self.network
        if self.binds:
            options["mounts"] = [bind.to_api() for bind in self.binds]
        if self.read_only:
            options["read_only"] = True
        return options


@dataclass(frozen=True)
class DockerLaunch:
    """The Engine API arguments of one run: ``create`` for ``create_container`` (without
    ``host_config``), ``host_config`` for ``create_host_config``; ``launch_id`` is its label value."""

    create: Mapping[str, Any]
    host_config: Mapping[str, Any]
    launch_id: str

    def describe(self) -> dict[str, Any]:
        """The plan as people and JSON read it: environment *names* only, never their values."""
        create = dict(self.create)
        environment = create.pop("environment", None) or []
        create["env"] = sorted(item.partition("=")[0] for item in environment)
        create["host_config"] = dict(self.host_config)
        return create


def docker_launch(plan: LaunchPlan, spec: RunSpec, policy: Policy, *, launch_id: str,
                  orchestrator: str = "cli", task: str = "-") -> DockerLaunch:
    """Translate *spec* for *plan*: the pinned digest, the hardened host config, imagegate's labels.

    Raises:
        RunOptionError: as :meth:`RunSpec.validate`; or *spec* runs as another user than *plan* was checked for.
        HardeningError: as :meth:`RunSpec.validate`.
    """
    spec.validate(policy)
    if (spec.user or None) != (plan.user or None):
        checked = f"user {plan.user!r}" if plan.user else "the image's USER"
        raise RunOptionError(
            f"the gate checked {checked}, not this one: plan the launch with the same user "
            "(plan_launch(..., user=spec.user))", option="--user", value=spec.user or "",
        )
    host = harden_docker(spec.host_options(), policy)
    if not host.get("privileged"):
        host.pop("privileged", None)
    labels = container_labels(plan, orchestrator=orchestrator, task=task, launch_id=launch_id, given=spec.labels)
    create: dict[str, Any] = {"image": plan.launch, "labels": labels}  # no TTY, no stdin: stdout and stderr stay apart
    if spec.command is not None:
        create["command"] = list(spec.command)
    if spec.entrypoint is not None:
        create["entrypoint"] = [spec.entrypoint]  # one executable, as docker run --entrypoint; [""] clears it
    if spec.env:
        create["environment"] = [f"{key}={value}" for key, value in spec.env.items()]
    if spec.user is not None:
        create["user"] = spec.user
    if spec.workdir is not None:
        create["working_dir"] = spec.workdir
    if spec.name is not None:
        create["name"] = spec.name
    return DockerLaunch(create=create, host_config=host, launch_id=launch_id)


def launch_filter(launch_id: str) -> dict[str, str]:
    """The engine's container-list filter that finds exactly the container(s) of one launch."""
    return {"label": f"{LABEL_LAUNCH}={launch_id}"}


def parse_labels(pairs: Sequence[str]) -> dict[str, str]:
    """``--label KEY=VALUE`` (a bare ``KEY`` is an empty value, as in Docker)."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        out[key] = value
    return out
