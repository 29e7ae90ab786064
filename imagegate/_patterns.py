"""Patterns a policy gives: regular expressions for tags, globs for registries and waivers.

Both are compiled with RE2 (``google-re2``), which matches in time linear in the input
whatever the pattern: a careless or hostile policy (``(a+)+b``, ``*a*a*a*a*b``) cannot
hang a check. Python's ``re`` backtracks, and ``fnmatch`` reads ``[::1]:5000`` as a
character class, so neither is used for what a policy writes.

Globs have one wildcard: ``*`` matches any run of characters except ``/``, ``**`` any run
including ``/``. Every other character, ``?``, ``[`` and ``]`` included, is literal. A glob
without ``*`` is compared as a plain string (no regex at all).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

from imagegate._errors import PolicyError

MAX_PATTERN_LENGTH = 512
_MAX_RE2_MEMORY = 8 << 20


def _re2() -> Any:
    try:
        import re2
    except ImportError:  # pragma: no cover - a dependency of imagegate
        raise PolicyError("patterns need the google-re2 package: pip install google-re2") from None
    return re2


@functools.lru_cache(maxsize=1)
def _options() -> Any:
    re2 = _re2()
    options = re2.Options()
    options.log_errors = False  # the error is ours to report, not RE2's to print on stderr
    options.max_mem = _MAX_RE2_MEMORY
    return options


@functools.lru_cache(maxsize=1024)
def compile_regex(pattern: str, *, key: str | None = None) -> Any:
    """*pattern* compiled with RE2; ``.fullmatch(text)`` runs in linear time.

    Raises:
        PolicyError: naming the pattern (and *key*) when it is too long or not valid RE2 syntax
            (RE2 has no backreferences or look-around).
    """
    if not isinstance(pattern, str) or not pattern:
        raise PolicyError(f"pattern {pattern!r} must be a non-empty string", key=key)
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise PolicyError(f"pattern {pattern[:40]!r}… is {len(pattern)} characters; at most {MAX_PATTERN_LENGTH}", key=key)
    re2 = _re2()
    try:
        return re2.compile(pattern, options=_options())
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise PolicyError(
            f"pattern {pattern!r} is not a valid regular expression ({reason}); patterns are RE2 regular "
            "expressions matched against the whole text (no backreferences or look-around)",
            key=key,
        ) from None


@dataclass(frozen=True)
class Glob:
    """A glob where only ``*`` (not across ``/``) and ``**`` (across ``/``) are special."""

    text: str
    _regex: Any = field(default=None, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text:
            raise PolicyError(f"pattern {self.text!r} must be a non-empty string")
        if len(self.text) > MAX_PATTERN_LENGTH:
            raise PolicyError(f"pattern {self.text[:40]!r}… is longer than {MAX_PATTERN_LENGTH} characters")
        if "*" in self.text:
            object.__setattr__(self, "_regex", compile_regex(_translate(self.text)))

    @property
    def is_literal(self) -> bool:
        return self._regex is None

    @property
    def matches_everything(self) -> bool:
        """True when no literal letter or digit constrains it (``*``, ``**``, ``*/**``): it matches any name."""
        return not any(char.isalnum() for char in self.text)

    def match(self, text: str) -> bool:
        if self._regex is None:
            return text == self.text
        return self._regex.fullmatch(text) is not None


def _translate(glob: str) -> str:
    parts = []
    for index, piece in enumerate(re.split(r"(\*\*|\*)", glob)):
        if index % 2:
            parts.append(".*" if piece == "**" else "[^/]*")
        elif piece:
            parts.append(re.escape(piece))
    return "".join(parts)
