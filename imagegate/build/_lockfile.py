"""The lock file: image name → pinned reference, written by CI, read by DAGs.

A readable JSON file (default name ``imagegate.lock.json``)::

    {
      "version": 1,
      "images": {
        "wordcount": {
          "reference": "registry.example.com/jobs/wordcount:c-3f2a…@sha256:…",
          "digest": "sha256:…",
          "context": "example_dags/jobs/wordcount",
          "updated": "2026-11-27T17:50:00+00:00"
        }
      }
    }

Writing replaces one entry and keeps every other entry and key as it was
(nothing a user wrote is lost); the write is atomic (temp file + rename).
Every reference must carry a digest: a lock file only ever holds pins.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from imagegate._errors import ImagegateError, InvalidReference
from imagegate._reference import Reference, parse_reference

LOCK_FILE = "imagegate.lock.json"
LOCK_VERSION = 1


class LockFileError(ImagegateError, ValueError):
    """A lock file that cannot be read, or a name it does not hold."""

    def __init__(self, message: str, *, path: str, name: str | None = None) -> None:
        self.path = path
        self.name = name
        super().__init__(f"{path}: {message}")


@dataclass(frozen=True, slots=True)
class LockEntry:
    """One pinned image of the lock file."""

    name: str
    reference: Reference
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {**self.extra, "reference": self.reference.familiar, "digest": self.reference.digest}


class LockFile:
    """An in-memory lock file; :meth:`load` it, :meth:`get` pins, :meth:`set` and :meth:`save`."""

    def __init__(self, path: str | os.PathLike[str], data: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path)
        self._data: dict[str, Any] = dict(data or {"version": LOCK_VERSION, "images": {}})
        self._data.setdefault("images", {})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LockFile:
        """Read *path*; raise :class:`LockFileError` naming the file and the problem."""
        file = Path(path)
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LockFileError("lock file not found; write it with `imagegate build --lock FILE --name NAME`", path=str(file)) from None
        except (OSError, ValueError) as exc:
            raise LockFileError(f"cannot read the lock file: {exc}", path=str(file)) from None
        if not isinstance(data, dict) or not isinstance(data.get("images", {}), dict):
            raise LockFileError('expected a JSON object with an "images" object', path=str(file))
        if data.get("version", LOCK_VERSION) != LOCK_VERSION:
            raise LockFileError(f"lock file version {data.get('version')!r} is not {LOCK_VERSION}; upgrade imagegate", path=str(file))
        lock = cls(file, data)
        for name in lock.names():
            lock.get(name)  # validate every entry now, not at launch time
        return lock

    @classmethod
    def load_or_new(cls, path: str | os.PathLike[str]) -> LockFile:
        return cls.load(path) if Path(path).exists() else cls(path)

    def names(self) -> list[str]:
        return sorted(self._data["images"])

    def get(self, name: str) -> Reference:
        """The pinned reference locked under *name*."""
        return self.entry(name).reference

    def entry(self, name: str) -> LockEntry:
        images = self._data["images"]
        if name not in images:
            known = ", ".join(self.names()) or "none"
            raise LockFileError(f"no image named {name!r} (locked names: {known})", path=str(self.path), name=name)
        raw = images[name]
        if not isinstance(raw, dict) or not isinstance(raw.get("reference"), str):
            raise LockFileError(f'images.{name} needs a "reference" string', path=str(self.path), name=name)
        try:
            reference = parse_reference(raw["reference"])
        except InvalidReference as exc:
            raise LockFileError(f"images.{name}: {exc}", path=str(self.path), name=name) from None
        if reference.digest is None:
            raise LockFileError(
                f"images.{name} reference {raw['reference']!r} has no digest; a lock file holds only pinned references",
                path=str(self.path),
                name=name,
            )
        extra = {k: v for k, v in raw.items() if k not in ("reference", "digest")}
        return LockEntry(name=name, reference=reference, extra=extra)

    def set(self, name: str, reference: Reference, **extra: Any) -> LockEntry:
        """Lock *name* to *reference* (which must carry a digest); other entries are untouched."""
        if not name or not isinstance(name, str):
            raise LockFileError("an image name must be a non-empty string", path=str(self.path))
        if reference.digest is None:
            raise LockFileError(f"{reference} has no digest; lock only pinned references", path=str(self.path), name=name)
        previous = self._data["images"].get(name)
        kept = {k: v for k, v in previous.items() if k not in ("reference", "digest")} if isinstance(previous, dict) else {}
        kept.update(extra)
        kept["updated"] = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
        entry = LockEntry(name=name, reference=reference, extra=kept)
        self._data["images"][name] = entry.to_json()
        return entry

    def save(self) -> None:
        """Write atomically: a temp file in the same directory, then rename over the old file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self._data, indent=2, sort_keys=False) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            if self.path.exists():
                os.chmod(tmp, self.path.stat().st_mode & 0o777)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def find_lock_file(start: str | os.PathLike[str] = ".") -> Path | None:
    """The nearest ``imagegate.lock.json`` in *start* or a parent directory."""
    here = Path(start).resolve()
    for directory in (here, *here.parents):
        candidate = directory / LOCK_FILE
        if candidate.is_file():
            return candidate
    return None
