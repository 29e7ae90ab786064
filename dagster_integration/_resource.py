"""The resource: registry, policy, lock-file and build settings, and the Dagster door onto the gate.

:meth:`ImagegateResource.preflight` translates what an asset names (an image reference, a
lock-file entry, or a job directory to build) into ``imagegate.plan_launch`` — the one gate in the
core, with its one lock-file rule and its one build-and-lint path — and the answer into Dagster's
idiom: materialization metadata, asset check evaluations, and ``dg.Failure`` subclasses. The
Pipes clients call it before they create anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import dagster as dg
import imagegate
from pydantic import Field

from dagster_integration._asset_checks import (
    DOCKERFILE_LINT,
    EVIDENCE,
    declared_checks,
    evaluation,
    evidence_not_runnable,
    lint_evaluation,
    lint_not_runnable,
)
from dagster_integration._errors import BuildRefused, ImagegateDagsterError, ImageRefused

METADATA_PREFIX = "imagegate"


@dataclass(frozen=True)
class Preflight:
    """What passed the gate: the core's launch plan, its report, and the digest reference to launch."""

    plan: imagegate.LaunchPlan
    build: Mapping[str, Any] | None = None
    lint: Mapping[str, Any] | None = None
    evaluations: tuple[dg.AssetCheckEvaluation, ...] = field(default=(), compare=False)
    policy: imagegate.Policy | None = field(default=None, compare=False)  # the policy it was checked under

    @property
    def report(self) -> imagegate.Report:
        return self.plan.report

    @property
    def launch(self) -> str:
        """``registry/repository@sha256:…`` (no tag: the runtime resolves nothing)."""
        return self.plan.launch

    @property
    def user(self) -> str | None:
        return self.plan.user if self.plan.user is not None else self.plan.report.user

    def metadata(self) -> dict[str, dg.MetadataValue]:
        """The materialization's metadata: pinned reference, verdict, every check, the report."""
        return report_metadata(self.report, launch=self.launch, build=self.build, lint=self.lint)

    def check_results(self) -> list[dg.AssetCheckResult]:
        """The declared checks' results, to return with the materialization."""
        return [
            dg.AssetCheckResult(
                asset_key=e.asset_key,
                check_name=e.check_name,
                passed=e.passed,
                metadata=e.metadata,
                severity=e.severity,
                description=e.description,
            )
            for e in self.evaluations
        ]

    def log_checks(self, context: Any) -> None:
        """Record the declared checks' results when the step will not return them (it failed)."""
        log_evaluations(context, self.evaluations)


def log_evaluations(context: Any, evaluations: tuple[dg.AssetCheckEvaluation, ...]) -> None:
    """Record check results from inside a step that is about to fail (a raising asset cannot
    yield them); ``context.log_event`` writes them to the event log at once."""
    for event in evaluations:
        context.log_event(event)


def report_metadata(
    report: imagegate.Report,
    *,
    launch: str | None = None,
    build: Mapping[str, Any] | None = None,
    lint: Mapping[str, Any] | None = None,
) -> dict[str, dg.MetadataValue]:
    p = METADATA_PREFIX
    metadata: dict[str, dg.MetadataValue] = {
        f"{p}/pinned": dg.MetadataValue.text(report.pinned or "(not resolved)"),
        f"{p}/verdict": dg.MetadataValue.text("passed" if report.passed else "refused"),
        f"{p}/backend": dg.MetadataValue.text(f"{report.backend} ({report.platform})"),
    }
    if launch:
        metadata[f"{p}/launched"] = dg.MetadataValue.text(launch)
    for result in report.results:
        line = f"{result.outcome.value}: {result.message}"
        if result.fix and result.outcome in (imagegate.Outcome.FAIL, imagegate.Outcome.WARN):
            line += f" (fix: {result.fix})"
        metadata[f"{p}/check/{result.check}"] = dg.MetadataValue.text(line)
    metadata[f"{p}/report"] = dg.MetadataValue.json(report.to_dict())
    if build is not None:
        metadata[f"{p}/build"] = dg.MetadataValue.json(dict(build))
    if lint is not None:
        metadata[f"{p}/lint"] = dg.MetadataValue.json(dict(lint))
    return metadata


