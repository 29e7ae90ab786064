"""Tag rules: whether a tag looks mutable (``latest``, ``3.13``, ``3-slim``) or immutable
(``1.2.3``, a git SHA, a date stamp). Pure: no I/O.

The built-in patterns are ours and are written so that Python's backtracking engine
stays linear on them (tags are at most 128 characters). Patterns a policy adds are
compiled with RE2 (``google-re2``), which cannot backtrack catastrophically, so a
hostile or careless policy cannot hang a check.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from imagegate._errors import PolicyError
from imagegate._patterns import compile_regex

__all__ = ["DEFAULT_IMMUTABLE_TAGS", "DEFAULT_MUTABLE_TAGS", "TagClass", "TagRules"]




class TagClass(enum.Enum):
    """Whether a tag is expected to keep pointing at the same image."""

    MUTABLE = "mutable"
    IMMUTABLE = "immutable"
    UNKNOWN = "unknown"


_CHANNELS = (
    "main|master|develop|dev|stable|edge|nightly|current|next|beta|alpha|rc|canary"
    "|release|testing|unstable|head|trunk|lts"
)
_VARIANTS = (
    r"slim|alpine(?:\d+(?:\.\d+)*)?|bookworm|bullseye|buster|stretch|trixie|sid"
    r"|noble|jammy|focal|bionic|xenial|debian\d*|ubuntu(?:\d+(?:\.\d+)*)?"
    r"|ubi\d*|minimal|distroless|musl|glibc|jdk\d*|jre\d*"
    r"|windowsservercore|nanoserver|ltsc\d{4}"
)
_DATE = r"(?:19|20)\d\d(?:(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])|([-.])(?:0[1-9]|1[0-2])\1(?:0[1-9]|[12]\d|3[01]))"

# pattern → (what the tag is, why that matters); order decides which reason is given.
_MUTABLE_RULES: dict[str, tuple[str, str]] = {
    r"latest": ("the floating default", "it points at whatever was pushed last"),
    r"latest[-_.][\w.-]+|[\w.-]+[-_.]latest": ("a 'latest' variant", "it moves with every release"),
    rf"(?:{_CHANNELS})(?:-(?:{_VARIANTS}))*": (
        "a branch or release-channel name",
        "it moves with every build of that channel",
    ),
    r"v?\d{1,4}": ("major-only", "it moves with every minor and patch release"),
    r"v?\d+\.\d+": ("minor-only", "it moves with every patch release"),
    rf"(?:{_VARIANTS})(?:-(?:{_VARIANTS}))*": (
        "a variant name without a version",
        "it moves with every release of the image",
    ),
    rf"v?\d+(?:\.\d+)?(?:-(?:{_VARIANTS}))+": (
        "a major or minor version with a variant",
        "it moves with every patch release",
    ),
}
_IMMUTABLE_RULES: dict[str, tuple[str, str]] = {
    # the tags `imagegate build` writes: c-<content>, g-<commit>[-dirty-<content>], g-<commit>-c-<content>
    r"(?:g-[0-9a-f]{12}(?:-dirty-[0-9a-f]{12})?-?)?(?:c-[0-9a-f]{20,40})?(?<=[0-9a-f])": (
        "an imagegate build tag",
        "it is derived from the image's inputs, so it names one build",
    ),
    rf"(?:[\w.-]*[-_.])?{_DATE}(?:[T_.-]?\d{{4}}(?:\d\d)?Z?)?(?:[-_.][\w.-]+)?": (
        "a date stamp",
        "date-stamped tags are normally pushed once",
    ),
    r"(?:[A-Za-z][\w.-]*[-_])?v?\d+\.\d+\.\d+(?:[-_.+][\w.-]+)?": (
        "a full version",
        "release tags like this are normally pushed once",
    ),
    (
        r"(?:[\w.-]*[-_.])?(?:build|b|r|rev|ci|run|job)[-_.]?\d+(?:[-_.][\w.-]+)?"
        r"|\d{5,}|\d+[-_.](?:g|sha-)?[0-9a-f]{7,40}"
    ): (
        "a build number",
        "build-numbered tags are normally pushed once",
    ),
    r"(?:[\w.-]*[-_.])?(?:sha-|g)?(?=[a-f]*\d)[0-9a-f]{7,40}": (
        "a git commit",
        "commit tags are normally pushed once",
    ),
}

class _Matcher(Protocol):
    def fullmatch(self, text: str) -> Any: ...


DEFAULT_MUTABLE_TAGS: tuple[str, ...] = tuple(_MUTABLE_RULES)
"""Default patterns of tags that move (a missing tag is always mutable)."""
DEFAULT_IMMUTABLE_TAGS: tuple[str, ...] = tuple(_IMMUTABLE_RULES)
"""Default patterns of tags that look like they are pushed once."""
_BUILTIN: dict[str, _Matcher] = {pattern: re.compile(pattern) for pattern in (*_MUTABLE_RULES, *_IMMUTABLE_RULES)}


@dataclass(frozen=True)
class TagRules:
    """Regular expressions (matched against the whole tag) that classify tags.

    A tag matching any ``mutable`` pattern is MUTABLE, even if it also matches an
    ``immutable`` one; otherwise a tag matching an ``immutable`` pattern is
    IMMUTABLE; anything else is UNKNOWN.  No tag at all is always MUTABLE.

    Raises:
        PolicyError: if a pattern is not a valid regular expression.
    """

    mutable: tuple[str, ...] = DEFAULT_MUTABLE_TAGS
    immutable: tuple[str, ...] = DEFAULT_IMMUTABLE_TAGS
    _compiled: tuple[tuple[tuple[str, _Matcher], ...], ...] = field(
        init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        mutable = _pattern_tuple(self.mutable, "mutable")
        immutable = _pattern_tuple(self.immutable, "immutable")
        object.__setattr__(self, "mutable", mutable)
        object.__setattr__(self, "immutable", immutable)
        compiled = (_compile_all(mutable, "mutable"), _compile_all(immutable, "immutable"))
        object.__setattr__(self, "_compiled", compiled)

    def __reduce__(self) -> tuple[Any, ...]:
        # compiled RE2 patterns do not pickle; the patterns do
        return (TagRules, (self.mutable, self.immutable))

    @classmethod
    def default(cls) -> TagRules:
        """The built-in rules (see ``DEFAULT_MUTABLE_TAGS`` / ``DEFAULT_IMMUTABLE_TAGS``)."""
        global _default_rules
        if _default_rules is None:
            _default_rules = cls()
        return _default_rules

    def extended(self, mutable: tuple[str, ...] = (), immutable: tuple[str, ...] = ()) -> TagRules:
        """Return these rules plus the user's *mutable* and *immutable* patterns.

        User patterns are added after the existing ones (duplicates dropped).  They
        cannot make a tag that matches a mutable pattern immutable: build a
        ``TagRules(mutable=…, immutable=…)`` to replace the defaults instead.

        Raises:
            PolicyError: naming a pattern that is not a valid regular expression.
        """
        add_mutable = _pattern_tuple(mutable, "mutable")
        add_immutable = _pattern_tuple(immutable, "immutable")
        _compile_all(add_mutable, "mutable")  # so an error indexes the user's own list
        _compile_all(add_immutable, "immutable")
        return TagRules(
            mutable=tuple(dict.fromkeys(self.mutable + add_mutable)),
            immutable=tuple(dict.fromkeys(self.immutable + add_immutable)),
        )

    def classify(self, tag: str | None) -> tuple[TagClass, str]:
        """Return the class of *tag* and a sentence naming the rule that decided it."""
        if tag is None:
            return TagClass.MUTABLE, "no tag: Docker uses 'latest', which points at whatever was pushed last"
        mutable, immutable = self._compiled
        for pattern, regex in mutable:
            if regex.fullmatch(tag):
                return TagClass.MUTABLE, _mutable_reason(tag, pattern)
        for pattern, regex in immutable:
            if regex.fullmatch(tag):
                return TagClass.IMMUTABLE, _immutable_reason(tag, pattern)
        return TagClass.UNKNOWN, (
            f"tag {tag!r} matches no mutable or immutable rule; pin it by digest, "
            "or add a pattern for it to the tag rules"
        )


_default_rules: TagRules | None = None


def _pattern_tuple(patterns: object, kind: str) -> tuple[str, ...]:
    """*patterns* as a tuple of strings, or a PolicyError saying what was given instead."""
    expected = f"{kind} tag patterns must be a list of regular expressions"
    if isinstance(patterns, (str, bytes)):
        raise PolicyError(f"{expected}, got the single string {patterns!r}")
    if not isinstance(patterns, (list, tuple)):
        raise PolicyError(f"{expected}, got {type(patterns).__name__}")
    for item in patterns:
        if not isinstance(item, str):
            raise PolicyError(f"{kind} tag pattern {item!r} must be a string (a regular expression)")
    return tuple(patterns)


def _compile_all(patterns: tuple[str, ...], kind: str) -> tuple[tuple[str, _Matcher], ...]:
    """Built-in patterns with ``re`` (ours, written not to backtrack); any other with RE2."""
    compiled = []
    for index, pattern in enumerate(patterns):
        builtin = _BUILTIN.get(pattern)
        if builtin is not None:
            compiled.append((pattern, builtin))
            continue
        try:
            compiled.append((pattern, compile_regex(pattern, key=f"{kind}-tags[{index}]")))
        except PolicyError as exc:
            raise PolicyError(f"{kind} tag {exc.message}", key=exc.key) from None
    return tuple(compiled)


def _mutable_reason(tag: str, pattern: str) -> str:
    rule = _MUTABLE_RULES.get(pattern)
    if rule is None:
        return f"tag {tag!r} matches the mutable pattern {pattern!r}"
    what, why = rule
    return f"tag {tag!r} is {what}: {why}"


def _immutable_reason(tag: str, pattern: str) -> str:
    rule = _IMMUTABLE_RULES.get(pattern)
    if rule is None:
        return f"tag {tag!r} matches the immutable pattern {pattern!r}; only a digest guarantees it"
    what, why = rule
    return f"tag {tag!r} is {what}: {why}, but only a digest guarantees it"
