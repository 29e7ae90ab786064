"""Asset checks users declare on their container assets, and their results from a report.

Dagster's blocking checks run *after* an asset and only stop downstream assets,
so these are evaluated inside the asset, before the container starts: the
client logs an ``AssetCheckEvaluation`` for each declared check, then launches
or raises :class:`ImageRefused`. The results therefore appear whether the asset
launched or was refused.

========================= ============================================= ==========================================
check name                from                                          when it cannot run
========================= ============================================= ==========================================
``image_pinned``          the report's ``pinned`` result                —
``image_non_root``        the report's ``non-root`` result              —
``image_signed``          the report's ``signature`` result             no ``[[signatures]]`` rule covers the image,
                                                                        or the policy turns the check off
``image_vulnerabilities`` the report's ``vulnerabilities`` result       no ``[[vulnerabilities]]`` rule covers the
                                                                        image, or the policy turns the check off
``dockerfile_lint``       the Dockerfile lint of a job-directory build  refused before anything runs
========================= ============================================= ==========================================

``dockerfile_lint``, ``image_signed`` and ``image_vulnerabilities`` are never reported as passed when nothing
was linted or verified. An ``@asset`` cannot skip a check it declares (Dagster fails the step when a declared
check returns no result, and an ``AssetCheckResult`` has no "skipped"), so declaring one where it cannot run is a
settings error: :func:`lint_not_runnable` / :func:`evidence_not_runnable` say why, and the resource raises it
before anything is launched (before anything is resolved, built or launched where the source already tells:
an ``image=`` reference, a policy without the rules); the component refuses it when definitions load.

A check is "passed" only when it ran and passed (the two evidence checks: a ``pass`` of a rule that covers the
image). A waived result (a ``[[waivers]]`` entry let a root or unsigned image launch), a skipped one (the policy
turns the check off, or the image was not fetched) and a warning are failed checks with WARN severity: the launch
went ahead, but nothing vouches for what the check name says. A failure is ERROR (the launch was refused).
Each evaluation's metadata says ``verified`` (true only when passed) and the core's ``outcome``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import dagster as dg
import imagegate

IMAGE_PINNED = "image_pinned"
IMAGE_NON_ROOT = "image_non_root"
IMAGE_SIGNED = "image_signed"
IMAGE_VULNERABILITIES = "image_vulnerabilities"
DOCKERFILE_LINT = "dockerfile_lint"
CHECK_NAMES = (IMAGE_PINNED, IMAGE_NON_ROOT, IMAGE_SIGNED, IMAGE_VULNERABILITIES, DOCKERFILE_LINT)

_REPORT_CHECK = {IMAGE_PINNED: "pinned", IMAGE_NON_ROOT: "non-root", IMAGE_SIGNED: "signature",
                 IMAGE_VULNERABILITIES: "vulnerabilities"}
_DESCRIPTIONS = {
    IMAGE_PINNED: "imagegate: the image is pinned (digest or immutable tag) and launched by digest",
    IMAGE_NON_ROOT: "imagegate: the image runs as a non-root (on Kubernetes: numeric) user",
    IMAGE_SIGNED: "imagegate: the digest that launches carries cosign signatures by the policy's keys",
    IMAGE_VULNERABILITIES: "imagegate: a signed vulnerability attestation of the digest passes the policy",
    DOCKERFILE_LINT: "imagegate: the job directory's Dockerfile passes the lint",
}


@dataclass(frozen=True)
class _Evidence:
    """A check that verifies evidence the policy asks for: its report check, the policy's rules, their table."""

    check: str  # the report's check id
    rules: str  # the Policy attribute holding the rules
    rules_for: str  # the Policy method: the rules that cover a reference
    table: str  # how the policy file spells them


EVIDENCE = {
    IMAGE_SIGNED: _Evidence("signature", "signatures", "signature_rules_for", "[[signatures]]"),
    IMAGE_VULNERABILITIES: _Evidence("vulnerabilities", "vulnerabilities", "vulnerability_rules_for",
                                     "[[vulnerabilities]]"),
}


