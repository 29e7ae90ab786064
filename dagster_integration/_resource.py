"""The resource: registry, policy, lock-file and build settings, and the pre-launch gate.

:meth:`ImagegateResource.preflight` is the one place that turns what an asset
names (an image reference, a lock-file entry, or a job directory to build) into
a checked, pinned launch reference. The Pipes clients call it before they create
anything; it records the check results on the asset and raises
:class:`ImageRefused` when the policy refuses the image.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Optional

import dagster as dg
import imagegate
from pydantic import Field

from dagster_integration._asset_checks import DOCKERFILE_LINT, declared_checks, evaluation, lint_evaluation
from dagster_integration._errors import BuildRefused, ImagegateDagsterError, ImageRefused

METADATA_PREFIX = "imagegate"


@dataclass(frozen=True)
class Preflight:
    """What passed the gate: the report, and the digest reference to launch."""

    report: imagegate.Report
    launch: str  # registry/repository@sha256:… (no tag: the runtime resolves nothing)
    user: str | None
    build: Mapping[str, Any] | None = None
    lint: Mapping[str, Any] | None = None
    evaluations: tuple[dg.AssetCheckEvaluation, ...] = field(default=(), compare=False)

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
        backend: str = "docker",
        user: str | None = None,
    ) -> Preflight:
        """Resolve (or build) exactly one of *image*, *lock_name*, *job_directory*, check it,
        and return what to launch with the declared asset checks' results.

        *context* is the asset's (or op's) execution context, or ``None`` outside a run
        (to review what would be launched; no check results are recorded then).

        The check results are returned with the materialization on success
        (:meth:`Preflight.check_results`); when the image is refused they are logged
        to the event log here, before :class:`ImageRefused` is raised.

        Raises:
            ImageRefused: a check failed under enforce (after the check results were logged).
            BuildRefused: lint errors refused the job directory's build (nothing was built).
            ImagegateDagsterError: the arguments name no image, or more than one.
            imagegate.ImagegateError: bad reference, unreachable registry, … (from the core).
        """
        given = [name for name, value in (("image", image), ("lock_name", lock_name), ("job_directory", job_directory)) if value]
        if len(given) != 1:
            raise ImagegateDagsterError(
                f"name exactly one of image=, lock_name=, job_directory= (got {', '.join(given) or 'none'})",
                setting="image",
            )
        policy = self.load_policy()
        build = lint = None
        if image:
            target: str | imagegate.Reference = image
        elif lock_name:
            target = self._lock_entry(lock_name)
        else:
            try:
                target, build, lint = self._build(Path(str(job_directory)), dockerfile, build_args, policy)
            except imagegate.LintFailed as exc:  # lint errors under checks.lint = "enforce": nothing built
                lint_dict = exc.report.to_dict()
                log_evaluations(context, tuple(
                    lint_evaluation(key, None, lint_dict, refused=True)
                    for key in declared_checks(context)
                    if key.name == DOCKERFILE_LINT
                ))
                raise BuildRefused(exc.report, {f"{METADATA_PREFIX}/lint": dg.MetadataValue.json(lint_dict)}) from None
        report = imagegate.check(target, backend=backend, user=user, policy=policy)
        launch = _launch_reference(report)
        evaluations = tuple(evaluation(key, report, lint) for key in declared_checks(context))
        if not report.passed:
            log_evaluations(context, evaluations)
            raise ImageRefused(report, report_metadata(report, build=build, lint=lint))
        for warning in report.warnings if context is not None else ():
            context.log.warning(f"imagegate {warning.check}: {warning.message}")
        return Preflight(report, launch or "", report.user, build, lint, evaluations)

    def _lock_entry(self, name: str) -> imagegate.Reference:
        path = self.lock_file or imagegate.find_lock_file()
        if path is None:
            raise ImagegateDagsterError(
                f"lock_name={name!r} needs a lock file: set lock_file= on the resource, or run "
                "`imagegate build` to write imagegate.lock.json",
                setting="lock_file",
            )
        return imagegate.LockFile.load(path).get(name)

    def _build(
        self, directory: Path, dockerfile: str | None, build_args: Mapping[str, str] | None, policy: imagegate.Policy
    ) -> tuple[imagegate.Reference, dict[str, Any], dict[str, Any] | None]:
        """Build and push *directory* with ``imagegate.build_image`` (skipped when its content tag
        exists); the lint report comes from the build, or is made here when nothing was built."""
        if not self.repository:
            raise ImagegateDagsterError(
                "building a job directory needs repository= (where the image is pushed)", setting="repository"
            )
        args = {**self.build_args, **dict(build_args or {})}
        result = imagegate.build_image(
            directory,
            repository=self.repository,
            dockerfile=dockerfile,
            build_args=args,
            platform=self.platform,
            tag_policy=self.tag_policy,
            policy=policy,
        )
        lint = result.lint
        if lint is None and policy.mode("lint") is not imagegate.Mode.OFF:
            lint = imagegate.lint_dockerfile(directory, dockerfile=dockerfile, build_args=args)
        return result.pinned, result.to_dict(), lint.to_dict() if lint is not None else None


def _launch_reference(report: imagegate.Report) -> str | None:
    """``registry/repository@digest`` from the report's pinned reference (tag dropped)."""
    return imagegate.launch_reference(report.pinned) if report.pinned else None
