"""The checks: pure functions from fetched facts to findings, and the policy step.

Each check has an id, looks only at a :class:`CheckInput` (no I/O), and returns
a :class:`Finding`. :func:`evaluate` runs them in order and applies the
policy's mode and waivers to get the outcomes a :class:`Report` holds.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping

from imagegate._facts import ImageFacts
from imagegate._policy import Backend, Mode, Policy
from imagegate._reference import Reference
from imagegate._tags import TagClass
from imagegate._user import MAX_UID, PasswdLookup, UserSpec, is_root, parse_user, resolve_name, runtime_uid
from imagegate._report import CheckResult, Finding, Outcome, Status

if TYPE_CHECKING:
    from imagegate._cosign import Verification


@dataclass(frozen=True, slots=True)
class CheckInput:
    """Everything a check may look at.

    ``facts`` is None when the image was not fetched (e.g. its registry is not
    allowed); ``user`` is a runtime override (Docker ``user=``, Kubernetes
    ``runAsUser``), checked instead of the image's USER when set; ``passwd`` is the
    image's ``/etc/passwd`` when the user is a name to resolve (Docker); ``signatures`` the
    cosign verification of the image's digest for each ``[[signatures]]`` rule that covers it
    (None: not verified, e.g. the image was not fetched).
    """

    reference: Reference
    facts: ImageFacts | None
    backend: Backend
    policy: Policy
    user: str | None = None
    passwd: PasswdLookup | None = None
    signatures: tuple[Verification, ...] | None = None


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
    if not failed:
        return Finding("signature", Status.OK, "; ".join(v.reason() for v in data.signatures))
    digest = failed[0].digest
    return Finding(
        "signature",
        Status.VIOLATION,
        f"{name}@{_short(digest)} is not signed as the policy requires: " + "; ".join(v.reason() for v in failed),
        f"sign the digest that launches: cosign sign --key cosign.key {name}@{digest} (or check the keys under "
        "[[signatures]] in the policy)",
    )


CHECKS: Mapping[str, Callable[[CheckInput], Finding]] = {
    "registry": check_registry,
    "pinned": check_pinned,
    "non-root": check_non_root,
    "signature": check_signature,
}


# Checks that read the image config; skipped when the image was not fetched.
NEEDS_IMAGE = frozenset({"non-root"})
# Checks a policy must configure to exist; absent from reports until it does ([[signatures]]).
CONFIGURED = {"signature": lambda policy: bool(policy.signatures)}


def apply_policy(finding: Finding, data: CheckInput, today: dt.date | None = None) -> CheckResult:
    """Turn a finding into an outcome under the policy's mode and waivers."""
    mode = data.policy.mode(finding.check)
    if finding.status is Status.OK:
        return CheckResult(finding.check, Outcome.PASS, mode.value, finding.message, finding.fix)
    waiver = data.policy.waiver_for(data.reference, finding.check, today)
    if waiver is not None:
        until = f" (until {waiver.expires})" if waiver.expires else ""
        return CheckResult(finding.check, Outcome.WAIVED, mode.value, finding.message, finding.fix, waiver.reason + until)
    expired = data.policy.expired_waiver_for(data.reference, finding.check, today)
    note = f"a waiver for this expired on {expired.expires} ({expired.reason}); renew it or fix the image" if expired else None
    if finding.status is Status.VIOLATION and mode is Mode.ENFORCE:
        return CheckResult(finding.check, Outcome.FAIL, mode.value, finding.message, finding.fix, note=note)
    return CheckResult(finding.check, Outcome.WARN, mode.value, finding.message, finding.fix, note=note)


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
        if check == "signature" and data.facts is None and data.policy.signature_rules_for(data.reference):
            results.append(CheckResult(check, Outcome.SKIPPED, mode.value, "not checked: the image was not fetched"))
            continue
        results.append(apply_policy(function(data), data, today))
    return tuple(results)


def _short(digest: str | None) -> str:
    return digest[:19] + "…" if digest and len(digest) > 19 else str(digest)
