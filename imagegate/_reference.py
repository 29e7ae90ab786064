"""Image references: parse, normalise and classify them, with no I/O.

The grammar is the one of the CNCF distribution ``reference`` package
(``reference/regexp.go``) and the normalisation is that of
``reference.ParseNormalizedNamed``, which the Docker CLI and Engine use::

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [ domain "/" ] path-component { "/" path-component }
    domain     := host [ ":" port ]          host: DNS labels or "[ipv6]"
    path-component := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
    tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    digest     := algorithm ":" hex           e.g. sha256:<64 lowercase hex>

The first component is a registry only when it contains ``.`` or ``:``, is
``localhost`` or holds an uppercase letter; otherwise the registry is
``docker.io`` and a one-component path gets ``library/``.  ``index.docker.io``
is read as ``docker.io``.

Two places where imagegate is stricter than Docker, on purpose:

* a dotted first component that is not a valid host name (``foo_bar.com/x``)
  is refused; Docker silently reads it as a path with *no* registry at all;
* the repository ``sha256`` (``sha256:<hex>``) is refused, as the Docker Engine
  refuses to tag it: it is an image ID, not a name.

Whether a tag looks mutable is :mod:`imagegate._tags`' business, not the grammar's.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, replace

from imagegate._errors import InvalidReference

__all__ = [
    "DOCKER_HUB",
    "Reference",
    "ReferenceKind",
    "is_loopback_host",
    "launch_reference",
    "parse_digest",
    "parse_reference",
]

DOCKER_HUB = "docker.io"
"""The registry name Docker Hub references normalise to."""

_DOCKER_HUB_API = "registry-1.docker.io"
_LEGACY_DOCKER_HUB = "index.docker.io"
_OFFICIAL_PREFIX = "library/"
_NAME_MAX = 255
_TEXT_MAX = 1024  # far above the longest valid reference (about 530)

# --- grammar (distribution reference/regexp.go) --------------------------------------
# "-+" instead of distribution's "[-]*": the same language, without the nested
# empty repetition that makes Python's backtracking engine explode.
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_REMOTE_NAME = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_DOMAIN_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*"
_IPV6 = r"\[[a-fA-F0-9:]+\]"
_DOMAIN_AND_PORT = rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
# The digest grammar, [A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[[:xdigit:]]{32,},
# is implied by the stricter go-digest checks the Engine applies next (see _digest_problem).

_DOMAIN_RE = re.compile(_DOMAIN_AND_PORT, re.ASCII)
_DOMAIN_LABEL_RE = re.compile(_DOMAIN_LABEL, re.ASCII)
_PATH_RE = re.compile(_REMOTE_NAME, re.ASCII)
_PATH_COMPONENT_RE = re.compile(_PATH_COMPONENT, re.ASCII)
_TAG_RE = re.compile(_TAG, re.ASCII)
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}", re.ASCII)
_PORT_RE = re.compile(r"[0-9]+", re.ASCII)
_HEX_RE = re.compile(r"[a-f0-9]+", re.ASCII)
_IPV4_LOOPBACK_RE = re.compile(r"127\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})", re.ASCII)
_IPV6_GROUP_RE = re.compile(r"[0-9a-f]{1,4}", re.ASCII)

# Algorithms the Docker Engine accepts (go-digest) → length of the hex part.
_DIGEST_HEX_LENGTH = {"sha256": 64, "sha384": 96, "sha512": 128}

_TAG_HELP = "tags are [A-Za-z0-9_.-], at most 128, not starting with . or -"
_PATH_HELP = (
    "components are lowercase letters and digits, joined by one '.', one or two '_' "
    "or any number of '-', starting and ending with a letter or digit"
)
_HOST_HELP = (
    "a registry is a host name (letters, digits and '-' in '.'-separated labels), "
    "an IPv4 address or a bracketed IPv6 address, with an optional :PORT"
)


class ReferenceKind(enum.Enum):
    """How firmly a reference names an image."""

    DIGEST = "digest"
    TAGGED = "tagged"
    UNTAGGED = "untagged"


def launch_reference(pinned: str) -> str:
    """``REGISTRY/REPO@sha256:…`` for a pinned reference: what a runtime is given.

    The tag is dropped so nothing downstream can resolve it again; a reference
    without a digest is refused (it is not pinned).
    """
    ref = parse_reference(pinned)
    if ref.digest is None:
        raise InvalidReference(pinned, "it has no digest, so it is not pinned; resolve it first")
    return str(ref.without_tag())


def parse_digest(text: str) -> str:
    """Return *text* if it is a digest the Docker Engine accepts, else raise.

    A digest is ``algorithm:hex``: ``sha256`` with 64, ``sha384`` with 96 or
    ``sha512`` with 128 lowercase hex characters.

    Raises:
        InvalidReference: naming *text* and what is wrong with it.
    """
    problem = _digest_problem(text)
    if problem:
        raise InvalidReference(text if isinstance(text, str) else repr(text), problem)
    return text


def parse_reference(text: str) -> Reference:
    """Parse and normalise an image reference the way ``docker pull`` does.

    ``"busybox"`` → ``docker.io/library/busybox``; ``"localhost:5000/x:1"`` →
    registry ``localhost:5000``, repository ``x``, tag ``1``.  A missing tag
    stays ``None`` (Docker would pull ``latest``).

    Raises:
        InvalidReference: naming *text* and the reason, for anything Docker
            would refuse.
    """
    if not isinstance(text, str):
        raise InvalidReference(repr(text), f"expected a string, got {type(text).__name__}")
    problem = _text_problem(text)
    if problem:
        raise InvalidReference(text, problem)
    registry, remainder = _split_docker_domain(text)
    rest, at, digest = remainder.partition("@")
    path, colon, tag = rest.partition(":")
    if not path:
        where = f"after {registry!r}" if "/" in text else f"before {text[0]!r}"
        raise InvalidReference(text, f"the repository name is missing {where}")
    if colon and not tag:
        raise InvalidReference(text, "':' is not followed by a tag; remove the ':' or add a tag")
    if at and not digest:
        raise InvalidReference(text, "'@' is not followed by a digest; write NAME@sha256:<64 hex>")
    if "@" in digest:
        raise InvalidReference(text, "it has more than one '@'; a reference holds at most one digest")
    problem = _path_problem(path)  # before normalisation, so the reason shows what the user wrote
    if problem:
        raise InvalidReference(text, problem)
    try:
        return Reference(registry, path, tag if colon else None, digest if at else None)
    except InvalidReference as exc:
        raise InvalidReference(text, exc.reason) from None


@dataclass(frozen=True, slots=True)
class Reference:
    """A normalised, valid image reference.

    Constructing one validates and normalises it (``index.docker.io`` →
    ``docker.io``, ``docker.io`` + ``busybox`` → ``library/busybox``), so every
    instance satisfies ``parse_reference(str(ref)) == ref``.

    Raises:
        InvalidReference: if a part is not valid.
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __post_init__(self) -> None:
        registry, repository = self.registry, self.repository
        if registry == _LEGACY_DOCKER_HUB:
            registry = DOCKER_HUB
        if registry == DOCKER_HUB and isinstance(repository, str) and repository and "/" not in repository:
            repository = _OFFICIAL_PREFIX + repository
        object.__setattr__(self, "registry", registry)
        object.__setattr__(self, "repository", repository)
        problem = _parts_problem(registry, repository, self.tag, self.digest)
        if problem:
            raise InvalidReference(_join(registry, repository, self.tag, self.digest), problem)

    def __str__(self) -> str:
        return _join(self.registry, self.repository, self.tag, self.digest)

    @property
    def name(self) -> str:
        """``registry/repository``, e.g. ``docker.io/library/busybox``."""
        return f"{self.registry}/{self.repository}"

    @property
    def familiar(self) -> str:
        """Docker's short form, as ``docker images`` shows it: ``busybox:1.36``.

        Like Docker's, it drops ``docker.io/`` even when the path then looks like
        a registry (``docker.io/foo.com/x`` → ``foo.com/x``); use ``str()`` to get
        a form that always parses back to this reference.
        """
        name = self.repository
        if self.registry != DOCKER_HUB:
            name = self.name
        elif name.startswith(_OFFICIAL_PREFIX) and name.count("/") == 1:
            name = name[len(_OFFICIAL_PREFIX) :]
        return _join_suffixes(name, self.tag, self.digest)

    @property
    def kind(self) -> ReferenceKind:
        """DIGEST when a digest is present (even with a tag), else TAGGED or UNTAGGED."""
        if self.digest is not None:
            return ReferenceKind.DIGEST
        return ReferenceKind.TAGGED if self.tag is not None else ReferenceKind.UNTAGGED

    @property
    def is_pinned(self) -> bool:
        """True when the reference names one image by digest."""
        return self.digest is not None

    def with_digest(self, digest: str) -> Reference:
        """Return this reference pinned to *digest*, keeping the tag."""
        problem = _digest_problem(digest)
        if problem:
            raise InvalidReference(f"{self.name}@{digest}", problem)
        return replace(self, digest=digest)

    def with_tag(self, tag: str) -> Reference:
        """Return this reference with *tag* (the digest, if any, is kept)."""
        problem = _tag_problem(tag)
        if problem:
            raise InvalidReference(f"{self.name}:{tag}", problem)
        return replace(self, tag=tag)

    def without_tag(self) -> Reference:
        """Return this reference without its tag."""
        return replace(self, tag=None)

    @property
    def api_host(self) -> str:
        """The host[:port] to send registry API requests to."""
        return _DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def is_loopback(self) -> bool:
        """True for ``localhost``, ``127.0.0.0/8`` and ``[::1]`` registries (any port)."""
        return is_loopback_host(_host_of(self.registry))


