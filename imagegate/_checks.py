"""The checks: pure functions from fetched facts to findings, and the policy step.

Each check has an id, looks only at a :class:`CheckInput` (no I/O), and returns
a :class:`Finding`. :func:`evaluate` runs them in order and applies the
policy's mode and waivers to get the outcomes a :class:`Report` holds.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Callable, Mapping

from imagegate._facts import ImageFacts
from imagegate._policy import Backend, Mode, Policy
from imagegate._reference import Reference
from imagegate._tags import TagClass
from imagegate._report import CheckResult, Finding, Outcome, Status


@dataclass(frozen=True, slots=True)
class CheckInput:
    """Everything a check may look at.

    ``facts`` is None when the image was not fetched (e.g. its registry is not
    allowed); ``user`` is a runtime override (Docker ``user=``, Kubernetes
    ``runAsUser``), checked instead of the image's USER when set.
    """

    reference: Reference
    facts: ImageFacts | None
    backend: Backend
    policy: Policy
    user: str | None = None


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
    """True for ``None``, ``""``, ``0``, ``root``, ``0:0``, ``root:root``, ``0:…``: root in the container."""
    if user is None:
        return True
    name = user.strip().partition(":")[0]
    return name in ("", "root") or (name.isdigit() and int(name) == 0)


def numeric_ids(user: str | None) -> tuple[int | None, int | None]:
    """(uid, gid) of a ``USER`` value where numeric: ``10001:10001`` → (10001, 10001); ``app`` → (None, None).

    What a runtime can set as ``runAsUser``/``runAsGroup``; the kubelet can verify only a numeric user.
    """
    name, _, group = (user or "").strip().partition(":")
    return (int(name) if name.isdigit() else None, int(group) if group.isdigit() else None)


def check_non_root(data: CheckInput) -> Finding:
    """The container's user is set and is not root; numeric for Kubernetes."""
    if data.user is not None:
        user, origin = data.user, "the runtime user override"
    elif data.facts is not None:
        user, origin = data.facts.user, "the image's USER"
    else:
        return Finding("non-root", Status.CONCERN, "not checked: the image was not fetched")
    shown = f"{user!r}" if user else "unset (root)"
    if is_root_user(user):
        return Finding(
            "non-root",
            Status.VIOLATION,
            f"{origin} is {shown}: the container would run as root",
            "add `USER 10001` (a numeric, non-root UID) to the Dockerfile"
            if data.user is None
            else "drop the root user override, or use a non-root numeric UID",
        )
    if data.backend is Backend.KUBERNETES and numeric_ids(user)[0] is None:
        return Finding(
            "non-root",
            Status.VIOLATION,
            f"{origin} is {shown}, not numeric: the kubelet cannot verify runAsNonRoot and will not start the pod",
            f"use a numeric UID (`USER 10001`, or `USER 10001:10001`) in the Dockerfile, or set runAsUser",
        )
    return Finding("non-root", Status.OK, f"runs as {user!r} ({origin})")


CHECKS: Mapping[str, Callable[[CheckInput], Finding]] = {
    "registry": check_registry,
    "pinned": check_pinned,
    "non-root": check_non_root,
}


# Checks that read the image config; skipped when the image was not fetched.
NEEDS_IMAGE = frozenset({"non-root"})


def apply_policy(finding: Finding, data: CheckInput, today: dt.date | None = None) -> CheckResult:
    """Turn a finding into an outcome under the policy's mode and waivers."""
    mode = data.policy.mode(finding.check)
    if finding.status is Status.OK:
        return CheckResult(finding.check, Outcome.PASS, mode.value, finding.message, finding.fix)
    waiver = data.policy.waiver_for(data.reference, finding.check, today)
    if waiver is not None:
        until = f" (until {waiver.expires})" if waiver.expires else ""
        return CheckResult(finding.check, Outcome.WAIVED, mode.value, finding.message, finding.fix, waiver.reason + until)
    if finding.status is Status.VIOLATION and mode is Mode.ENFORCE:
        return CheckResult(finding.check, Outcome.FAIL, mode.value, finding.message, finding.fix)
    return CheckResult(finding.check, Outcome.WARN, mode.value, finding.message, finding.fix)


def evaluate(data: CheckInput, today: dt.date | None = None) -> tuple[CheckResult, ...]:
    """Run every check the policy has on, in order."""
    results = []
    for check, function in CHECKS.items():
        mode = data.policy.mode(check)
        if mode is Mode.OFF:
            results.append(CheckResult(check, Outcome.SKIPPED, mode.value, "turned off by the policy"))
            continue
        if check in NEEDS_IMAGE and data.facts is None and data.user is None:
            results.append(CheckResult(check, Outcome.SKIPPED, mode.value, "not checked: the image was not fetched"))
            continue
        results.append(apply_policy(function(data), data, today))
    return tuple(results)


def _short(digest: str | None) -> str:
    return digest[:19] + "…" if digest and len(digest) > 19 else str(digest)
