"""Exceptions raised by imagegate.

Every exception carries the data a caller needs to act on it, so code never has
to match on message text::

    ImagegateError
    ├── InvalidReference          bad image reference (also a ValueError)
    ├── PolicyError               bad policy file or option (also a ValueError)
    ├── CredentialError           a docker credential helper failed
    ├── RegistryError             the registry answered badly or not at all
    │   ├── RegistryUnreachable   connection refused, DNS, timeout
    │   ├── InsecureRegistry      plain http refused for a non-loopback host
    │   ├── AuthenticationError   401/403 after trying the credentials we have
    │   ├── ManifestUnknown       the tag or digest does not exist (404)
    │   ├── DigestMismatch        bytes received do not hash to the digest asked for
    │   ├── MalformedResponse     a document that is malformed or ambiguous (duplicate keys, bad digests…)
    │   ├── UnsupportedManifest   a media type we cannot read (e.g. schema 1)
    │   └── PlatformNotFound      the index has no manifest for the platform asked for
    ├── CheckFailed               a check failed under ``enforce``; carries the report
    ├── UnexpectedError           anything else went wrong inside imagegate (a bug): the cause is chained
    ├── ContextError              a build context that cannot be sent (also a ValueError)
    ├── DockerfileError           a Dockerfile that cannot be parsed; carries the line
    ├── BuildError                the engine failed to build or push; carries the log
    └── LintFailed                lint errors blocked a build (``imagegate.build``, with the lint report)

Secrets never appear in messages: URLs are redacted with :func:`redact_url` and
credentials are never formatted.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from imagegate._report import Report


def redact_url(url: str) -> str:
    """Return *url* with any userinfo and query string blanked out."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    if parts.username or parts.password:
        netloc = f"***@{netloc}"
    query = "***" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


class ImagegateError(Exception):
    """Base class of every error imagegate raises.

    ``exit_status`` is what the command line exits with for it (2: an error; 1: a refusal),
    and :meth:`to_dict` the JSON the command line prints with ``--json``.
    """

    exit_status = 2
    _fields: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": type(self).__name__, "message": str(self)}
        for name in self._fields:
            value = getattr(self, name, None)
            data[name] = list(value) if isinstance(value, tuple) else value
        return data


class InvalidReference(ImagegateError, ValueError):
    """An image reference that does not follow the distribution grammar."""

    _fields = ('reference', 'reason')

    def __init__(self, reference: str, reason: str) -> None:
        self.reference = reference
        self.reason = reason
        super().__init__(
            f"invalid image reference {reference!r}: {reason}. "
            "Expected [REGISTRY[:PORT]/]PATH[:TAG][@sha256:DIGEST], "
            "e.g. 'registry.example.com:5000/team/etl:1.4.2'"
        )


class PolicyError(ImagegateError, ValueError):
    """A policy file or policy option that cannot be used."""

    _fields = ('source', 'key')

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None) -> None:
        self.message = message  # without the source and key prefix
        self.source = source
        self.key = key
        where = ""
        if source:
            where = f"{source}: "
        if key:
            where += f"[{key}] "
        super().__init__(f"{where}{message}")


class CredentialError(ImagegateError):
    """A ``docker-credential-*`` helper could not be run or answered badly."""

    _fields = ('helper', 'registry', 'reason')

    def __init__(self, helper: str, registry: str, reason: str) -> None:
        self.helper = helper
        self.registry = registry
        self.reason = reason
        super().__init__(
            f"credential helper docker-credential-{helper} failed for {registry}: {reason}. "
            "Check that the helper is on PATH, or remove it from ~/.docker/config.json"
        )


class RegistryError(ImagegateError):
    """The registry answered with an error, or could not be reached.

    ``temporary`` is true where retrying later may succeed (429, 5xx, timeouts).
    ``codes`` are the distribution error codes of the body (``MANIFEST_UNKNOWN``…).
    """

    _fields = ('registry', 'url', 'status', 'codes', 'temporary')

    def __init__(
        self,
        message: str,
        *,
        registry: str,
        url: str | None = None,
        status: int | None = None,
        codes: Sequence[str] = (),
        temporary: bool = False,
    ) -> None:
        self.registry = registry
        self.url = redact_url(url) if url else None
        self.status = status
        self.codes = tuple(codes)
        self.temporary = temporary
        super().__init__(message)


class RegistryUnreachable(RegistryError):
    """No HTTP answer: connection refused, name resolution, TLS or timeout."""


class InsecureRegistry(RegistryError):
    """A plain-http registry that is neither loopback nor configured as insecure."""


class AuthenticationError(RegistryError):
    """The registry refused the credentials we have (or we have none)."""