def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, an address in ``127.0.0.0/8``, or ``::1`` in any spelling (brackets optional)."""
    host = host.lower()
    if host == "localhost":
        return True
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        return _is_ipv6_loopback(host)
    match = _IPV4_LOOPBACK_RE.fullmatch(host)
    return match is not None and all(int(octet) <= 255 for octet in match.groups())


# --- helpers ----------------------------------------------------------------------------


def _short(value: str, limit: int = 60) -> str:
    """*value* quoted, cut to *limit* characters for messages."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


def _join_suffixes(name: str, tag: str | None, digest: str | None) -> str:
    if tag is not None:
        name = f"{name}:{tag}"
    if digest is not None:
        name = f"{name}@{digest}"
    return name


def _join(registry: str, repository: str, tag: str | None, digest: str | None) -> str:
    return _join_suffixes(f"{registry}/{repository}", tag, digest)


def _split_docker_domain(text: str) -> tuple[str, str]:
    """Split off the registry as ``splitDockerDomain`` does (no ``library/`` yet)."""
    first, slash, rest = text.partition("/")
    if slash and _looks_like_registry(first):
        registry, remainder = first, rest
    else:
        registry, remainder = DOCKER_HUB, text
    if registry == _LEGACY_DOCKER_HUB:
        registry = DOCKER_HUB
    return registry, remainder


