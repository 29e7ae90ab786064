"""The checks: pure functions from fetched facts to findings, and the policy step.

Each check has an id, looks only at a :class:`CheckInput` (no I/O), and returns
a :class:`Finding`. :func:`evaluate` runs them in order and applies the
policy's mode and waivers to get the outcomes a :class:`Report` holds.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from imagegate._facts import ImageFacts
from imagegate._policy import Backend, Mode, Policy
from imagegate._reference import Reference
from imagegate._tags import TagClass
from imagegate._user import MAX_UID, PasswdLookup, UserSpec, is_root, parse_user, resolve_name, runtime_uid
from imagegate._report import CheckResult, Finding, Outcome, Status

if TYPE_CHECKING:
    from imagegate._cosign import Attestations, Verification


@dataclass(frozen=True, slots=True)
class CheckInput:
    """Everything a check may look at.

    ``facts`` is None when the image was not fetched (e.g. its registry is not
    allowed); ``user`` is a runtime override (Docker ``user=``, Kubernetes
    ``runAsUser``), checked instead of the image's USER when set; ``passwd`` is the
    image's ``/etc/passwd`` when the user is a name to resolve (Docker); ``signatures`` the
    cosign verification of the image's digest for each ``[[signatures]]`` rule that covers it
    (None: not verified, e.g. the image was not fetched); ``vulnerabilities`` likewise the verified
    attestations for each ``[[vulnerabilities]]`` rule that covers it; ``now`` the time a scan's age
    is measured at and ``today`` the day waivers expire by (default: the clock).
    """

    reference: Reference
    facts: ImageFacts | None
    backend: Backend
    policy: Policy
    user: str | None = None
    passwd: PasswdLookup | None = None
    signatures: tuple[Verification, ...] | None = None
    vulnerabilities: tuple[Attestations, ...] | None = None
    now: dt.datetime | None = None
    today: dt.date | None = None


def check_registry(data: CheckInput) -> Finding:
    """The image comes from a registry the policy allows."""
    allowed = data.policy.allowed_registries
    if not allowed:
        return Finding("registry", Status.OK, f"{data.reference.registry} (no allowed-registries configured)")
    if data.policy.registry_allowed(data.reference.registry):
        return Finding("registry", Status.OK, f"{data.reference.registry} is an allowed registry")
    return Finding(
        "registry",
        Status.VIOLATION,
        f"{data.reference.registry} is not an allowed registry (allowed: {', '.join(allowed)})",
        "push the image to an allowed registry, or add it to allowed-registries in the policy",
    )


def check_pinned(data: CheckInput) -> Finding:
    """What launches carries a digest; a mutable tag is refused unless the policy resolves it."""
    ref = data.reference
    resolved = data.facts.digest if data.facts else None
    if ref.digest is not None:
        return Finding("pinned", Status.OK, f"pinned by digest {_short(ref.digest)}")
    tag_class, reason = data.policy.tag_rules.classify(ref.tag)
    launches = f"; launching {_short(resolved)}" if resolved else ""
    pin_fix = f"pin it: {ref.with_digest(resolved).familiar}" if resolved else "pin a digest: NAME:TAG@sha256:…"
    if tag_class is TagClass.MUTABLE:
        if data.policy.resolve_mutable_tags:
            return Finding(
                "pinned",
                Status.CONCERN,
                f"{reason}; resolved by policy (resolve-mutable-tags){launches}",
                f"{pin_fix}, or use an immutable tag (a full version or git SHA)",
            )
        return Finding(
            "pinned",
            Status.VIOLATION,
            f"{reason}; refused: the next run could launch a different image",
            f"{pin_fix}, use an immutable tag (a full version or git SHA), "
            "or set resolve-mutable-tags = true to launch its current digest",
        )
    if tag_class is TagClass.IMMUTABLE:
        return Finding("pinned", Status.OK, f"{reason}{launches}")
    return Finding(
        "pinned",
        Status.CONCERN,
        f"{reason}{launches}",
        f"{pin_fix}, or list the tag's pattern under immutable-tags (or mutable-tags) in the policy",
    )


def is_root_user(user: str | None) -> bool:
    """True when *user* itself means root to the engine: unset, ``""``, ``root``, or a uid that Go's
    ``Atoi`` reads as 0 modulo 2**32 (``0``, ``+0``, ``-0``, ``000``, ``0:0``, ``4294967296``…).

    A spelling the engine would read ambiguously (whitespace, a second ``:``, ``+1000``) counts as
    root here: it is not safe. A name other than ``root`` may still be uid 0 in the image's
    ``/etc/passwd``; the ``non-root`` check looks that up, this function cannot.
    """
    if user is None:
        return True
    spec = parse_user(user)
    return spec.problem is not None or is_root(spec)


def numeric_ids(user: str | None) -> tuple[int | None, int | None]:
    """(uid, gid) of a ``USER`` value where plainly numeric: ``10001:10001`` -> (10001, 10001); ``app`` -> (None, None).

    What a runtime can set as ``runAsUser``/``runAsGroup``; the kubelet can verify only a numeric user.
    Spellings the engine reads differently from how they look (``+1000``, ``01000``) give None.
    """
    spec = parse_user(user)
    uid = spec.canonical_uid
    gid = None
    if spec.problem is None and spec.group is not None:
        group = parse_user(spec.group)
        gid = group.canonical_uid if group.group is None else None
    return uid, gid


def check_non_root(data: CheckInput) -> Finding:
    """The container's user is set and is not root — as the runtime reads it; numeric for Kubernetes."""
    if data.user is not None:
        user, origin = data.user, "the runtime user override"
    elif data.facts is not None:
        user, origin = data.facts.user, "the image's USER"
    else:
        return Finding("non-root", Status.CONCERN, "not checked: the image was not fetched")
    fix = (
        "add `USER 10001` (a numeric, non-root UID) to the Dockerfile"
        if data.user is None
        else "drop the root user override, or use a non-root numeric UID"
    )
    spec = parse_user(user)
    shown = f"{user!r}" if user else "unset (root)"
    if spec.problem is not None:
        return Finding("non-root", Status.VIOLATION, f"{origin} is {shown}: {spec.problem}", fix)
    if is_root(spec):
        return Finding("non-root", Status.VIOLATION, f"{origin} is {shown}: the container would run as root", fix)
    if data.backend is Backend.KUBERNETES:
        if spec.uid is None:
            return Finding(
                "non-root",
                Status.VIOLATION,
                f"{origin} is {shown}, not numeric: the kubelet cannot verify runAsNonRoot and will not start the pod",
                "use a numeric UID (`USER 10001`, or `USER 10001:10001`) in the Dockerfile, or set runAsUser",
            )
        return Finding("non-root", Status.OK, f"runs as {user!r} ({origin})")
    if spec.uid is not None:
        return Finding("non-root", Status.OK, f"runs as {user!r} ({origin})")
    return _named_user(data, spec, origin, shown)


