"""The container user, read exactly as the runtimes read it. Pure, no I/O.

What runs is decided by code we did not write, so that code is the specification:

- **Docker Engine** (``daemon/oci_linux.go: getUser`` -> runc ``libcontainer/user.GetExecUser``):
  ``USER`` is ``user[:group[:ignored…]]``; ``user`` is a uid when Go's ``strconv.Atoi`` accepts it
  (an optional ``+`` or ``-`` sign, ASCII digits, leading zeros: ``+0``, ``-0`` and ``000`` are all
  uid 0), else a name looked up in the image's ``/etc/passwd`` (first match wins). The uid field
  of a passwd line is read with ``Atoi`` *ignoring errors*, so ``app:x:abc:…`` is uid 0, and the
  result is truncated to 32 bits, so ``app:x:4294967296:…`` is uid 0 too. An empty user is root.
- **containerd's CRI / the kubelet** (``getUserFromImage``): ``user`` before the first ``:``, a uid
  when ``strconv.ParseInt(…, 10, 64)`` accepts it, else a name the kubelet cannot verify for
  ``runAsNonRoot`` (it refuses to start the pod).

imagegate is stricter than both, never looser: a user that is not plain ``NAME`` or a canonical
decimal uid in ``0..2147483647`` (optionally ``:GROUP``) is refused as ambiguous, and any uid
that is 0 modulo 2**32 is root.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

MAX_UID = 2**31 - 1  # runc's maxID; the Kubernetes API's limit for runAsUser
_GO_INT = re.compile(r"[+-]?[0-9]+", re.ASCII)
_CANONICAL_ID = re.compile(r"0|[1-9][0-9]{0,9}", re.ASCII)
_NAME = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]*\$?", re.ASCII)
_INT64 = (-(2**63), 2**63 - 1)


def go_atoi(text: str) -> int | None:
    """Go's ``strconv.Atoi`` (and ``ParseInt(s, 10, 64)``): the value, or None where Go returns an error."""
    if not _GO_INT.fullmatch(text):
        return None
    value = int(text)
    return value if _INT64[0] <= value <= _INT64[1] else None


def runtime_uid(value: int) -> int:
    """The uid a process gets for *value*: Go converts the int to ``uint32``."""
    return value % 2**32


@dataclass(frozen=True, slots=True)
class UserSpec:
    """A ``USER`` / ``--user`` value split as the runtimes split it.

    ``uid`` is the number the engine would use when ``user`` is numeric to Go (``+0`` -> 0),
    else None (a name). ``problem`` says why imagegate refuses the spelling, or None.
    """

    text: str
    user: str
    group: str | None
    uid: int | None
    problem: str | None

    @property
    def is_named(self) -> bool:
        return self.uid is None and self.problem is None and self.user != ""

    @property
    def canonical_uid(self) -> int | None:
        """The uid when the spelling is a plain decimal in range (what Kubernetes' runAsUser may be)."""
        return self.uid if self.problem is None and self.uid is not None else None


def parse_user(text: str | None) -> UserSpec:
    """Split and classify a user value; never raises."""
    text = "" if text is None else text
    user, colon, rest = text.partition(":")
    group = rest if colon else None
    uid = go_atoi(user)
    return UserSpec(text, user, group, uid, _problem(text, user, group, uid))


def _problem(text: str, user: str, group: str | None, uid: int | None) -> str | None:
    if text == "":
        return None
    if not text.isascii() or not text.isprintable() or any(c.isspace() for c in text):
        return "it holds whitespace, control or non-ASCII characters; the engine would not read it as a plain uid or name"
    if group is not None and ":" in group:
        return "it has more than one ':'; the engine ignores what follows the second one"
    if user == "":
        return "the user before ':' is empty, which the engine runs as root"
    if uid is not None:
        if runtime_uid(uid) == 0:
            return None  # root, reported as root by is_root
        if not _CANONICAL_ID.fullmatch(user):
            return f"{user!r} is uid {uid} to the engine but not a plain decimal; write it as {uid}" if 0 < uid <= MAX_UID else (
                f"uid {user} is outside 0..{MAX_UID}; the engine refuses it or truncates it to 32 bits"
            )
        if uid > MAX_UID:
            return f"uid {user} is outside 0..{MAX_UID}; the engine refuses it or truncates it to 32 bits"
        return None
    if go_atoi(user.lstrip("+-") or "x") is not None or not _NAME.fullmatch(user):
        return f"{user!r} is neither a plain uid nor a user name"
    if group is not None and group != "" and go_atoi(group) is None and not _NAME.fullmatch(group):
        return f"group {group!r} is neither a plain gid nor a group name"
    return None


def is_root(spec: UserSpec) -> bool:
    """True when the value itself means root: empty, a uid that is 0 to the engine, or ``root``.

    A name other than ``root`` is root only if the image's ``/etc/passwd`` says so: see
    :func:`resolve_name`.
    """
    if spec.user == "" or spec.user == "root":
        return True
    return spec.uid is not None and runtime_uid(spec.uid) == 0


@dataclass(frozen=True, slots=True)
class PasswdEntry:
    name: str
    uid: int  # the int64 runc reads (Atoi errors read as 0), before the uint32 truncation
    gid: int


@dataclass(frozen=True, slots=True)
class PasswdLookup:
    """An image's ``/etc/passwd`` as the engine would read it.

    ``entries`` is None when the image has no such file; ``problem`` says why it could not be
    read safely (then nothing may be resolved from it).
    """

    entries: tuple[PasswdEntry, ...] | None
    problem: str | None = None


#: What Go's ``bytes.TrimSpace`` trims (``unicode.IsSpace``): ASCII white space, U+0085, U+00A0 and the Unicode
#: White_Space characters. Not Python's ``str.strip()``: it also trims U+001C..U+001F, which Go keeps in the name —
#: either difference would let a line such as "\u00a0app:x:0:0" name a different user to imagegate than to Docker.
GO_SPACE = ("\t\n\v\f\r \u0085\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
            "\u2028\u2029\u202f\u205f\u3000")


def parse_passwd(text: str) -> tuple[PasswdEntry, ...]:
    """``/etc/passwd`` lines as runc reads them (``ParsePasswdFilter``): each line trimmed as Go trims it
    (:data:`GO_SPACE`), blank lines skipped, fields split on ``:``, numeric fields through ``Atoi`` with errors read as 0."""
    entries: list[PasswdEntry] = []
    for raw in text.split("\n"):
        line = raw.strip(GO_SPACE)
        if not line:
            continue
        parts = line.split(":")
        name = parts[0]
        uid = go_atoi(parts[2]) if len(parts) > 2 else None
        gid = go_atoi(parts[3]) if len(parts) > 3 else None
        entries.append(PasswdEntry(name, uid or 0, gid or 0))
    return tuple(entries)


def resolve_name(name: str, entries: Iterable[PasswdEntry]) -> PasswdEntry | None:
    """The passwd entry the engine would use for user *name*: the first with that exact name."""
    for entry in entries:
        if entry.name == name:
            return entry
    return None