def image_check_specs(
    asset: dg.AssetKey | str | Sequence[str],
    checks: Iterable[str] = (IMAGE_PINNED, IMAGE_NON_ROOT),
    *,
    blocking: bool = False,
) -> list[dg.AssetCheckSpec]:
    """``AssetCheckSpec``s for ``@dg.asset(check_specs=...)``.

    ``blocking=True`` additionally stops downstream assets when a check fails with
    ERROR severity (a refused image already fails its own asset). Declare ``image_signed`` /
    ``image_vulnerabilities`` only where the policy has a rule that covers the image.
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
    key: dg.AssetCheckKey,
    report: imagegate.Report,
    lint: Mapping[str, Any] | None,
    policy: imagegate.Policy | None = None,
) -> dg.AssetCheckEvaluation:
    """The evaluation of one declared check (``warn`` → failed with WARN severity).

    ``image_signed`` / ``image_vulnerabilities`` pass only on a ``pass`` under a rule of *policy* that covers the
    image (without *policy*, never): skipped, waived or uncovered is failed with WARN severity, nothing verified.
    """
    if key.name == DOCKERFILE_LINT:
        return lint_evaluation(key, report, lint)
    try:
        result = report.result(_REPORT_CHECK[key.name])
    except KeyError:  # not in the report: the policy has no rule for it (the resource refuses this first)
        return _not_run(key, report, f"the report has no {_REPORT_CHECK[key.name]!r} result (the policy has no "
                        f"{EVIDENCE[key.name].table} rule)" if key.name in EVIDENCE else "not in the report")
    metadata: dict[str, Any] = {
        "outcome": result.outcome.value,
        "mode": result.mode,
        "message": result.message,
        "pinned": report.pinned or "(not resolved)",
    }
    if result.fix:
        metadata["fix"] = result.fix
    if result.waiver:
        metadata["waiver"] = result.waiver
    if result.note and key.name in EVIDENCE:
        metadata["note"] = result.note
    # Only a check that ran and passed is "passed": a waived result (it would have failed), a skipped one (the
    # policy turns it off, or the image was not fetched) and a warning are failed with WARN severity (the launch
    # went ahead); a failure is ERROR (the launch was refused).
    verified = result.outcome is imagegate.Outcome.PASS
    if key.name in EVIDENCE:
        metadata.update(evidence_metadata(result, report))
        verified = verified and covered(key.name, policy, report)  # a pass no rule covers verified nothing
    metadata["verified"] = verified
    passed = verified
    severity = dg.AssetCheckSeverity.ERROR if result.outcome is imagegate.Outcome.FAIL else dg.AssetCheckSeverity.WARN
    return dg.AssetCheckEvaluation(
        asset_key=key.asset_key,
        check_name=key.name,
        passed=passed,
        metadata=metadata,
        severity=severity,
        description=result.message,
    )


def covered(name: str, policy: imagegate.Policy | None, report: imagegate.Report | Any) -> bool:
    """Whether a rule of *policy* for evidence check *name* covers the image of *report* (or a ``Reference``)."""
    if policy is None:
        return False
    evidence = EVIDENCE[name]
    rules_for = getattr(policy, evidence.rules_for, None)
    if rules_for is None:
        return False
    if isinstance(report, imagegate.Report):
        text = report.pinned or report.reference
        try:
            ref = imagegate.parse_reference(text)
        except imagegate.ImagegateError:
            return False
    else:
        ref = report
    return bool(rules_for(ref))


def _not_run(key: dg.AssetCheckKey, report: imagegate.Report | None, why: str) -> dg.AssetCheckEvaluation:
    metadata: dict[str, Any] = {"outcome": "not run", "message": why, "verified": False}
    if report is not None:
        metadata["pinned"] = report.pinned or "(not resolved)"
    return dg.AssetCheckEvaluation(asset_key=key.asset_key, check_name=key.name, passed=False, metadata=metadata,
                                   severity=dg.AssetCheckSeverity.WARN, description=f"not run: {why}")


def _details(result: imagegate.CheckResult) -> Mapping[str, Any]:
    """The structured part of a result (who signed, the deciding findings…), as the report carries it."""
    details = getattr(result, "details", None)
    return details if isinstance(details, Mapping) else {}


def evidence_metadata(result: imagegate.CheckResult, report: imagegate.Report) -> dict[str, Any]:
    """What an evidence check adds to its metadata, from the result's details."""
    details = _details(result)
    if result.check == "signature":
        return _signature_metadata(details, report)
    if result.check == "vulnerabilities":
        return _vulnerability_metadata(details)
    return {}


