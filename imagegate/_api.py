"""The string-in facade: ``resolve``, ``inspect``, ``check`` and ``enforce``.

These are what the CLI, the Airflow operators and the Dagster resources call.
They share one :class:`RegistryClient` per set of insecure registries, so every
check of one reference in a process costs one manifest and one config fetch.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from imagegate._errors import CheckFailed, typed_errors
from imagegate._facts import ImageFacts, Platform
from imagegate._reference import Reference, parse_reference

if TYPE_CHECKING:
    import datetime as dt

    from imagegate._cosign import Attestations
    from imagegate._policy import Backend, Policy, VulnerabilityRule
    from imagegate._registry import RegistryClient
    from imagegate._report import Report

# The checks and the policy are imported where a check runs: `imagegate resolve` (one HEAD) does
# without them, which is a sixth of its start-up.

_clients: dict[tuple[str, ...], RegistryClient] = {}
_clients_lock = threading.Lock()


def shared_client(insecure_registries: tuple[str, ...] = ()) -> RegistryClient:
    """The process-wide client for these insecure registries (created on first use)."""
    key = tuple(sorted(insecure_registries))
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            from imagegate._registry import RegistryClient  # httpx loads only when needed

            client = _clients[key] = RegistryClient(insecure_registries=key)
        return client


def _reference(reference: str | Reference) -> Reference:
    return reference if isinstance(reference, Reference) else parse_reference(reference)


def _platform(platform: str | Platform | None, policy: Policy | None) -> Platform:
    if platform is None:
        assert policy is not None
        return policy.platform
    return platform if isinstance(platform, Platform) else Platform.parse(platform)


@typed_errors
def resolve(
    reference: str | Reference,
    *,
    platform: str | Platform | None = None,
    client: RegistryClient | None = None,
) -> Reference:
    """Pin *reference* to the digest it points at now.

    Without *platform* this is one HEAD request. With one, the image's config is
    read to prove the image exists for that platform.
    """
    ref = _reference(reference)
    client = client or shared_client()
    if platform is not None:
        return client.inspect(ref, _platform(platform, None)).pinned
    return ref.with_digest(client.resolve(ref).digest)


@typed_errors
def inspect(
    reference: str | Reference,
    *,
    platform: str | Platform | None = None,
    client: RegistryClient | None = None,
) -> ImageFacts:
    """Pin *reference* and read its platform image's config."""
    from imagegate._policy import Policy

    ref = _reference(reference)
    return (client or shared_client()).inspect(ref, _platform(platform, Policy()))


@typed_errors
def check(
    reference: str | Reference,
    *,
    backend: str | Backend = "docker",
    user: str | None = None,
    policy: Policy | None = None,
    platform: str | Platform | None = None,
    client: RegistryClient | None = None,
    today: dt.date | None = None,
) -> Report:
    """Resolve *reference* and run every check; never raises for a failed check.

    The image is not fetched when its registry is refused by the policy, so no
    request goes to a registry that is not allowed. Registry and reference
    errors propagate as :class:`~imagegate.RegistryError` / ``InvalidReference``.
    """
    import datetime as dt

    from imagegate._checks import CheckInput, evaluate
    from imagegate._policy import Backend, Mode, Policy
    from imagegate._report import Report

    policy = policy or Policy()
    ref = _reference(reference)
    chosen = _platform(platform, policy)
    mode = Backend.parse(backend)
    facts = None
    refused = (
        policy.mode("registry") is Mode.ENFORCE
        and not policy.registry_allowed(ref.registry)
        and policy.waiver_for(ref, "registry", today) is None
    )
    passwd = None
    signatures = None
    vulnerabilities = None
    now = dt.datetime.now(dt.timezone.utc)
    if not refused:
        client = client or shared_client(policy.insecure_registries)
        facts = client.inspect(ref, chosen)
        if _needs_passwd(facts, mode, user, policy):
            passwd = client.passwd(facts)
        if policy.mode("signature") is not Mode.OFF and policy.signature_rules_for(ref):
            from imagegate._cosign import verify_rules

            signatures = verify_rules(client, facts.pinned, policy.signature_rules_for(ref))
        if policy.mode("vulnerabilities") is not Mode.OFF and policy.vulnerability_rules_for(ref):
            vulnerabilities = verify_vulnerability_rules(client, facts.pinned, policy.vulnerability_rules_for(ref), now)
    data = CheckInput(reference=ref, facts=facts, backend=mode, policy=policy, user=user, passwd=passwd,
                      signatures=signatures, vulnerabilities=vulnerabilities, now=now, today=today)
    return Report(
        reference=str(reference) if isinstance(reference, str) else ref.familiar,
        pinned=facts.pinned.familiar if facts else None,
        backend=mode.value,
        platform=str(facts.platform if facts else chosen),
        results=evaluate(data, today),
        user=user if user is not None else (facts.user if facts else None),
        facts=facts.to_dict() if facts else None,
        notices=policy.notices(),
    )