def _looks_like_registry(component: str) -> bool:
    """Docker's test for "this first path component is a registry"."""
    return "." in component or ":" in component or component == "localhost" or component != component.lower()


def _text_problem(text: str) -> str | None:
    """Problems visible in the raw text before it is split."""
    if not text:
        return "the reference is empty"
    if len(text) > _TEXT_MAX:
        return f"it is {len(text)} characters long; a reference is at most a few hundred"
    if any(char.isspace() for char in text):
        return "it contains whitespace; remove it (a stray space or newline?)"
    if not text.isascii() or not text.isprintable():
        bad = next(char for char in text if not (char.isascii() and char.isprintable()))
        return f"it contains the character {bad!r}; references are plain ASCII"
    if _IDENTIFIER_RE.fullmatch(text):
        return (
            "a bare 64-character hex string is an image ID, not a reference "
            "(Docker refuses it as ambiguous); write NAME@sha256:<64 hex> to pin by digest"
        )
    return None


def _parts_problem(registry: str, repository: str, tag: str | None, digest: str | None) -> str | None:
    for value, what in ((registry, "registry"), (repository, "repository")):
        if not isinstance(value, str):
            return f"the {what} must be a string, got {type(value).__name__}"
    problem = (
        _registry_problem(registry)
        or _path_problem(repository)
        or (None if tag is None else _tag_problem(tag))
        or (None if digest is None else _digest_problem(digest))
    )
    if problem:
        return problem
    name_length = len(registry) + 1 + len(repository)
    if name_length > _NAME_MAX:
        return (
            f"the name {registry}/{repository[:20]}… is {name_length} characters long; "
            f"Docker allows at most {_NAME_MAX} for registry and repository together"
        )
    if registry == DOCKER_HUB and repository == _OFFICIAL_PREFIX + "sha256":
        return (
            "'sha256' cannot be a repository name: Docker reads 'sha256:…' as an image ID "
            "and refuses to tag it; write NAME@sha256:<64 hex> to pin by digest"
        )
    return None


def _host_of(registry: str) -> str:
    """The host part of ``host[:port]`` (IPv6 keeps its brackets)."""
    if registry.startswith("["):
        end = registry.find("]")
        return registry if end < 0 else registry[: end + 1]
    return registry.partition(":")[0]


