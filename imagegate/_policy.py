"""The policy: which checks run in which mode, waivers, registries, tag rules.

Defaults live here and only here. A policy comes from a TOML file of its own
(``imagegate.toml``, keys at the top level) or from ``pyproject.toml`` under
``[tool.imagegate]``::

    platform = "linux/amd64"
    resolve-mutable-tags = false          # true: launch a mutable tag by its digest, with a warning
    allowed-registries = ["registry.example.com", "*.dkr.ecr.*.amazonaws.com"]   # globs: only * is special
    insecure-registries = []              # plain-http hosts besides loopback
    mutable-tags = ["prod", "prod-.*"]    # extra RE2 regexes (full match)
    immutable-tags = ["rel-\\d+"]
    resolve-user-names = true             # Docker: USER app is resolved in the image's /etc/passwd (false: refused)
    allowed-capabilities = []             # capabilities a task may add back (cap_add / capabilities.add)
    allowed-host-paths = []               # Docker: host paths a task may bind-mount although they give away
                                          # the host (the engine's socket, /etc, /proc, …; see _hardening)

    [checks]                              # [tool.imagegate.checks] in pyproject.toml
    pinned = "enforce"                    # enforce | warn | off
    non-root = "warn"
    lint = "enforce"                      # builds: lint errors block the build (warn: report, build anyway)

    [[signatures]]                        # cosign signatures required before launch (see docs/signatures.md)
    images = ["registry.example.com/team/**"]   # globs over the image name (registry/repository)
    keys = ["keys/ci.pub"]                # PEM public keys (paths relative to the policy file, or the PEM itself)
    required = 1                          # how many of the keys must have signed the image's digest
                                          # [checks] signature: enforce when [[signatures]] exist, else off

    [[vulnerabilities]]                   # a signed vulnerability scan required before launch (docs/signatures.md)
    images = ["registry.example.com/team/**"]
    keys = ["keys/ci.pub"]                # the attestation must be signed by `required` of these (default 1)
    max-severity = "high"                 # none | low | medium | high | critical: the highest a finding may have
    only-fixable = false                  # true: count only findings with a fix
    max-age = "7d"                        # the newest verified scan is at most this old (d, h or m)
    types = ["vuln", "trivy", "grype", "sarif"]   # which predicate types count (default: all four)
    unknown-severity = "critical"         # how an UNKNOWN finding ranks (default critical)
    [[vulnerabilities.waivers]]
    id = "CVE-2024-1234"
    reason = "not reachable from the job; SEC-9"
    expires = 2027-01-31                  # required; expired waivers no longer apply, and the report says so
                                          # [checks] vulnerabilities: enforce when [[vulnerabilities]] exist, else off

    [[waivers]]                           # checks is required: a list, or ["*"] (every report warns then)
    reference = "registry.example.com/vendor/*"
    checks = ["non-root"]
    reason = "vendor image runs as root; ticket OPS-12"
    expires = 2027-01-31

Unknown keys are errors that name their path, so a typo never silently turns
a check off.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from imagegate._errors import PolicyError
from imagegate._facts import DEFAULT_PLATFORM, Platform
from imagegate._patterns import Glob
from imagegate._reference import Reference
from imagegate._tags import TagRules

CHECK_IDS = ("registry", "pinned", "non-root", "lint", "signature", "vulnerabilities")  # lint: whether Dockerfile lint errors block a build
POLICY_FILE = "imagegate.toml"


class Mode(str, enum.Enum):
    ENFORCE = "enforce"  # a violation fails the check and blocks the launch
    WARN = "warn"  # a violation is reported, the launch goes on
    OFF = "off"  # the check does not run


class Backend(str, enum.Enum):
    """Where the container will run; checks differ slightly between the two."""

    DOCKER = "docker"
    KUBERNETES = "kubernetes"

    @classmethod
    def parse(cls, value: str | Backend) -> Backend:
        try:
            return cls(value)
        except ValueError:
            raise PolicyError(f"unknown backend {value!r}; use 'docker' or 'kubernetes'", key="backend") from None


@dataclass(frozen=True, slots=True)
class Waiver:
    """Lets matching references pass the listed checks (``"*"``: all), for a written reason, until ``expires``.

    ``reference`` is a glob (:class:`~imagegate._patterns.Glob`: ``*`` within a path component,
    ``**`` across them, everything else literal), matched against the reference's full and
    familiar spellings, with and without tag and digest.
    """

    reference: str
    checks: tuple[str, ...]
    reason: str
    expires: dt.date | None = None
    _glob: Glob = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_glob", Glob(self.reference))

    def covers(self, check: str) -> bool:
        return check in self.checks or "*" in self.checks

    def matches_reference(self, ref: Reference) -> bool:
        bare = Reference(ref.registry, ref.repository, ref.tag)
        names = {str(ref), ref.familiar, str(bare), bare.familiar, ref.name, Reference(ref.registry, ref.repository).familiar}
        return any(self._glob.match(name) for name in names)

    def matches(self, ref: Reference, check: str) -> bool:
        return self.covers(check) and self.matches_reference(ref)

    def expired(self, today: dt.date) -> bool:
        return self.expires is not None and today > self.expires

    @property
    def matches_every_image(self) -> bool:
        return self._glob.matches_everything

    @property
    def covers_every_check(self) -> bool:
        return "*" in self.checks

    def describe(self) -> str:
        until = f", until {self.expires}" if self.expires else ""
        return f"{self.reference!r} for {', '.join(self.checks)} ({self.reason}{until})"


# signature, vulnerabilities: off until the policy says which keys sign what ([[signatures]], [[vulnerabilities]]):
# a new version refuses nobody's images.
_CONFIGURED_CHECKS = ("signature", "vulnerabilities")
_DEFAULT_MODES: Mapping[str, Mode] = {check: Mode.OFF if check in _CONFIGURED_CHECKS else Mode.ENFORCE
                                      for check in CHECK_IDS}


@dataclass(frozen=True, slots=True)
class SignatureRule:
    """Images matching one of ``images`` must be signed (cosign) by ``required`` of ``keys`` — as Sigstore
    policy-controller's ``images[].glob`` + ``authorities``. Every rule that matches an image must be satisfied.

    ``images`` are globs (:class:`~imagegate._patterns.Glob`) matched against the image's name
    (``registry/repository``, also in its familiar spelling); ``keys`` are
    :class:`~imagegate._cosign.PublicKey` s, read when the policy is loaded.
    """

    images: tuple[str, ...]
    keys: tuple[Any, ...]
    required: int = 1
    _globs: tuple[Glob, ...] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_globs", tuple(Glob(p) for p in self.images))

    def matches(self, ref: Reference) -> bool:
        return any(glob.match(name) for glob in self._globs for name in image_names(ref))

    def describe(self) -> str:
        return f"{', '.join(self.images)} ({self.required} of {', '.join(k.source for k in self.keys)})"


@dataclass(frozen=True, slots=True)
class VulnerabilityWaiver:
    """Lets the finding ``id`` (e.g. ``CVE-2024-1234``; compared case-insensitively) pass a ``[[vulnerabilities]]``
    rule until ``expires`` (inclusive), for ``reason``; for every image the rule covers, or only those matching
    ``images`` (globs over the image name). An expired waiver no longer applies, and the report says so."""

    id: str
    reason: str
    expires: dt.date
    images: tuple[str, ...] = ()
    _globs: tuple[Glob, ...] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_globs", tuple(Glob(p) for p in self.images))

    def matches(self, vulnerability_id: str, image_names: Iterable[str]) -> bool:
        if vulnerability_id.upper() != self.id.upper():
            return False
        return not self._globs or any(glob.match(name) for glob in self._globs for name in image_names)


@dataclass(frozen=True, slots=True)
class VulnerabilityRule:
    """Images matching ``images`` must carry a vulnerability attestation (one of ``types``, predicate type URIs)
    signed by ``required`` of ``keys`` whose newest scan has no finding above ``max_severity`` (``only_fixable``:
    counting only findings with a fix), no older than ``max_age``; ``unknown_severity`` is how an UNKNOWN finding
    ranks (default ``critical``: an unrated vulnerability may be anything). Every rule that matches must pass."""

    images: tuple[str, ...]
    keys: tuple[Any, ...]
    max_severity: str
    required: int = 1
    only_fixable: bool = False
    max_age: dt.timedelta | None = None
    types: tuple[str, ...] = ()
    unknown_severity: str = "critical"
    waivers: tuple[VulnerabilityWaiver, ...] = ()
    _globs: tuple[Glob, ...] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_globs", tuple(Glob(p) for p in self.images))
        if not self.types:
            from imagegate._predicates import VULNERABILITY_TYPES

            object.__setattr__(self, "types", tuple(sorted(VULNERABILITY_TYPES)))

    def matches(self, ref: Reference) -> bool:
        return any(glob.match(name) for glob in self._globs for name in image_names(ref))

    def describe(self) -> str:
        return f"{', '.join(self.images)} (max-severity {self.max_severity}, {self.required} of " \
               f"{', '.join(k.source for k in self.keys)})"


def image_names(ref: Reference) -> tuple[str, ...]:
    """The names a [[signatures]] / [[vulnerabilities]] glob is matched against: registry/repository, and familiar."""
    bare = Reference(ref.registry, ref.repository)
    return tuple(dict.fromkeys((bare.name, bare.familiar)))


@dataclass(frozen=True, slots=True)
class Policy:
    """Everything that decides whether an image may launch."""

    checks: Mapping[str, Mode] = field(default_factory=lambda: dict(_DEFAULT_MODES))
    resolve_mutable_tags: bool = False
    allowed_registries: tuple[str, ...] = ()
    insecure_registries: tuple[str, ...] = ()
    waivers: tuple[Waiver, ...] = ()
    tag_rules: TagRules = field(default_factory=TagRules.default)
    platform: Platform = DEFAULT_PLATFORM
    resolve_user_names: bool = True
    allowed_capabilities: tuple[str, ...] = ()
    allowed_host_paths: tuple[str, ...] = ()
    signatures: tuple[SignatureRule, ...] = ()
    vulnerabilities: tuple[VulnerabilityRule, ...] = ()
    source: str | None = None
    _registry_globs: tuple[Glob, ...] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_registry_globs", tuple(Glob(p.lower()) for p in self.allowed_registries))
        caps = tuple(_capability(c, self.source) for c in self.allowed_capabilities)
        object.__setattr__(self, "allowed_capabilities", caps)
        for index, path in enumerate(self.allowed_host_paths):
            _host_path(path, self.source, f"allowed-host-paths[{index}]")
        object.__setattr__(self, "allowed_host_paths", tuple(self.allowed_host_paths))

    def mode(self, check: str) -> Mode:
        return self.checks.get(check, Mode.ENFORCE)

    def waiver_for(self, ref: Reference, check: str, today: dt.date | None = None) -> Waiver | None:
        """The first unexpired waiver covering *check* for *ref*."""
        today = today or dt.date.today()
        for waiver in self.waivers:
            if waiver.matches(ref, check) and not waiver.expired(today):
                return waiver
        return None

    def expired_waiver_for(self, ref: Reference, check: str, today: dt.date | None = None) -> Waiver | None:
        """An expired waiver that would cover *check* for *ref* (so a refusal can say it expired, and when)."""
        today = today or dt.date.today()
        for waiver in self.waivers:
            if waiver.matches(ref, check) and waiver.expired(today):
                return waiver
        return None

    def notices(self) -> tuple[str, ...]:
        """Loud warnings about the policy itself, put in every report: waivers that cover everything."""
        out = []
        for index, waiver in enumerate(self.waivers):
            if waiver.matches_every_image:
                out.append(f"waiver {index} matches every image: {waiver.describe()}; narrow its reference")
            if waiver.covers_every_check:
                out.append(f"waiver {index} waives every check: {waiver.describe()}; list the checks it waives")
        for path in self.allowed_host_paths:
            what = "every host path" if path.strip("/") == "" else repr(path)
            out.append(
                f"allowed-host-paths lets Docker tasks bind-mount {what}, which imagegate refuses by default because "
                "it can give a container the host; keep the list to what a task truly needs"
            )
        return tuple(out)

    def signature_rules_for(self, ref: Reference) -> tuple[SignatureRule, ...]:
        """The [[signatures]] rules that cover *ref* (all must be satisfied)."""
        return tuple(rule for rule in self.signatures if rule.matches(ref))

    def vulnerability_rules_for(self, ref: Reference) -> tuple[VulnerabilityRule, ...]:
        """The [[vulnerabilities]] rules that cover *ref* (all must pass)."""
        return tuple(rule for rule in self.vulnerabilities if rule.matches(ref))

    def registry_allowed(self, registry: str) -> bool:
        """True when no allow-list is set, or *registry* matches one of its globs (literally, IPv6 included)."""
        return not self._registry_globs or any(glob.match(registry.lower()) for glob in self._registry_globs)

    def with_modes(self, **modes: str | Mode) -> Policy:
        """A copy with some checks' modes changed: ``policy.with_modes(non_root="warn")``."""
        merged = dict(self.checks)
        for name, value in modes.items():
            check = name.replace("_", "-")
            _require_check(check, source=self.source)
            merged[check] = _mode(value, source=self.source, key=f"checks.{check}")
        return replace(self, checks=merged)

    # -- loading ----------------------------------------------------------------------

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str | None = None, base_dir: str | Path | None = None) -> Policy:
        """Build a policy from decoded TOML; unknown or mistyped keys raise PolicyError. Key files named in
        ``[[signatures]]`` are read relative to *base_dir* (the policy file's directory; default: the current one)."""
        keys = {str(k).replace("_", "-"): v for k, v in data.items()}
        unknown = sorted(set(keys) - _TOP_KEYS)
        if unknown:
            raise PolicyError(f"unknown key {unknown[0]!r}; known keys: {', '.join(sorted(_TOP_KEYS))}", source=source, key=unknown[0])
        modes = dict(_DEFAULT_MODES)
        for name, value in _table(keys.get("checks", {}), "checks", source).items():
            check = str(name).replace("_", "-")
            _require_check(check, source=source)
            modes[check] = _mode(value, source=source, key=f"checks.{check}")
        signatures = tuple(_signature_rule(item, i, source, Path(base_dir or "."))
                           for i, item in enumerate(_list(keys.get("signatures", []), "signatures", source)))
        vulnerabilities = tuple(_vulnerability_rule(item, i, source, Path(base_dir or "."))
                                for i, item in enumerate(_list(keys.get("vulnerabilities", []), "vulnerabilities",
                                                               source)))
        explicit = {str(name).replace("_", "-") for name in _table(keys.get("checks", {}), "checks", source)}
        for check, rules, table, example in (
            ("signature", signatures, "signatures", "images = [...], keys = [...]"),
            ("vulnerabilities", vulnerabilities, "vulnerabilities", "images = [...], keys = [...], max-severity = ..."),
        ):
            if check not in explicit and rules:
                modes[check] = Mode.ENFORCE
            if modes[check] is not Mode.OFF and not rules:
                what = ("which keys must have signed which images" if check == "signature"
                        else "which images need a signed vulnerability scan, and what it may find")
                raise PolicyError(
                    f"is {modes[check].value!r} but no [[{table}]] entry says {what}; add one ({example}) "
                    "or set it to 'off'",
                    source=source, key=f"checks.{check}",
                )
        rules = TagRules.default()
        mutable = _strings(keys.get("mutable-tags", []), "mutable-tags", source)
        immutable = _strings(keys.get("immutable-tags", []), "immutable-tags", source)
        if mutable or immutable:
            try:
                rules = rules.extended(mutable=mutable, immutable=immutable)
            except PolicyError as exc:
                raise PolicyError(str(exc), source=source) from None
        platform = keys.get("platform", str(DEFAULT_PLATFORM))
        if not isinstance(platform, str):
            raise PolicyError("must be a string such as 'linux/amd64'", source=source, key="platform")
        resolve = keys.get("resolve-mutable-tags", False)
        if not isinstance(resolve, bool):
            raise PolicyError("must be true or false", source=source, key="resolve-mutable-tags")
        names = keys.get("resolve-user-names", True)
        if not isinstance(names, bool):
            raise PolicyError("must be true or false", source=source, key="resolve-user-names")
        return cls(
            checks=modes,
            resolve_mutable_tags=resolve,
            allowed_registries=_globs(keys.get("allowed-registries", []), "allowed-registries", source),
            insecure_registries=_strings(keys.get("insecure-registries", []), "insecure-registries", source),
            waivers=tuple(_waiver(item, i, source) for i, item in enumerate(_list(keys.get("waivers", []), "waivers", source))),
            tag_rules=rules,
            platform=_platform(platform, source),
            resolve_user_names=names,
            allowed_capabilities=_strings(keys.get("allowed-capabilities", []), "allowed-capabilities", source),
            allowed_host_paths=_strings(keys.get("allowed-host-paths", []), "allowed-host-paths", source),
            signatures=signatures,
            vulnerabilities=vulnerabilities,
            source=source,
        )

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        """Read a policy file: ``imagegate.toml`` (top-level keys) or ``pyproject.toml`` ([tool.imagegate])."""
        file = Path(path)
        data = _read_toml(file)
        if file.name == "pyproject.toml":
            table = (data.get("tool") or {}).get("imagegate")
            if table is None:
                raise PolicyError("has no [tool.imagegate] table", source=str(file))
            return cls.from_mapping(_table(table, "tool.imagegate", str(file)), source=f"{file} [tool.imagegate]",
                                    base_dir=file.parent)
        return cls.from_mapping(data, source=str(file), base_dir=file.parent)

    @classmethod
    def discover(cls, start: str | Path = ".") -> Policy:
        """The policy for *start*: the nearest ``imagegate.toml``, or ``pyproject.toml``
        with a ``[tool.imagegate]`` table, in it or a parent; else the defaults."""
        here = Path(start).resolve()
        for directory in (here, *here.parents):
            own = directory / POLICY_FILE
            if own.is_file():
                return cls.load(own)
            project = directory / "pyproject.toml"
            if project.is_file() and "imagegate" in (_read_toml(project).get("tool") or {}):
                return cls.load(project)
        return cls()