def verify_vulnerability_rules(client: RegistryClient, pinned: Reference, rules: tuple[VulnerabilityRule, ...],
                               now: dt.datetime) -> tuple[Attestations, ...]:
    """The verified attestations of the image *pinned* names (by digest) for each ``[[vulnerabilities]]`` rule: its
    keys, required count and predicate types; a cached result older than the rule's max-age is looked up again."""
    from imagegate._cosign import verify_attestations
    from imagegate._vulns import fresh_enough

    assert pinned.digest is not None
    return tuple(verify_attestations(client, pinned, pinned.digest, rule.keys, types=rule.types, required=rule.required,
                                     fresh_enough=fresh_enough(rule, now)) for rule in rules)


def _needs_passwd(facts: ImageFacts, backend: Backend, user: str | None, policy: Policy) -> bool:
    """Docker resolves a user name through the image's /etc/passwd; only then is it read (layers are big)."""
    from imagegate._policy import Backend, Mode
    from imagegate._user import is_root, parse_user

    if backend is not Backend.DOCKER or policy.mode("non-root") is Mode.OFF or not policy.resolve_user_names:
        return False
    spec = parse_user(facts.user if user is None else user)
    return spec.is_named and not is_root(spec)


@typed_errors
def enforce(
    reference: str | Reference,
    *,
    backend: str | Backend = "docker",
    user: str | None = None,
    policy: Policy | None = None,
    platform: str | Platform | None = None,
    client: RegistryClient | None = None,
    today: dt.date | None = None,
) -> Report:
    """Like :func:`check`, but raise :class:`CheckFailed` (carrying the report) when a check fails.

    Call this before launching anything; launch ``report.pinned``.
    """
    report = check(
        reference, backend=backend, user=user, policy=policy, platform=platform, client=client, today=today
    )
    if not report.passed:
        raise CheckFailed(report)
    return report


@typed_errors
def check_offline(
    reference: str | Reference,
    *,
    backend: str | Backend = "docker",
    user: str | None = None,
    policy: Policy | None = None,
    today: dt.date | None = None,
) -> Report:
    """The checks that need no registry: the allow-list, the tag, and a *user* override that is
    root (or ambiguous) by its text alone. Nothing is fetched; ``non-root`` on the image itself is
    left for the real check (it is reported skipped).
    """
    from imagegate._checks import CheckInput, evaluate
    from imagegate._policy import Backend, Policy
    from imagegate._report import Report
    from imagegate._user import is_root, parse_user

    policy = policy or Policy()
    ref = _reference(reference)
    mode = Backend.parse(backend)
    risky = user is not None and (is_root(parse_user(user)) or parse_user(user).problem is not None)
    data = CheckInput(reference=ref, facts=None, backend=mode, policy=policy, user=user if risky else None)
    return Report(
        reference=str(reference) if isinstance(reference, str) else ref.familiar,
        pinned=None,
        backend=mode.value,
        platform=str(policy.platform),
        results=evaluate(data, today),
        user=user,
        notices=policy.notices(),
    )
