"""What every imagegate operator does before launching: find the image, check it, pin it.

No provider is imported here, so the Docker path never loads the Kubernetes
provider (and vice versa). Data flows one way::

    image= | lock_name= | job_dir=  ->  reference  ->  imagegate.check()  ->  Report
                                                     -> launch reference ``REPO@sha256:…``

Errors are ``AirflowException`` subclasses carrying data (the report, the option).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from airflow.exceptions import AirflowException


if TYPE_CHECKING:
    from imagegate import Policy, Report

XCOM_KEY = "imagegate"  # {"pinned": REPO:TAG@sha256:…, "launched": {...} | None, "report": {...}}



def _core() -> Any:
    """The imagegate core, imported when a task runs rather than when its DAG file is parsed
    (it is ~30 ms of every parse otherwise; defining an operator needs none of it)."""
    import imagegate

    return imagegate

class ImageRefused(AirflowException):
    """A check failed under ``enforce``: nothing was launched. ``.report`` holds every result.

    ``.role`` names a helper container's image (``"XCom sidecar"``) when it was that one, not the task's.
    """

    def __init__(self, report: Report, *, role: str | None = None, fix: str | None = None) -> None:
        self.report = report
        self.role = role
        failed = ", ".join(f"{r.check}: {r.message}" for r in report.failures)
        what = f"the {role} image {report.reference}" if role else report.reference
        hint = f". Fix: {fix}" if fix else ""
        super().__init__(f"imagegate refused {what} before launching anything ({failed}){hint}\n{report.render_text()}")


class ImageSourceError(AirflowException, ValueError):
    """The operator was not given exactly one of ``image``, ``lock_name`` or ``job_dir``, or one is unusable."""

    def __init__(self, message: str, *, option: str | None = None) -> None:
        self.option = option
        super().__init__(message)


class LaunchMismatch(AirflowException):
    """The engine created a container from an image other than the checked one (it was removed, never started)."""

    def __init__(self, expected: tuple[str, ...], actual: str, container: str) -> None:
        self.expected = expected
        self.actual = actual
        self.container = container
        super().__init__(
            f"container {container[:12]} was created from image {actual}, not the checked image "
            f"({' / '.join(expected)}); it was removed without starting"
        )


@dataclass(frozen=True, slots=True)
class ImageSource:
    """Where the image comes from: exactly one of a reference, a lock-file name, or a job directory."""

    image: str | None = None
    lock_name: str | None = None
    job_dir: str | None = None

    def validate(self) -> None:
        given = [name for name in ("image", "lock_name", "job_dir") if getattr(self, name)]
        if len(given) != 1:
            shown = ", ".join(given) or "none of them"
            raise ImageSourceError(
                f"give exactly one of image=, lock_name= or job_dir= (got {shown}); e.g. "
                "image='registry.example.com/team/etl:1.4.2' or lock_name='etl'",
                option=given[1] if len(given) > 1 else "image",
            )


def init_attributes(operator: Any, **values: Any) -> None:
    """Set the operator's own constructor arguments without ``BaseOperator.__setattr__``.

    That hook looks up a converter, updates the init-kwargs record and wires XComArg
    dependencies of template fields, none of which applies inside ``__init__`` (the instance is
    not yet marked instantiated; Airflow records these kwargs itself when ``__init__`` returns).
    It costs ~3 µs per attribute, which a DAG file of 100 tasks would otherwise pay 800-1,000
    times on every parse.
    """
    for name, value in values.items():
        object.__setattr__(operator, name, value)


def dag_folder(operator: Any) -> Path:
    """The directory of the DAG file that defines *operator* (lock files and policies are found from here)."""
    dag = getattr(operator, "dag", None) if getattr(operator, "has_dag", lambda: True)() else None
    fileloc = getattr(dag, "fileloc", None) if dag is not None else None
    return Path(fileloc).resolve().parent if fileloc else Path.cwd()


def load_policy(policy: Policy | str | os.PathLike[str] | None, start: Path) -> Policy:
    """A Policy object as given, a policy file path, or the nearest policy from *start* upwards."""
    if isinstance(policy, _core().Policy):
        return policy
    if policy:
        path = Path(policy)
        return _core().Policy.load(path if path.is_absolute() else start / path)
    return _core().Policy.discover(start)


def lock_reference(name: str, lock_file: str | os.PathLike[str] | None, start: Path) -> str:
    """The pinned reference locked under *name* (the lock file given, ``$IMAGEGATE_LOCK_FILE``, or the nearest)."""
    path = lock_file or os.environ.get("IMAGEGATE_LOCK_FILE") or _core().find_lock_file(start)
    if not path:
        raise ImageSourceError(
            f"lock_name={name!r} needs a lock file: none named {_core().LOCK_FILE} in {start} or its parents; "
            "pass lock_file= or set IMAGEGATE_LOCK_FILE",
            option="lock_name",
        )
    path = Path(path)
    return str(_core().LockFile.load(path if path.is_absolute() else start / path).get(name))


def build_reference(
    job_dir: str,
    start: Path,
    *,
    repository: str | None,
    build_options: Mapping[str, Any] | None,
    policy: Policy,
    log: logging.Logger,
) -> str:
    """Build (or find, when up to date) the image of *job_dir* and return its pinned reference."""
    if not repository:
        raise ImageSourceError(
            f"job_dir={job_dir!r} needs repository= (where the image is pushed), e.g. 'registry.example.com/jobs/etl'",
            option="repository",
        )
    from imagegate import build_image  # loads the builder (and the docker SDK) only for job_dir=
    context = Path(job_dir)
    context = context if context.is_absolute() else start / context
    if not context.is_dir():
        raise ImageSourceError(f"job_dir={job_dir!r}: {context} is not a directory", option="job_dir")
    options = dict(build_options or {})
    options.setdefault("progress", lambda line: None if line.startswith("\r") else log.info("%s", line.rstrip()))
    result = build_image(context, repository=repository, policy=policy, **options)
    log.info("imagegate: %s %s", "built" if result.built else "up to date:", result.pinned)
    return str(result.pinned)


def run_checks(
    reference: str,
    *,
    backend: str,
    user: str | None,
    policy: Policy,
    log: logging.Logger,
    context: Mapping[str, Any] | None = None,
    started: float | None = None,
    role: str | None = None,
    fix: str | None = None,
    task_report: Report | None = None,
) -> Report:
    """Check *reference*; log the readable report; on failure record it in XCom and raise :class:`ImageRefused`.

    *started* (a ``time.perf_counter()`` from the start of the gate) adds how long the whole
    gate took (loading imagegate, the policy, resolving or building, the checks) to the log.
    For a helper container's image give its *role* (logged and named in the error), the *fix*
    for a refusal, and the task's own *task_report* (the XCom record keeps both).
    """
    report = _core().check(reference, backend=backend, user=user, policy=policy)
    log_report(log, report, role)
    if started is not None:
        log.info("imagegate: gate took %.0f ms", (time.perf_counter() - started) * 1000)
    if not report.passed or report.pinned is None:
        if task_report is not None:
            push_record(context, task_report, None, helpers={role or "helper": report})
        else:
            push_record(context, report, None)
        raise ImageRefused(report, role=role, fix=fix)
    return report


def log_report(log: Any, report: Report, role: str | None = None) -> None:
    """The readable report in the task log, one line each; a helper container's lines name its *role*."""
    prefix = f"imagegate: [{role}] " if role else "imagegate: "
    for line in report.render_text().splitlines():
        log.info("%s%s", prefix, line)