class ManifestUnknown(RegistryError):
    """The tag or digest does not exist in the repository."""


class DigestMismatch(RegistryError):
    """Bytes received from the registry do not hash to the digest asked for."""

    _fields = ('registry', 'url', 'status', 'codes', 'temporary', 'expected', 'actual')

    def __init__(self, *, registry: str, url: str, expected: str, actual: str) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"content from {redact_url(url)} hashes to {actual}, not {expected}: "
            "refusing it (a proxy or the registry altered the bytes)",
            registry=registry,
            url=url,
        )


class MalformedResponse(RegistryError):
    """The registry sent a document that is malformed, mistyped or ambiguous: refused, never guessed at."""


class UnsupportedManifest(RegistryError):
    """A manifest media type imagegate cannot read."""

    _fields = ('registry', 'url', 'status', 'codes', 'temporary', 'media_type')

    def __init__(self, *, registry: str, url: str, media_type: str, reason: str | None = None) -> None:
        self.media_type = media_type
        what = reason or f"unsupported manifest media type {media_type!r}"
        super().__init__(
            f"{what} at {redact_url(url)}; "
            "re-push the image with a current Docker or BuildKit (OCI or Docker schema 2)",
            registry=registry,
            url=url,
        )


class PlatformNotFound(RegistryError):
    """The image index lists no manifest for the platform asked for."""

    _fields = ('registry', 'url', 'status', 'codes', 'temporary', 'reference', 'platform', 'available')

    def __init__(self, *, registry: str, reference: str, platform: str, available: Sequence[str]) -> None:
        self.reference = reference
        self.platform = platform
        self.available = tuple(available)
        listed = ", ".join(self.available) or "none"
        super().__init__(
            f"{reference} has no image for platform {platform} (available: {listed}); "
            "pass --platform with one of those, or build the image for this platform",
            registry=registry,
        )


class CheckFailed(ImagegateError):
    """At least one check failed under ``enforce``; nothing may be launched.

    ``report`` holds every result. For a helper container's image (an XCom sidecar, an init
    container) ``role`` names it and ``fix`` says how to fix its refusal; for a job directory,
    ``build`` and ``lint`` are what the build produced.
    """

    exit_status = 1

    def __init__(self, report: Report, *, role: str | None = None, fix: str | None = None,
                 build: Any = None, lint: Any = None) -> None:
        self.report = report
        self.role = role
        self.fix = fix
        self.build = build
        self.lint = lint
        failed = ", ".join(r.check for r in report.failures) or "(not pinned)"
        what = f"the {role} image {report.reference}" if role else f"image {report.reference}"
        hint = f"\nfix: {fix}" if fix else ""
        super().__init__(f"{what} refused by checks: {failed}{hint}\n{report.render_text()}")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "role": self.role, "fix": self.fix, "report": self.report.to_dict()}


class UnexpectedError(ImagegateError):
    """An error imagegate did not expect (a bug): wrapped so that only imagegate's errors escape its API.

    The original exception is ``__cause__``; ``kind`` names its type.
    """

    _fields = ("kind",)

    def __init__(self, cause: BaseException) -> None:
        self.kind = type(cause).__name__
        super().__init__(
            f"imagegate failed unexpectedly ({self.kind}: {str(cause)[:200]}); nothing was launched. "
            "Please report it with the output of --debug"
        )


F = TypeVar("F", bound=Callable[..., Any])


def typed_errors(function: F) -> F:
    """Let only :class:`ImagegateError` escape *function*: anything else becomes :class:`UnexpectedError`."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except ImagegateError:
            raise
        except Exception as exc:
            raise UnexpectedError(exc) from exc

    return wrapper  # type: ignore[return-value]


class ContextError(ImagegateError, ValueError):
    """A build context (or a file in it) that cannot be read, hashed or sent."""

    _fields = ('path',)

    def __init__(self, message: str, *, path: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message}")


class DockerfileError(ImagegateError, ValueError):
    """A Dockerfile that is missing or does not parse; ``line`` is 1-based (0: the whole file)."""

    _fields = ('path', 'line')

    def __init__(self, message: str, *, path: str, line: int = 0) -> None:
        self.path = path
        self.line = line
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {message}")


class BuildError(ImagegateError):
    """The engine failed to build, tag or push the image; ``log`` holds its output."""

    _fields = ('stage',)

    def __init__(self, message: str, *, log: Sequence[str] = (), stage: str = "build") -> None:
        self.log = tuple(log)
        self.stage = stage
        tail = "\n".join(self.log[-15:])
        super().__init__(f"{message}\n{tail}" if tail else message)