_TOP_KEYS = frozenset(
    {
        "checks",
        "resolve-mutable-tags",
        "allowed-registries",
        "insecure-registries",
        "mutable-tags",
        "immutable-tags",
        "waivers",
        "platform",
        "resolve-user-names",
        "allowed-capabilities",
        "allowed-host-paths",
        "signatures",
        "vulnerabilities",
    }
)
_SIGNATURE_KEYS = frozenset({"images", "keys", "required"})
_VULNERABILITY_KEYS = frozenset({"images", "keys", "required", "max-severity", "only-fixable", "max-age", "types",
                                 "unknown-severity", "waivers"})
_VULN_WAIVER_KEYS = frozenset({"id", "reason", "expires", "images"})
_WAIVER_KEYS = frozenset({"reference", "checks", "reason", "expires"})


def _read_toml(file: Path) -> dict[str, Any]:
    import tomllib  # only policy loading needs it; keeps `import imagegate` fast

    try:
        with file.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise PolicyError("file not found; pass an existing policy file", source=str(file)) from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"cannot read TOML: {exc}", source=str(file)) from None


def _require_check(check: str, *, source: str | None) -> None:
    if check not in CHECK_IDS:
        raise PolicyError(f"unknown check {check!r}; checks are {', '.join(CHECK_IDS)}", source=source, key=f"checks.{check}")