def run_as_user(context: Any) -> str | None:
    """``runAsUser`` of a security context given as a V1 object or a dict (either spelling), as text."""
    if context is None:
        return None
    if isinstance(context, dict):
        value = context.get("runAsUser", context.get("run_as_user"))
    else:
        value = getattr(context, "run_as_user", None)
    return None if value is None else str(value)


def push_record(
    context: Mapping[str, Any] | None,
    report: Report | None,
    launched: Mapping[str, Any] | None,
    helpers: Mapping[str, Report] | None = None,
) -> None:
    """One XCom per task (``imagegate``): what was checked, what was launched, the report
    (and, under ``helpers``, the report of each helper container's image, e.g. the XCom sidecar)."""
    if report is not None:
        record: dict[str, Any] = {"pinned": report.pinned, "launched": launched, "report": report.to_dict()}
        if helpers:
            record["helpers"] = {role: {"pinned": r.pinned, "report": r.to_dict()} for role, r in helpers.items()}
        push_xcom(context, XCOM_KEY, record)


def launch_reference(report: Report) -> str:
    """``REGISTRY/REPO@sha256:…``: what the runtime is given (no tag, so nothing can re-resolve it)."""
    return str(_core().launch_reference(report.pinned or ""))


def manifest_url(reference: str) -> str:
    """The registry API URL of a pinned reference's manifest (the extra link of a launched task)."""
    ref = _core().parse_reference(reference)
    scheme = "http" if ref.is_loopback else "https"
    return f"{scheme}://{ref.api_host}/v2/{ref.repository}/manifests/{ref.digest}"


def push_xcom(context: Mapping[str, Any] | None, key: str, value: Any) -> None:
    """Push *value* under *key* when running as a task (not in ``dry_run()``)."""
    ti = (context or {}).get("ti")
    if ti is not None:
        ti.xcom_push(key=key, value=value)


def normalise_user(user: str | int | None) -> str | None:
    return None if user is None or user == "" else str(user)


def source_reference(
    source: ImageSource,
    *,
    start: Path,
    lock_file: str | os.PathLike[str] | None,
    repository: str | None,
    build_options: Mapping[str, Any] | None,
    policy: Policy,
    log: logging.Logger,
) -> str:
    """The reference to check for *source* (rendered values): as given, from the lock file, or built."""
    source.validate()
    if source.image:
        return source.image.strip()
    if source.lock_name:
        return lock_reference(source.lock_name, lock_file, start)
    return build_reference(
        str(source.job_dir), start, repository=repository, build_options=build_options, policy=policy, log=log
    )
