"""Strict JSON for documents from registries: one meaning for imagegate and for Go's decoder.

The Docker Engine, containerd and the kubelet decode manifests and image configs with Go's
``encoding/json``. It matches an object's keys to struct fields case-insensitively (``user``,
``USER`` and ``User`` are one field; so are Unicode letters that fold to ASCII, such as ``ſ``
and the Kelvin sign) and the last matching key wins. Python's ``json`` keeps the last *exact*
key. ``{"User": "1000", "user": "0"}`` would be user 1000 to a naive reader and uid 0 to the
engine. Being stricter than the runtime is safe, being looser is a hole, so :func:`decode`
refuses:

- a key given twice in any object;
- ``NaN``, ``Infinity`` and numbers out of a float64's range (Go refuses them), invalid UTF-8 and lone surrogates (Go would replace
  them with U+FFFD: the same bytes would read differently), nesting deeper than 64.

and :func:`struct` — reading an object as Go reads it into a struct — refuses two keys that fold
to the same name, and any key outside printable ASCII (so Unicode case folding never matters).
Objects Go decodes into maps (labels, annotations) keep their keys as they are.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterator, Mapping, TypeVar

MAX_DEPTH = 64
T = TypeVar("T")


class DocumentError(ValueError):
    """A document that is not valid, unambiguous JSON of the expected shape; ``path`` says where."""

    def __init__(self, reason: str, path: str = "") -> None:
        self.reason = reason
        self.path = path
        super().__init__(f"{path}: {reason}" if path else reason)


class _Object(dict):  # type: ignore[type-arg]
    """A decoded JSON object (keys unique, in document order)."""


def _pairs(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object()
    for key, value in pairs:
        if key in obj:
            raise DocumentError(f"the key {_show(key)} appears twice in one object")
        obj[key] = value
    return obj


def _constant(name: str) -> Any:
    raise DocumentError(f"{name} is not JSON (Go's decoder refuses it)")


def _float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):  # 1e400: Go's decoder refuses a number a float64 cannot hold
        raise DocumentError(f"the number {_show(text)} is out of range (Go's decoder refuses it)")
    return value


def decode(data: bytes) -> Any:
    """Decode *data* strictly (see the module docstring); raise :class:`DocumentError`."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"not UTF-8 at byte {exc.start}") from None
    try:
        value = json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant, parse_float=_float)
    except DocumentError:
        raise
    except RecursionError:
        raise DocumentError("nested too deeply") from None
    except ValueError as exc:
        raise DocumentError(f"not JSON ({exc})") from None
    _walk(value, 0)
    return value


def _walk(value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise DocumentError(f"nested deeper than {MAX_DEPTH}")
    if isinstance(value, str):
        _check_text(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _walk(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _walk(item, depth + 1)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise DocumentError("a string holds a lone UTF-16 surrogate (\\ud800-\\udfff)") from None


def _show(key: str) -> str:
    return repr(key if len(key) <= 40 else key[:40] + "…")


def fold(key: str) -> str:
    """Go's case folding of a struct key, for printable-ASCII keys (others are refused)."""
    return key.upper()


class Struct:
    """An object read as Go reads it into a struct: each key folded, at most one key per field."""

    __slots__ = ("path", "_by_fold")

    def __init__(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise DocumentError(f"expected an object, got {_kind(value)}", path)
        self.path = path
        self._by_fold: dict[str, tuple[str, Any]] = {}
        for key, item in value.items():
            if not key.isascii() or not key.isprintable():
                raise DocumentError(f"the key {_show(key)} is not printable ASCII", path)
            folded = fold(key)
            if folded in self._by_fold:
                other = self._by_fold[folded][0]
                raise DocumentError(
                    f"the keys {_show(other)} and {_show(key)} differ only by case: Go's decoder reads both "
                    "into one field, and the last one wins",
                    path,
                )
            self._by_fold[folded] = (key, item)

    def __contains__(self, name: str) -> bool:
        return fold(name) in self._by_fold

    def raw(self, name: str) -> Any:
        """The value of field *name* (None when absent or null)."""
        found = self._by_fold.get(fold(name))
        return None if found is None else found[1]

    def where(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def string(self, name: str, *, required: bool = False) -> str | None:
        value = self.raw(name)
        if value is None:
            if required:
                raise DocumentError("is missing", self.where(name))
            return None
        if not isinstance(value, str):
            raise DocumentError(f"expected a string, got {_kind(value)}", self.where(name))
        return value

    def integer(self, name: str, *, required: bool = False, minimum: int = 0, maximum: int = 2**63 - 1) -> int | None:
        value = self.raw(name)
        if value is None:
            if required:
                raise DocumentError("is missing", self.where(name))
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise DocumentError(f"expected an integer, got {_kind(value)}", self.where(name))
        if not minimum <= value <= maximum:
            raise DocumentError(f"{value} is outside {minimum}..{maximum}", self.where(name))
        return value

    def struct(self, name: str, *, required: bool = False) -> Struct | None:
        value = self.raw(name)
        if value is None:
            if required:
                raise DocumentError("is missing", self.where(name))
            return None
        return Struct(value, self.where(name))

    def strings(self, name: str, *, allow_string: bool = False) -> tuple[str, ...] | None:
        """A list of strings (None when absent or null); *allow_string*: a bare string is a list of one
        (moby's ``StrSlice`` for ``Entrypoint``/``Cmd``)."""
        value = self.raw(name)
        if value is None:
            return None
        if allow_string and isinstance(value, str):
            return (value,)
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise DocumentError(f"expected a list of strings, got {_kind(value)}", self.where(name))
        return tuple(value)

    def mapping(self, name: str) -> dict[str, str]:
        """A JSON object of strings (Go's ``map[string]string``): keys as they are, no folding."""
        value = self.raw(name)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise DocumentError(f"expected an object, got {_kind(value)}", self.where(name))
        for key, item in value.items():
            if not isinstance(item, str):
                raise DocumentError(f"expected a string value, got {_kind(item)}", f"{self.where(name)}[{_show(key)}]")
        return dict(value)

    def items(self, name: str, read: Callable[[Any, str], T], *, required: bool = False) -> tuple[T, ...]:
        """Each element of the list *name* read with ``read(element, path)``."""
        value = self.raw(name)
        if value is None:
            if required:
                raise DocumentError("is missing", self.where(name))
            return ()
        if not isinstance(value, list):
            raise DocumentError(f"expected a list, got {_kind(value)}", self.where(name))
        return tuple(read(item, f"{self.where(name)}[{index}]") for index, item in enumerate(value))

    def keys(self) -> Iterator[str]:
        return (key for key, _ in self._by_fold.values())


def struct(value: Any, path: str = "") -> Struct:
    """Read *value* as a Go struct (see :class:`Struct`)."""
    return Struct(value, path)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__  # pragma: no cover