def _mode(value: Any, *, source: str | None, key: str) -> Mode:
    try:
        return Mode(value)
    except ValueError:
        raise PolicyError(f"mode {value!r} is not one of enforce, warn, off", source=source, key=key) from None


def _table(value: Any, key: str, source: str | None) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise PolicyError("must be a table", source=source, key=key)
    return value


def _list(value: Any, key: str, source: str | None) -> list[Any]:
    if not isinstance(value, list):
        raise PolicyError("must be a list", source=source, key=key)
    return value


def _strings(value: Any, key: str, source: str | None) -> tuple[str, ...]:
    items = _list(value, key, source)
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item:
            raise PolicyError("must be a non-empty string", source=source, key=f"{key}[{i}]")
    return tuple(items)


def _platform(value: str, source: str | None) -> Platform:
    try:
        return Platform.parse(value)
    except PolicyError as exc:
        raise PolicyError(str(exc), source=source, key="platform") from None


def _waiver(item: Any, index: int, source: str | None) -> Waiver:
    where = f"waivers[{index}]"
    table = {str(k).replace("_", "-"): v for k, v in _table(item, where, source).items()}
    unknown = sorted(set(table) - _WAIVER_KEYS)
    if unknown:
        raise PolicyError(f"unknown key {unknown[0]!r}; waivers take {', '.join(sorted(_WAIVER_KEYS))}", source=source, key=where)
    reference, reason = table.get("reference"), table.get("reason")
    if not isinstance(reference, str) or not reference:
        raise PolicyError("needs 'reference', a pattern such as 'registry.example.com/team/*'", source=source, key=where)
    if not isinstance(reason, str) or not reason.strip():
        raise PolicyError("needs a non-empty 'reason': a waiver says why", source=source, key=where)
    if "checks" not in table:
        raise PolicyError(
            'needs \'checks\': the checks it waives, e.g. checks = ["non-root"] (or checks = ["*"] for every '
            "check, which every report will then warn about)",
            source=source,
            key=where,
        )
    checks = _strings(table["checks"], f"{where}.checks", source)
    if not checks:
        raise PolicyError('an empty list waives nothing; list the checks, or remove the waiver', source=source, key=f"{where}.checks")
    for check in checks:
        if check != "*":
            _require_check(check, source=source)
    expires = table.get("expires")
    if isinstance(expires, str):
        try:
            expires = dt.date.fromisoformat(expires)
        except ValueError:
            raise PolicyError(f"expires {expires!r} is not a date (YYYY-MM-DD)", source=source, key=where) from None
    if expires is not None and not isinstance(expires, dt.date):
        raise PolicyError("expires must be a date (YYYY-MM-DD)", source=source, key=where)
    if isinstance(expires, dt.datetime):
        expires = expires.date()
    try:
        return Waiver(reference=reference, checks=checks, reason=reason.strip(), expires=expires)
    except PolicyError as exc:
        raise PolicyError(exc.message, source=source, key=f"{where}.reference") from None