def _registry_problem(registry: str) -> str | None:
    if not registry:
        return "the registry is empty"
    if not _looks_like_registry(registry):
        return (
            f"registry {_short(registry)} would be read as part of the path; a registry contains "
            "'.' or ':', is 'localhost', or has an uppercase letter"
        )
    if _DOMAIN_RE.fullmatch(registry):
        return None
    host = _host_of(registry)
    after = registry[len(host) :]
    if after and not after.startswith(":"):
        return f"registry {_short(registry)} has {_short(after)} after the IPv6 address; {_HOST_HELP}"
    port = after[1:]
    if after and not port:
        return f"registry {_short(registry)} has an empty port; remove the ':' or add a port number"
    if after and not _PORT_RE.fullmatch(port):
        return f"port {_short(port)} of registry {_short(registry)} must be a number"
    if host.startswith("["):
        if not host.endswith("]"):
            return f"the IPv6 address in registry {_short(registry)} has no closing ']'"
        return f"IPv6 address {_short(host)} of registry {_short(registry)} may only hold hex digits and ':'"
    for label in host.split("."):
        if not _DOMAIN_LABEL_RE.fullmatch(label):
            shown = "an empty label" if not label else f"the label {_short(label)}"
            return f"registry {_short(registry)} is not a valid host: {shown} is not allowed; {_HOST_HELP}"
    return f"registry {_short(registry)} is not valid; {_HOST_HELP}"


def _path_problem(path: str) -> str | None:
    if _PATH_RE.fullmatch(path):
        return None
    if not path:
        return "the repository name is missing"
    if path != path.lower():
        return f"repository name must be lowercase (got {_short(path)})"
    for component in path.split("/"):
        if not component:
            return f"repository {_short(path)} has an empty path component (a leading, trailing or doubled '/')"
        if not _PATH_COMPONENT_RE.fullmatch(component):
            return f"path component {_short(component)} of {_short(path)} is invalid; {_PATH_HELP}"
    return f"repository {_short(path)} is invalid; {_PATH_HELP}"  # pragma: no cover - defensive


def _tag_problem(tag: str) -> str | None:
    if not isinstance(tag, str):
        return f"the tag must be a string, got {type(tag).__name__}"
    if _TAG_RE.fullmatch(tag):
        return None
    if not tag:
        return "the tag is empty"
    if len(tag) > 128:
        return f"tag {_short(tag, 20)} is {len(tag)} characters long; {_TAG_HELP}"
    return f"tag {_short(tag)} has invalid characters; {_TAG_HELP}"


def _digest_problem(digest: str) -> str | None:
    """Why *digest* is not a digest the Docker Engine (go-digest) accepts, or None."""
    if not isinstance(digest, str):
        return f"the digest must be a string, got {type(digest).__name__}"
    algorithm, colon, encoded = digest.partition(":")
    if not colon or not algorithm or not encoded:
        return f"digest {_short(digest)} is not ALGORITHM:HEX, e.g. sha256:<64 hex>"
    expected = _DIGEST_HEX_LENGTH.get(algorithm)
    if expected is None:
        lower = " (algorithm names are lowercase)" if algorithm.lower() in _DIGEST_HEX_LENGTH else ""
        return f"unsupported digest algorithm {_short(algorithm)}{lower}; use sha256 (or sha384, sha512)"
    if not _HEX_RE.fullmatch(encoded):
        return f"digest {_short(digest, 80)} must be lowercase hex (0-9, a-f) after '{algorithm}:'"
    if len(encoded) != expected:
        found = len(encoded)
        return f"digest {_short(digest, 80)} has {found} hex characters after '{algorithm}:'; it needs {expected}"
    return None


def _is_ipv6_loopback(address: str) -> bool:
    """True if *address* (no brackets, lowercase) is ``::1`` in any spelling."""
    if address.count("::") > 1:
        return False
    if "::" in address:
        head, _, tail = address.partition("::")
        front = head.split(":") if head else []
        back = tail.split(":") if tail else []
        missing = 8 - len(front) - len(back)
        if missing < 1:
            return False
        groups = front + ["0"] * missing + back
    else:
        groups = address.split(":")
    if len(groups) != 8 or not all(_IPV6_GROUP_RE.fullmatch(group) for group in groups):
        return False
    return all(int(group, 16) == 0 for group in groups[:7]) and int(groups[7], 16) == 1