def _signature_metadata(details: Mapping[str, Any], report: imagegate.Report) -> dict[str, Any]:
    """``digest`` (what must be signed: the digest that launches), ``signed_by`` (the keys whose signatures
    verified), ``format`` (legacy / bundle: where they were found), ``signatures`` (each one looked at, and why
    it did not count)."""
    digest = details.get("digest") or (report.pinned.rpartition("@")[2] if report.pinned else None)
    out: dict[str, Any] = {"digest": str(digest or "(not resolved)")}
    if "signed_by" in details:
        out["signed_by"] = ", ".join(str(k) for k in details["signed_by"]) or "(nobody)"
    if "formats" in details:
        out["format"] = ", ".join(str(f) for f in details["formats"]) or "(none verified)"
    if details.get("rules"):
        out["signatures"] = dg.MetadataValue.json(list(details["rules"]))
    return out


def _vulnerability_metadata(details: Mapping[str, Any]) -> dict[str, Any]:
    """The counts by severity, the findings that decided, and the attestation that counted (scanner, scan time,
    signer), as the core lists them."""
    out: dict[str, Any] = {}
    attestation = details.get("attestation")
    if isinstance(attestation, Mapping):  # the scan that counted
        for key, name in (("format", "scan_format"), ("scanner", "scanner"), ("scanned_at", "scanned_at"),
                          ("predicate_type", "predicate_type")):
            if attestation.get(key):
                out[name] = str(attestation[key])
        out["signed_by"] = ", ".join(str(k) for k in attestation.get("signed_by") or ()) or "(nobody)"
    for key in ("max_severity", "only_fixable", "max_age", "total", "counted", "blocking", "waived", "more_findings"):
        if isinstance(details.get(key), (str, int, float, bool)):
            out[key] = details[key]
    if isinstance(details.get("counts"), Mapping):
        out["counts"] = dg.MetadataValue.json(dict(details["counts"]))  # by severity, of the findings that count
    for key in ("findings", "expired_waivers", "refused"):  # the findings that decided; what did not count, and why
        if details.get(key):
            out[key] = dg.MetadataValue.json(list(details[key]))
    return out


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


def evidence_not_runnable(asset: dg.AssetKey, name: str, policy: imagegate.Policy, reference: Any = None) -> str | None:
    """Why a declared ``image_signed`` / ``image_vulnerabilities`` cannot run, or ``None`` when it can (or when
    that is known only once the image is resolved: *reference* is None).

    It cannot run when the policy has no such rule at all, turns the check off, or (given *reference*, a
    ``Reference``) has no rule that covers the image: then nothing would be verified, and a check that verified
    nothing is never reported as passed.
    """
    evidence = EVIDENCE[name]
    where = asset.to_user_string()
    remove = (f"Remove {name!r} from the asset's check specs (image_check_specs({where!r}, ['image_pinned', "
              "'image_non_root'])), or")
    if not getattr(policy, evidence.rules, ()):
        return (f"asset {where!r} declares the {name} check, but the policy ({policy.source or 'the defaults'}) has "
                f"no {evidence.table} rule, so nothing would be verified and the check cannot run (it is never "
                f"reported as passed). {remove} add a {evidence.table} rule that covers the image "
                "(see docs/signatures.md)")
    if policy.mode(evidence.check).value == "off":
        return (f"asset {where!r} declares the {name} check, but the policy turns it off (checks.{evidence.check} = "
                f"\"off\"), so the check cannot run (it is never reported as passed). {remove} set "
                f"checks.{evidence.check} to \"enforce\" or \"warn\"")
    if reference is not None and not covered(name, policy, reference):
        return (f"asset {where!r} declares the {name} check, but no {evidence.table} rule of the policy "
                f"({policy.source or 'the defaults'}) covers {reference.name}, so nothing would be verified and the "
                f"check cannot run (it is never reported as passed). {remove} add {reference.name!r} (or a glob "
                f"that matches it) to a {evidence.table} rule's images")
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