def _signature_rule(item: Any, index: int, source: str | None, base_dir: Path) -> SignatureRule:
    where = f"signatures[{index}]"
    table = {str(k).replace("_", "-"): v for k, v in _table(item, where, source).items()}
    unknown = sorted(set(table) - _SIGNATURE_KEYS)
    if unknown:
        raise PolicyError(f"unknown key {unknown[0]!r}; signatures take {', '.join(sorted(_SIGNATURE_KEYS))}",
                          source=source, key=where)
    images, keys, required = _images_and_keys(table, where, source, base_dir)
    return SignatureRule(images=images, keys=keys, required=required)


def _images_and_keys(table: Mapping[str, Any], where: str, source: str | None,
                     base_dir: Path) -> tuple[tuple[str, ...], tuple[Any, ...], int]:
    """``images``, ``keys`` (read now) and ``required`` of a [[signatures]] or [[vulnerabilities]] entry."""
    from imagegate._cosign import MAX_KEYS, InvalidKey, PublicKey, check_keys  # cryptography: only for signatures

    for name in ("images", "keys"):
        if name not in table or not table[name]:
            raise PolicyError(f"needs {name!r}: a non-empty list (images = [\"registry.example.com/team/**\"], "
                              "keys = [\"cosign.pub\"])", source=source, key=f"{where}.{name}")
    images = _globs(table["images"], f"{where}.images", source)
    texts = _strings(table["keys"], f"{where}.keys", source)
    if len(texts) > MAX_KEYS:
        raise PolicyError(f"at most {MAX_KEYS} keys", source=source, key=f"{where}.keys")
    keys = []
    for i, text in enumerate(texts):
        try:
            if text.lstrip().startswith("-----BEGIN"):
                keys.append(PublicKey.from_pem(text.encode(), f"{where}.keys[{i}] (inline PEM)"))
            else:
                keys.append(PublicKey.load(base_dir / text))
        except InvalidKey as exc:
            raise PolicyError(str(exc), source=source, key=f"{where}.keys[{i}]") from None
    try:
        check_keys(keys)
    except InvalidKey as exc:
        raise PolicyError(str(exc), source=source, key=f"{where}.keys") from None
    required = table.get("required", 1)
    if isinstance(required, bool) or not isinstance(required, int) or not 1 <= required <= len(keys):
        raise PolicyError(f"required must be a whole number from 1 to the number of keys ({len(keys)})",
                          source=source, key=f"{where}.required")
    return images, tuple(keys), required