def _named_user(data: CheckInput, spec: UserSpec, origin: str, shown: str) -> Finding:
    """Docker resolves a user name in the image's /etc/passwd: so do we, and refuse what we cannot resolve."""
    numeric = "use the numeric UID (`USER 10001:10001`), which needs no lookup"
    if not data.policy.resolve_user_names:
        return Finding(
            "non-root", Status.VIOLATION,
            f"{origin} is {shown}, a name, and the policy refuses names (resolve-user-names = false)", numeric,
        )
    lookup = data.passwd
    if lookup is None:
        return Finding("non-root", Status.VIOLATION, f"{origin} is {shown}, a name that was not resolved", numeric)
    if lookup.problem is not None:
        return Finding(
            "non-root", Status.VIOLATION,
            f"{origin} is {shown}, a name, and the image's /etc/passwd cannot be read safely ({lookup.problem})",
            numeric,
        )
    if lookup.entries is None:
        return Finding(
            "non-root", Status.VIOLATION,
            f"{origin} is {shown}, but the image has no /etc/passwd: the engine cannot start it", numeric,
        )
    entry = resolve_name(spec.user, lookup.entries)
    if entry is None:
        return Finding(
            "non-root", Status.VIOLATION,
            f"{origin} is {shown}, which is not in the image's /etc/passwd: the engine cannot start it", numeric,
        )
    uid = runtime_uid(entry.uid)
    if uid == 0:
        return Finding(
            "non-root", Status.VIOLATION,
            f"{origin} is {shown}, which the image's /etc/passwd maps to uid {entry.uid}: the engine runs it as root",
            "give the user a non-root UID, or use `USER 10001:10001`",
        )
    if not 0 < entry.uid <= MAX_UID:
        return Finding(
            "non-root", Status.VIOLATION,
            f"{origin} is {shown}, uid {entry.uid} in the image's /etc/passwd, outside 1..{MAX_UID}", numeric,
        )
    return Finding("non-root", Status.OK, f"runs as {spec.text!r} = uid {uid} ({origin}, from the image's /etc/passwd)")


