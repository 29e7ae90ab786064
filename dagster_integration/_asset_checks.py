"""Asset checks users declare on their container assets, and their results from a report.

Dagster's blocking checks run *after* an asset and only stop downstream assets,
so these are evaluated inside the asset, before the container starts: the
client logs an ``AssetCheckEvaluation`` for each declared check, then launches
or raises :class:`ImageRefused`. The results therefore appear whether the asset
launched or was refused.

=================== ============================================ =============================
check name          from                                          when it cannot run
=================== ============================================ =============================
``image_pinned``    the report's ``pinned`` result                —
``image_non_root``  the report's ``non-root`` result              —
``dockerfile_lint`` the Dockerfile lint of a job-directory build  refused before anything runs
=================== ============================================ =============================

``dockerfile_lint`` is never reported as passed when nothing was linted. An ``@asset`` cannot
skip a check it declares (Dagster fails the step when a declared check returns no result, and an
``AssetCheckResult`` has no "skipped"), so declaring it where it cannot run is a settings error:
:func:`lint_not_runnable` says why (the image is given by ``image=``/``lock_name=``, or the policy
turns the lint off), and the resource raises it before anything is resolved, built or launched;
the component refuses it when definitions load.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import dagster as dg
import imagegate

IMAGE_PINNED = "image_pinned"
IMAGE_NON_ROOT = "image_non_root"
DOCKERFILE_LINT = "dockerfile_lint"
CHECK_NAMES = (IMAGE_PINNED, IMAGE_NON_ROOT, DOCKERFILE_LINT)

_REPORT_CHECK = {IMAGE_PINNED: "pinned", IMAGE_NON_ROOT: "non-root"}
_DESCRIPTIONS = {
    IMAGE_PINNED: "imagegate: the image is pinned (digest or immutable tag) and launched by digest",
    IMAGE_NON_ROOT: "imagegate: the image runs as a non-root (on Kubernetes: numeric) user",
    DOCKERFILE_LINT: "imagegate: the job directory's Dockerfile passes the lint",
}


def image_check_specs(
    asset: dg.AssetKey | str | Sequence[str],
    checks: Iterable[str] = (IMAGE_PINNED, IMAGE_NON_ROOT),
    *,
    blocking: bool = False,
) -> list[dg.AssetCheckSpec]:
    """``AssetCheckSpec``s for ``@dg.asset(check_specs=...)``.

    ``blocking=True`` additionally stops downstream assets when a check fails with
    ERROR severity (a refused image already fails its own asset).
    """
    key = dg.AssetKey.from_coercible(asset)
    specs = []
    for name in checks:
        if name not in CHECK_NAMES:
            raise ValueError(f"unknown imagegate check {name!r}; choose from {', '.join(CHECK_NAMES)}")
        specs.append(dg.AssetCheckSpec(name, asset=key, description=_DESCRIPTIONS[name], blocking=blocking))
    return specs


def declared_checks(context: Any) -> list[dg.AssetCheckKey]:
    """The imagegate checks selected in this step (declared on the asset and selected to run);
    none when there is no step (``context=None``: a preflight outside a run)."""
    if context is None:
        return []
    keys = getattr(context, "selected_asset_check_keys", None) or ()
    return sorted((k for k in keys if k.name in CHECK_NAMES), key=lambda k: (k.asset_key.to_user_string(), k.name))


def evaluation(
    key: dg.AssetCheckKey, report: imagegate.Report, lint: Mapping[str, Any] | None
) -> dg.AssetCheckEvaluation:
    """The evaluation of one declared check (``warn`` → failed with WARN severity)."""
    if key.name == DOCKERFILE_LINT:
        return lint_evaluation(key, report, lint)
    result = report.result(_REPORT_CHECK[key.name])
    metadata = {
        "outcome": result.outcome.value,
        "mode": result.mode,
        "message": result.message,
        "pinned": report.pinned or "(not resolved)",
    }
    if result.fix:
        metadata["fix"] = result.fix
    if result.waiver:
        metadata["waiver"] = result.waiver
    passed = result.outcome not in (imagegate.Outcome.FAIL, imagegate.Outcome.WARN)
    severity = dg.AssetCheckSeverity.WARN if result.outcome is imagegate.Outcome.WARN else dg.AssetCheckSeverity.ERROR
    return dg.AssetCheckEvaluation(
        asset_key=key.asset_key,
        check_name=key.name,
        passed=passed,
        metadata=metadata,
        severity=severity,
        description=result.message,
    )


def lint_not_runnable(asset: dg.AssetKey, *, source: str | None, lint_mode: str) -> str | None:
    """Why a declared ``dockerfile_lint`` cannot run for this launch, or ``None`` when it can.

    *source* is how the image is named when it is not built (``"image='…'"``), else ``None``.
    """
    where = asset.to_user_string()
    if source is not None:
        return (
            f"asset {where!r} declares the dockerfile_lint check, but its image is given by {source}: nothing is "
            "built here, so there is no Dockerfile to lint and the check cannot run (it is never reported as "
            "passed). Remove 'dockerfile_lint' from the asset's check specs, e.g. image_check_specs("
            f"{where!r}, ['image_pinned', 'image_non_root']), or declare it on the asset that builds the image "
            "(job_directory=, or image_build_asset())"
        )
    if lint_mode == "off":
        return (
            f"asset {where!r} declares the dockerfile_lint check, but the policy turns the lint off "
            "(checks.lint = \"off\"), so the check cannot run (it is never reported as passed). Remove "
            "'dockerfile_lint' from the asset's check specs, or set checks.lint to \"warn\" or \"enforce\""
        )
    return None


def lint_evaluation(
    key: dg.AssetCheckKey, report: imagegate.Report | None, lint: Mapping[str, Any] | None, *, refused: bool = False
) -> dg.AssetCheckEvaluation:
    """``dockerfile_lint``: passed with no lint errors; failed (ERROR) when lint errors refused the
    build, failed (WARN) when the build went on despite them (``checks.lint = "warn"`` or a waiver).

    Without a lint report it is never "passed": the resource refuses such a launch first
    (:func:`lint_not_runnable`), so this is only a fail-safe.
    """
    if lint is None:
        return dg.AssetCheckEvaluation(
            asset_key=key.asset_key,
            check_name=key.name,
            passed=False,
            metadata={"outcome": "not run", "message": "nothing was linted"},
            severity=dg.AssetCheckSeverity.WARN,
            description="not run: nothing was linted",
        )
    findings = list(lint.get("findings") or [])
    passed = bool(lint.get("passed", not findings))
    metadata: dict[str, Any] = {
        "outcome": "pass" if passed else "fail" if refused else "warn",
        "findings": dg.MetadataValue.json(findings),
        "dockerfile": str(lint.get("dockerfile", "")),
    }
    if report is not None and report.pinned:
        metadata["pinned"] = report.pinned
    return dg.AssetCheckEvaluation(
        asset_key=key.asset_key,
        check_name=key.name,
        passed=passed,
        metadata=metadata,
        severity=dg.AssetCheckSeverity.ERROR if refused else dg.AssetCheckSeverity.WARN,
        description=f"{len(findings)} finding(s)" + ("; the build was refused" if refused else ""),
    )