def _vulnerability_rule(item: Any, index: int, source: str | None, base_dir: Path) -> VulnerabilityRule:
    from imagegate._predicates import PREDICATE_TYPES, predicate_type
    from imagegate._vulns import LEVELS, parse_age

    where = f"vulnerabilities[{index}]"
    table = {str(k).replace("_", "-"): v for k, v in _table(item, where, source).items()}
    unknown = sorted(set(table) - _VULNERABILITY_KEYS)
    if unknown:
        raise PolicyError(f"unknown key {unknown[0]!r}; vulnerabilities take "
                          f"{', '.join(sorted(_VULNERABILITY_KEYS))}", source=source, key=where)
    images, keys, required = _images_and_keys(table, where, source, base_dir)
    levels = " | ".join(LEVELS)
    severity = table.get("max-severity")
    if severity not in LEVELS:
        raise PolicyError(f"needs max-severity, the highest severity a finding may have: one of {levels} "
                          f"(not {severity!r})", source=source, key=f"{where}.max-severity")
    unknown_severity = table.get("unknown-severity", "critical")
    if unknown_severity not in LEVELS:
        raise PolicyError(f"unknown-severity ranks UNKNOWN findings as one of {levels} (not {unknown_severity!r})",
                          source=source, key=f"{where}.unknown-severity")
    only_fixable = table.get("only-fixable", False)
    if not isinstance(only_fixable, bool):
        raise PolicyError("must be true or false", source=source, key=f"{where}.only-fixable")
    max_age = None
    if "max-age" in table:
        try:
            max_age = parse_age(table["max-age"])
        except ValueError as exc:
            raise PolicyError(f"{exc} (whole days, hours or minutes)", source=source, key=f"{where}.max-age") from None
    types: tuple[str, ...] = ()
    if "types" in table:
        names = _strings(table["types"], f"{where}.types", source)
        if not names:
            raise PolicyError(f"an empty list accepts no attestation; list some of {', '.join(PREDICATE_TYPES)} or "
                              "remove it (all four)", source=source, key=f"{where}.types")
        try:
            types = tuple(dict.fromkeys(predicate_type(name) for name in names))
        except ValueError as exc:
            raise PolicyError(str(exc), source=source, key=f"{where}.types") from None
    waivers = tuple(_vulnerability_waiver(w, f"{where}.waivers[{i}]", source)
                    for i, w in enumerate(_list(table.get("waivers", []), f"{where}.waivers", source)))
    return VulnerabilityRule(images=images, keys=keys, max_severity=severity, required=required,
                             only_fixable=only_fixable, max_age=max_age, types=types,
                             unknown_severity=unknown_severity, waivers=waivers)