def check_signature(data: CheckInput) -> Finding:
    """The image's digest carries valid cosign signatures by the keys every matching ``[[signatures]]`` rule names."""
    rules = data.policy.signature_rules_for(data.reference)
    name = data.reference.name
    if not rules:
        return Finding("signature", Status.OK, f"no [[signatures]] rule covers {name}")
    if data.signatures is None:  # fail closed: a caller that fetched the image but did not verify
        return Finding("signature", Status.VIOLATION, f"{name}'s signatures were not verified",
                       "check the image with imagegate.check(), which verifies them")
    failed = [v for v in data.signatures if not v.verified]
    details = _signature_details(data.signatures)
    if not failed:
        return Finding("signature", Status.OK, "; ".join(v.reason() for v in data.signatures), details=details)
    digest = failed[0].digest
    return Finding(
        "signature",
        Status.VIOLATION,
        f"{name}@{_short(digest)} is not signed as the policy requires: " + "; ".join(v.reason() for v in failed),
        f"sign the digest that launches: cosign sign --key cosign.key {name}@{digest} (or check the keys under "
        "[[signatures]] in the policy)",
        details=details,
    )


_LISTED_SIGNATURES = 10  # per rule, in a result's details


def _signature_details(verifications: tuple[Verification, ...]) -> dict[str, Any]:
    """Who signed the digest and in which format, and per rule each signature looked at (bounded), JSON-ready: what
    the doors show (Dagster's ``image_signed`` metadata, the Airflow record and audit page)."""
    return {
        "digest": verifications[0].digest if verifications else None,
        "signed_by": list(dict.fromkeys(key for v in verifications for key in v.signed_by)),
        "formats": sorted({c.format for v in verifications for c in v.signatures if c.verified}),
        "rules": [{"required": v.required, "keys": list(v.keys), "signed_by": list(v.signed_by),
                   "signatures": [c.to_dict() for c in v.signatures[:_LISTED_SIGNATURES]],
                   "more_signatures": max(0, len(v.signatures) - _LISTED_SIGNATURES)} for v in verifications],
    }


def check_vulnerabilities(data: CheckInput) -> Finding:
    """The newest verified vulnerability scan of the image's digest (a cosign attestation signed by the rule's keys)
    passes every matching ``[[vulnerabilities]]`` rule: severity, fixability, age, waivers (:func:`_vulns.judge`)."""
    from imagegate._policy import image_names
    from imagegate._vulns import candidates, judge

    rules = data.policy.vulnerability_rules_for(data.reference)
    name = data.reference.name
    if not rules:
        return Finding("vulnerabilities", Status.OK, f"no [[vulnerabilities]] rule covers {name}")
    if data.vulnerabilities is None or len(data.vulnerabilities) != len(rules):  # fail closed: not verified
        return Finding("vulnerabilities", Status.VIOLATION, f"{name}'s vulnerability attestations were not verified",
                       "check the image with imagegate.check(), which verifies them")
    now = data.now or dt.datetime.now(dt.timezone.utc)
    today = data.today or now.date()
    own = ((data.facts.digest, data.facts.manifest_digest), (data.facts.config_digest,)) if data.facts else ((), ())
    verdicts = [judge(rule, candidates(found, manifests=own[0], configs=own[1]), image_names=image_names(data.reference),
                      now=now, today=today)
                for rule, found in zip(rules, data.vulnerabilities)]
    failed = [v for v in verdicts if not v.ok]
    digest = data.vulnerabilities[0].digest
    if not failed:
        return Finding("vulnerabilities", Status.OK, "; ".join(v.message for v in verdicts), details=verdicts[0].details)
    pinned = f"{name}@{digest}"
    if all(v.missing for v in failed):
        fix = (f"scan the digest that launches and attest the report: trivy image --format cosign-vuln -o vuln.json "
               f"{pinned} && cosign attest --key cosign.key --type vuln --predicate vuln.json {pinned}")
    elif any("no scan time" in v.message for v in failed):
        fix = (f"attest a report that carries its scan time (trivy --format cosign-vuln or json; Trivy's SARIF has "
               f"none) for {pinned}, or drop max-age from the rule")
    elif any("too old" in v.message for v in failed):
        fix = f"scan {pinned} again and attest the new report (cosign attest --type vuln …)"
    else:
        fix = ("rebuild on fixed packages and attest a new scan, or waive a finding with [[vulnerabilities.waivers]] "
               "(id = \"CVE-…\", reason = \"…\", expires = YYYY-MM-DD)")
    return Finding("vulnerabilities", Status.VIOLATION,
                   f"{name}@{_short(digest)}: " + "; ".join(v.message for v in failed), fix, details=failed[0].details)