class ImagegateResource(dg.ConfigurableResource):
    """Registry, policy, lock-file and build settings for container assets.

    Every field is optional: without any, the policy is discovered from the
    working directory (``imagegate.toml`` / ``[tool.imagegate]``), as the CLI does.
    """

    policy_file: Optional[str] = Field(default=None, description="imagegate.toml or pyproject.toml; default: discovered from the working directory")
    check_modes: dict[str, str] = Field(default_factory=dict, description="override a check's mode: {'non-root': 'warn'} (enforce | warn | off)")
    resolve_mutable_tags: Optional[bool] = Field(default=None, description="launch a mutable tag's current digest with a warning instead of refusing it")
    allowed_registries: Optional[list[str]] = Field(default=None, description="override the policy's allowed registries (globs)")
    insecure_registries: list[str] = Field(default_factory=list, description="extra plain-http registries (loopback needs none)")
    platform: Optional[str] = Field(default=None, description="os/arch to check and launch, e.g. linux/amd64; default: the policy's")
    lock_file: Optional[str] = Field(default=None, description="imagegate.lock.json to read `lock_name` entries from; default: the nearest imagegate.lock.json")
    repository: Optional[str] = Field(default=None, description="where job-directory builds are pushed, e.g. registry.example.com/team/etl")
    tag_policy: str = Field(default="content", description="tag for job-directory builds (see imagegate.build_image)")
    build_args: dict[str, str] = Field(default_factory=dict, description="--build-arg values for job-directory builds, e.g. {'BASE': 'repo@sha256:…'}")

    # -- the policy ------------------------------------------------------------------

    def load_policy(self) -> imagegate.Policy:
        """The policy file (or the discovered one) with this resource's overrides applied."""
        policy = imagegate.Policy.load(self.policy_file) if self.policy_file else imagegate.Policy.discover()
        if self.check_modes:
            policy = policy.with_modes(**{k.replace("-", "_"): v for k, v in self.check_modes.items()})
            for evidence in EVIDENCE.values():  # as a policy file refuses it: on without a rule would verify nothing
                if policy.mode(evidence.check).value != "off" and not getattr(policy, evidence.rules, ()):
                    raise ImagegateDagsterError(
                        f"{{{evidence.check!r}: {policy.mode(evidence.check).value!r}}} turns the {evidence.check} "
                        f"check on, but the policy ({policy.source or 'the defaults'}) has no {evidence.table} rule "
                        "saying what to verify, so nothing would be; add one to the policy (see docs/signatures.md)",
                        setting="check_modes")
        overrides: dict[str, Any] = {}
        if self.resolve_mutable_tags is not None:
            overrides["resolve_mutable_tags"] = self.resolve_mutable_tags
        if self.allowed_registries is not None:
            overrides["allowed_registries"] = tuple(self.allowed_registries)
        if self.insecure_registries:
            overrides["insecure_registries"] = tuple(dict.fromkeys((*policy.insecure_registries, *self.insecure_registries)))
        if self.platform:
            overrides["platform"] = imagegate.Platform.parse(self.platform)
        if overrides:
            policy = replace(policy, **overrides)
        return policy

    # -- the gate ----------------------------------------------------------------------

    def preflight(
        self,
        context: Any,
        *,
        image: str | None = None,
        lock_name: str | None = None,
        job_directory: str | Path | None = None,
        dockerfile: str | None = None,
        build_args: Mapping[str, str] | None = None,
        repository: str | None = None,
        backend: str = "docker",
        user: str | None = None,
        start: str | Path | None = None,
        policy: imagegate.Policy | None = None,
    ) -> Preflight:
        """Resolve (or build) exactly one of *image*, *lock_name*, *job_directory*, check it,
        and return what to launch with the declared asset checks' results.

        *context* is the asset's (or op's) execution context, or ``None`` outside a run
        (to review what would be launched; no check results are recorded then).
        *repository* overrides the resource's for a *job_directory* build.

        The check results are returned with the materialization on success
        (:meth:`Preflight.check_results`); when the image is refused they are logged
        to the event log here, before :class:`ImageRefused` is raised.

        Raises:
            ImageRefused: a check failed under enforce (after the check results were logged).
            BuildRefused: lint errors refused the job directory's build (nothing was built).
            ImagegateDagsterError: the arguments name no image, or more than one; or the asset declares
                ``dockerfile_lint`` where nothing is linted (an ``image=``/``lock_name=`` source, or
                ``checks.lint = "off"``) — raised before anything is resolved, built or launched; or it declares
                ``image_signed`` / ``image_vulnerabilities`` where nothing would be verified (no rule, the check
                off, or no rule covering the image) — raised before anything is resolved when the policy or the
                ``image=`` reference tells, else once the image is resolved, before anything is launched.
            imagegate.ImagegateError: bad reference, unreachable registry, … (from the core).
        """
        policy = policy or self.load_policy()
        declared = declared_checks(context)
        wants_lint = any(key.name == DOCKERFILE_LINT for key in declared)
        if wants_lint:
            _require_lint(declared, image=image, lock_name=lock_name, job_directory=job_directory, policy=policy)
        _require_evidence(declared, policy, _given_reference(image))
        source = imagegate.ImageSource(
            image=image, lock_name=lock_name, job_dir=job_directory, lock_file=self.lock_file,
            repository=repository or self.repository, start=start,
            build=imagegate.BuildOptions(
                dockerfile=dockerfile, build_args={**self.build_args, **dict(build_args or {})}, platform=self.platform,
                tag_policy=self.tag_policy, lint="always" if wants_lint else "on-build",
            ),
        )
        try:
            plan = imagegate.plan_launch(source, backend=backend, user=user, policy=policy, progress=_progress(context))
        except imagegate.SourceError as exc:
            raise ImagegateDagsterError(str(exc), setting=exc.option) from exc
        except imagegate.LintFailed as exc:  # lint errors under checks.lint = "enforce": nothing built
            lint_dict = exc.report.to_dict()
            log_evaluations(context, tuple(lint_evaluation(key, None, lint_dict, refused=True)
                                           for key in declared if key.name == DOCKERFILE_LINT))
            raise BuildRefused(exc.report, {f"{METADATA_PREFIX}/lint": dg.MetadataValue.json(lint_dict)}) from None
        except imagegate.CheckFailed as exc:
            build = exc.build.to_dict() if exc.build is not None else None
            lint = exc.lint.to_dict() if exc.lint is not None else None
            log_evaluations(context, tuple(evaluation(key, exc.report, lint, policy) for key in declared))
            raise ImageRefused(exc.report, report_metadata(exc.report, build=build, lint=lint)) from None
        _require_evidence(declared, policy, plan.pinned)  # a lock entry or a build: known now, before any launch
        build = plan.build.to_dict() if plan.build is not None else None
        lint = plan.lint.to_dict() if plan.lint is not None else None
        evaluations = tuple(evaluation(key, plan.report, lint, policy) for key in declared)
        for warning in plan.report.warnings if context is not None else ():
            context.log.warning(f"imagegate {warning.check}: {warning.message}")
        return Preflight(plan, build, lint, evaluations, policy)


