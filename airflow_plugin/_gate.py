"""The Airflow door onto imagegate's gate: translate an operator into an ``ImageSource``, the core's
answer into Airflow's idiom (task log, the ``imagegate`` XCom, ``AirflowException`` subclasses).

No rule lives here: resolving, building, checking, pinning, hardening and launch verification are
``imagegate.plan_launch`` / ``plan_pod`` / ``harden_docker``. No provider is imported here, so the
Docker path never loads the Kubernetes provider (and vice versa), and the core itself is imported
only when a task runs (``import imagegate`` is ~30 ms of every DAG parse otherwise).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from airflow.exceptions import AirflowException

if TYPE_CHECKING:
    from imagegate import LaunchPlan, Policy, Report

XCOM_KEY = "imagegate"  # {"pinned", "launched", "report", "helpers"?}
ORCHESTRATOR = "airflow"


def _core() -> Any:
    """The imagegate core, imported when a task runs rather than when its DAG file is parsed."""
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
    """The runtime created a container from an image other than the checked one (removed, never trusted)."""

    def __init__(self, expected: tuple[str, ...], actual: str, container: str) -> None:
        self.expected = expected
        self.actual = actual
        self.container = container
        super().__init__(
            f"{container} was created from image {actual}, not the checked image "
            f"({' / '.join(expected)}); it was removed without starting"
        )


class HardeningViolation(AirflowException):
    """A launch option would weaken the hardening (nothing was created). ``.problems`` names each field."""

    def __init__(self, problems: list[str], runtime: str) -> None:
        self.problems = problems
        self.runtime = runtime
        what = "the restricted Pod Security Standard" if runtime == "kubernetes" else "imagegate's Docker hardening"
        super().__init__(
            f"the task breaks {what} (nothing was created): " + "; ".join(problems)
            + ". Fix: remove the override that weakens it (harden=False launches without the profile, but never as "
            "another user than the one checked)"
        )


class TaskKilled(AirflowException):
    """The task was killed (SIGTERM: Airflow called ``on_kill``) while it launched: nothing more was created
    or started, and ``.containers`` (this try's containers or pods) were stopped and removed or deleted."""

    def __init__(self, message: str, containers: tuple[str, ...] = ()) -> None:
        self.containers = containers
        super().__init__(f"imagegate: {message}")


class PodSecurityViolation(HardeningViolation):
    """The pod breaks the restricted Pod Security Standard (nothing was created)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(problems, "kubernetes")


@contextlib.contextmanager
def airflow_errors(context: Mapping[str, Any] | None = None, task_report: Report | None = None) -> Iterator[None]:
    """Turn the core's refusals into this door's exceptions (recording a refusal in the XCom first)."""
    core = _core()
    try:
        yield
    except core.CheckFailed as exc:
        if task_report is not None:
            push_record(context, task_report, None, helpers={exc.role or "helper": exc.report})
        else:
            push_record(context, exc.report, None)
        raise ImageRefused(exc.report, role=exc.role, fix=exc.fix) from exc
    except core.SourceError as exc:
        raise ImageSourceError(str(exc), option=exc.option) from exc
    except core.HardeningError as exc:
        if exc.runtime == "kubernetes":
            raise PodSecurityViolation(list(exc.problems)) from exc
        raise HardeningViolation(list(exc.problems), exc.runtime) from exc
    except core.LaunchMismatch as exc:
        raise LaunchMismatch(exc.expected, exc.actual, exc.container) from exc
    except core.SparkReadBackError as exc:  # nothing that ran was verified: the task fails
        raise AirflowException(str(exc)) from exc


def validate_source(image: Any, lock_name: Any, job_dir: Any, repository: Any) -> None:
    """Check what can be checked at DAG parse time (nothing templated): exactly one image source."""
    if any(isinstance(v, str) and "{{" in v for v in (image, lock_name, job_dir, repository)):
        return  # templates render when the task runs; checked then
    given = [name for name, value in (("image", image), ("lock_name", lock_name), ("job_dir", job_dir)) if value]
    if len(given) != 1:
        raise ImageSourceError(
            f"give exactly one of image=, lock_name= or job_dir= (got {', '.join(given) or 'none of them'}); e.g. "
            "image='registry.example.com/team/etl:1.4.2' or lock_name='etl'",
            option=given[1] if len(given) > 1 else "image",
        )


def init_attributes(operator: Any, **values: Any) -> None:
    """Set the operator's own constructor arguments without ``BaseOperator.__setattr__``.

    That hook looks up a converter, updates the init-kwargs record and wires XComArg
    dependencies of template fields, none of which applies inside ``__init__`` (Airflow records
    these kwargs itself when ``__init__`` returns). It costs ~3 µs per attribute, which a DAG file
    of 100 tasks would otherwise pay 800-1,000 times on every parse.
    """
    for name, value in values.items():
        object.__setattr__(operator, name, value)


def dag_folder(operator: Any) -> Path:
    """The directory of the DAG file that defines *operator* (lock files and policies are found from here)."""
    dag = getattr(operator, "dag", None) if getattr(operator, "has_dag", lambda: True)() else None
    fileloc = getattr(dag, "fileloc", None) if dag is not None else None
    return Path(fileloc).resolve().parent if fileloc else Path.cwd()


def load_policy(policy: Policy | str | os.PathLike[str] | None, start: Path) -> Policy:
    """A Policy object as given, a policy file path (relative to the DAG folder), else the deployment's
    ``[imagegate] policy``, else the nearest policy from *start* upwards."""
    core = _core()
    if isinstance(policy, core.Policy):
        return policy
    if policy:
        path = Path(policy)
        return core.Policy.load(path if path.is_absolute() else start / path)
    configured = configured_policy()
    return core.Policy.load(configured) if configured else core.Policy.discover(start)


def configured_policy() -> str | None:
    """``[imagegate] policy`` (``AIRFLOW__IMAGEGATE__POLICY``): one policy file for every task of the deployment."""
    from airflow.configuration import conf

    return conf.get("imagegate", "policy", fallback=None) or None


def configured_lock_file(lock_file: str | os.PathLike[str] | None) -> str | os.PathLike[str] | None:
    """The lock file a task names: its own, else (unless ``$IMAGEGATE_LOCK_FILE`` is set) ``[imagegate] lock_file``."""
    if lock_file or os.environ.get("IMAGEGATE_LOCK_FILE"):
        return lock_file
    from airflow.configuration import conf

    return conf.get("imagegate", "lock_file", fallback=None) or None


def image_source(operator: Any, start: Path) -> Any:
    """The operator's rendered ``image``/``lock_name``/``job_dir`` as the core's ``ImageSource``."""
    core = _core()
    options = dict(operator.build_options or {})
    build = core.BuildOptions(
        dockerfile=options.pop("dockerfile", None),
        build_args=dict(options.pop("build_args", None) or {}),
        target=options.pop("target", None),
        platform=options.pop("platform", None),
        tag_policy=options.pop("tag_policy", "content"),
    )
    if options:
        raise ImageSourceError(
            f"build_options {sorted(options)} are not build options; use dockerfile, build_args, target, platform, tag_policy",
            option="build_options",
        )
    image = operator.image.strip() if isinstance(operator.image, str) and operator.image.strip() else None
    return core.ImageSource(
        image=image, lock_name=operator.lock_name or None, job_dir=operator.job_dir or None,
        lock_file=configured_lock_file(operator.lock_file), repository=operator.repository, build=build, start=start,
    )


def plan(operator: Any, context: Any, *, backend: str, user: str | None, policy: Policy) -> LaunchPlan:
    """The core gate for *operator*'s image: logged in the task log; a refusal recorded in XCom and raised."""
    started = time.perf_counter()
    log = operator.log
    with airflow_errors(context):
        try:
            result = _core().plan_launch(
                image_source(operator, dag_folder(operator)), backend=backend, user=user, policy=policy,
                progress=lambda line: None if line.startswith("\r") else log.info("%s", line.rstrip()),
            )
        except _core().CheckFailed as exc:
            log_report(log, exc.report, exc.role)
            raise
    log_report(log, result.report)
    if result.build is not None:
        log.info("imagegate: %s %s", "built" if result.build.built else "up to date:", result.pinned)
    log.info("imagegate: gate took %.0f ms", (time.perf_counter() - started) * 1000)
    return result


def log_report(log: Any, report: Report, role: str | None = None) -> None:
    """The readable report in the task log, one line each; a helper container's lines name its *role*; then the
    evidence behind the supply-chain checks (who signed which digest, which scan counted)."""
    prefix = f"imagegate: [{role}] " if role else "imagegate: "
    for line in report.render_text().splitlines():
        log.info("%s%s", prefix, line)
    for result in report.results:
        for line in evidence_lines(result.check, getattr(result, "details", None), findings=False):  # findings: above
            log.info("%s%s: %s", prefix, result.check, line)


def evidence_lines(check: Any, details: Any, *, findings: bool = True) -> list[str]:
    """``imagegate.evidence_lines`` (loaded when a task logs or the audit page shows, not at DAG parse)."""
    return _core().evidence_lines(check, details, findings=findings)


def task_label(operator: Any) -> str:
    dag_id = operator.dag_id if operator.has_dag() else None
    return f"{dag_id or '-'}.{operator.task_id}"


def task_identity(context: Mapping[str, Any] | None) -> Any:
    """The task instance of *context* as the core's ``TaskIdentity`` (every try of it has the same key),
    or None outside a task run (no ``ti``): then no earlier try is looked for."""
    ti = (context or {}).get("ti")
    if ti is None or not getattr(ti, "run_id", None):
        return None
    return _core().TaskIdentity.airflow(dag_id=ti.dag_id, task_id=ti.task_id, run_id=ti.run_id,
                                        map_index=getattr(ti, "map_index", -1), try_number=getattr(ti, "try_number", None))


def push_record(
    context: Mapping[str, Any] | None,
    report: Report | None,
    launched: Mapping[str, Any] | None,
    helpers: Mapping[str, Report] | None = None,
) -> None:
    """One XCom per task (``imagegate``): what was checked, what was launched, the report
    (and, under ``helpers``, the report of each helper container's image, e.g. the XCom sidecar).

    For the audit (the plugin's Images page reads these records in SQL) three summaries sit beside them:
    ``verdict`` (``passed``, ``waived`` when a waiver let it pass, ``refused``), ``digest`` (the pinned
    manifest digest) and ``running`` (the digest the engine reported running, when the door read one:
    Docker's image id, the config digest). Earlier records lack them; the audit derives them then.
    """
    if report is None:
        return
    record: dict[str, Any] = {"pinned": report.pinned, "launched": launched, "report": report.to_dict()}
    record.update(audit_summary(report, launched))
    if helpers:
        record["helpers"] = {role: {"pinned": r.pinned, "report": r.to_dict(), **audit_summary(r, None)}
                            for role, r in helpers.items()}
    ti = (context or {}).get("ti")
    if ti is not None:
        ti.xcom_push(key=XCOM_KEY, value=record)


def audit_summary(report: Report, launched: Mapping[str, Any] | None) -> dict[str, Any]:
    """``verdict``, ``digest`` and ``running`` of a record (see :func:`push_record`)."""
    outcomes = [r.outcome.value for r in report.results]
    verdict = "refused" if not report.passed else ("waived" if "waived" in outcomes else "passed")
    digest = report.pinned.rpartition("@")[2] if report.pinned and "@" in report.pinned else None
    running = (launched or {}).get("image_id")
    return {"verdict": verdict, "digest": digest, "running": running if isinstance(running, str) else None}


def manifest_url(reference: str) -> str:
    """The registry API URL of a pinned reference's manifest (the extra link of a launched task)."""
    ref = _core().parse_reference(reference)
    scheme = "http" if ref.is_loopback else "https"
    return f"{scheme}://{ref.api_host}/v2/{ref.repository}/manifests/{ref.digest}"


def normalise_user(user: str | int | None) -> str | None:
    return None if user is None or user == "" else str(user)