CHECKS: Mapping[str, Callable[[CheckInput], Finding]] = {
    "registry": check_registry,
    "pinned": check_pinned,
    "non-root": check_non_root,
    "signature": check_signature,
    "vulnerabilities": check_vulnerabilities,
}


# Checks that read the image config; skipped when the image was not fetched.
NEEDS_IMAGE = frozenset({"non-root"})
# Checks a policy must configure to exist; absent from reports until it does ([[signatures]]).
CONFIGURED = {"signature": lambda policy: bool(policy.signatures),
              "vulnerabilities": lambda policy: bool(policy.vulnerabilities)}


def apply_policy(finding: Finding, data: CheckInput, today: dt.date | None = None) -> CheckResult:
    """Turn a finding into an outcome under the policy's mode and waivers."""
    mode = data.policy.mode(finding.check)
    details = finding.details
    if finding.status is Status.OK:
        return CheckResult(finding.check, Outcome.PASS, mode.value, finding.message, finding.fix, details=details)
    waiver = data.policy.waiver_for(data.reference, finding.check, today)
    if waiver is not None:
        until = f" (until {waiver.expires})" if waiver.expires else ""
        return CheckResult(finding.check, Outcome.WAIVED, mode.value, finding.message, finding.fix, waiver.reason + until,
                           details=details)
    expired = data.policy.expired_waiver_for(data.reference, finding.check, today)
    note = f"a waiver for this expired on {expired.expires} ({expired.reason}); renew it or fix the image" if expired else None
    if finding.status is Status.VIOLATION and mode is Mode.ENFORCE:
        return CheckResult(finding.check, Outcome.FAIL, mode.value, finding.message, finding.fix, note=note,
                           details=details)
    return CheckResult(finding.check, Outcome.WARN, mode.value, finding.message, finding.fix, note=note, details=details)


def evaluate(data: CheckInput, today: dt.date | None = None) -> tuple[CheckResult, ...]:
    """Run every check the policy has on, in order."""
    results = []
    for check, function in CHECKS.items():
        if check in CONFIGURED and not CONFIGURED[check](data.policy):
            continue
        mode = data.policy.mode(check)
        if mode is Mode.OFF:
            results.append(CheckResult(check, Outcome.SKIPPED, mode.value, "turned off by the policy"))
            continue
        if check in NEEDS_IMAGE and data.facts is None and data.user is None:
            results.append(CheckResult(check, Outcome.SKIPPED, mode.value, "not checked: the image was not fetched"))
            continue
        covered = {"signature": data.policy.signature_rules_for, "vulnerabilities": data.policy.vulnerability_rules_for}
        if check in covered and data.facts is None and covered[check](data.reference):
            results.append(CheckResult(check, Outcome.SKIPPED, mode.value, "not checked: the image was not fetched"))
            continue
        results.append(apply_policy(function(data), data, today))
    return tuple(results)


def _short(digest: str | None) -> str:
    return digest[:19] + "…" if digest and len(digest) > 19 else str(digest)