def task_identity(context: Any) -> imagegate.TaskIdentity | None:
    """The step of *context* as the core's ``TaskIdentity``: its key is the root run and the step key, so a
    re-execution (a new run whose ``root_run_id`` is the first run's) and a retry find the containers or pods
    of earlier attempts. None outside a run (a directly invoked asset): then none are looked for."""
    try:
        run = context.run
        step_key = context.get_step_execution_context().step.key
        retry = getattr(context, "retry_number", None)
    except Exception:  # noqa: BLE001 - no run, no step (direct invocation, build_asset_context)
        return None
    if not getattr(run, "run_id", None) or not step_key:
        return None
    return imagegate.TaskIdentity.dagster(run_id=run.run_id, root_run_id=getattr(run, "root_run_id", None),
                                          step_key=step_key, retry_number=retry)


def _progress(context: Any) -> Callable[[str], None] | None:
    """A job directory's build progress into the step's log (transient ``\\r`` lines are for terminals)."""
    if context is None:
        return None

    def say(line: str) -> None:
        if not line.startswith("\r"):
            context.log.info(f"imagegate: {line.rstrip()}")

    return say


def _require_lint(
    declared: list[dg.AssetCheckKey], *, image: str | None, lock_name: str | None,
    job_directory: str | Path | None, policy: imagegate.Policy,
) -> None:
    """Refuse a declared ``dockerfile_lint`` that cannot run: it must never read "passed" unlinted."""
    if job_directory:
        source = None
    elif image:
        source = f"image={str(image).strip()!r}"
    elif lock_name:
        source = f"lock_name={lock_name!r}"
    else:
        return  # no source at all: the core's SourceError says so
    for key in declared:
        if key.name == DOCKERFILE_LINT:
            reason = lint_not_runnable(key.asset_key, source=source, lint_mode=policy.mode("lint").value)
            if reason:
                raise ImagegateDagsterError(reason, setting=DOCKERFILE_LINT)


def _given_reference(image: str | None) -> imagegate.Reference | None:
    """*image* parsed, when it is given and parses (a bad one is the core's ``InvalidReference`` later)."""
    if not image or not str(image).strip():
        return None
    try:
        return imagegate.parse_reference(str(image).strip())
    except imagegate.ImagegateError:
        return None


def _require_evidence(declared: list[dg.AssetCheckKey], policy: imagegate.Policy,
                      reference: imagegate.Reference | None) -> None:
    """Refuse a declared ``image_signed`` / ``image_vulnerabilities`` that would verify nothing: it must never
    read "passed" unverified (see :func:`~dagster_integration._asset_checks.evidence_not_runnable`)."""
    for key in declared:
        if key.name in EVIDENCE:
            reason = evidence_not_runnable(key.asset_key, key.name, policy, reference)
            if reason:
                raise ImagegateDagsterError(reason, setting=key.name)