def _vulnerability_waiver(item: Any, where: str, source: str | None) -> VulnerabilityWaiver:
    table = {str(k).replace("_", "-"): v for k, v in _table(item, where, source).items()}
    unknown = sorted(set(table) - _VULN_WAIVER_KEYS)
    if unknown:
        raise PolicyError(f"unknown key {unknown[0]!r}; a vulnerability waiver takes "
                          f"{', '.join(sorted(_VULN_WAIVER_KEYS))}", source=source, key=where)
    ident, reason, expires = table.get("id"), table.get("reason"), table.get("expires")
    if not isinstance(ident, str) or not ident.strip() or len(ident) > 256 or not ident.isprintable():
        raise PolicyError("needs 'id', the finding it waives, e.g. id = \"CVE-2024-1234\"", source=source,
                          key=f"{where}.id")
    if not isinstance(reason, str) or not reason.strip():
        raise PolicyError("needs a non-empty 'reason': a waiver says why", source=source, key=f"{where}.reason")
    if isinstance(expires, str):
        try:
            expires = dt.date.fromisoformat(expires)
        except ValueError:
            raise PolicyError(f"expires {expires!r} is not a date (YYYY-MM-DD)", source=source,
                              key=f"{where}.expires") from None
    if isinstance(expires, dt.datetime):
        expires = expires.date()
    if not isinstance(expires, dt.date):
        raise PolicyError("needs 'expires', the last day it applies (expires = 2027-01-31): a vulnerability waiver "
                          "cannot be open-ended", source=source, key=f"{where}.expires")
    images = _globs(table.get("images", []), f"{where}.images", source)
    return VulnerabilityWaiver(id=ident.strip(), reason=reason.strip(), expires=expires, images=images)


def _globs(value: Any, key: str, source: str | None) -> tuple[str, ...]:
    patterns = _strings(value, key, source)
    for index, pattern in enumerate(patterns):
        try:
            Glob(pattern)
        except PolicyError as exc:
            raise PolicyError(exc.message, source=source, key=f"{key}[{index}]") from None
    return patterns


_CAPABILITY = re.compile(r"(?:CAP_)?[A-Z][A-Z0-9_]*")


def _capability(value: str, source: str | None) -> str:
    """``net_bind_service`` / ``CAP_NET_BIND_SERVICE`` -> ``NET_BIND_SERVICE`` (Docker's and Kubernetes' spelling)."""
    if not isinstance(value, str) or not _CAPABILITY.fullmatch(value.upper()) or value.upper() in ("ALL", "CAP_ALL"):
        raise PolicyError(f"{value!r} is not a capability name such as NET_BIND_SERVICE", source=source, key="allowed-capabilities")
    return value.upper().removeprefix("CAP_")


def _host_path(value: Any, source: str | None, key: str) -> None:
    """An ``allowed-host-paths`` entry: an absolute host path (the engine refuses relative bind sources)."""
    if not isinstance(value, str) or not value.startswith("/") or "\x00" in value:
        raise PolicyError(f"{value!r} is not an absolute host path such as '/var/run/docker.sock'", source=source, key=key)


def merge_insecure(policy: Policy, extra: Iterable[str]) -> tuple[str, ...]:
    """The policy's insecure registries plus *extra* (e.g. from the command line), de-duplicated."""
    return tuple(dict.fromkeys((*policy.insecure_registries, *extra)))
