"""What imagegate knows about an image after one fetch: the values checks run on.

Everything here is plain, frozen data with no I/O, so checks are pure functions
over it and tests can build facts by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from imagegate._errors import PolicyError
from imagegate._reference import Reference

_PLATFORM = re.compile(r"^([a-z0-9_]+)/([a-z0-9_]+)(?:/([a-z0-9_]+))?$")

# Docker treats these variants as the default for their architecture, so an
# index entry without a variant matches a request for it and vice versa.
_DEFAULT_VARIANT = {"arm64": "v8", "arm": "v7"}


@dataclass(frozen=True, slots=True)
class Platform:
    """An OS/architecture[/variant] triple such as ``linux/amd64`` or ``linux/arm/v7``."""

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse ``os/arch[/variant]``; raise :class:`PolicyError` naming the bad value."""
        match = _PLATFORM.match(text.strip().lower())
        if not match:
            raise PolicyError(
                f"invalid platform {text!r}; expected OS/ARCH[/VARIANT] such as linux/amd64 or linux/arm64/v8",
                key="platform",
            )
        return cls(match.group(1), match.group(2), match.group(3))

    def matches(self, other: Platform) -> bool:
        """True when an image built for *other* runs as this platform (Docker's rule)."""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        default = _DEFAULT_VARIANT.get(self.architecture)
        mine = self.variant or default
        theirs = other.variant or default
        return mine is None or theirs is None or mine == theirs

    def __str__(self) -> str:
        base = f"{self.os}/{self.architecture}"
        return f"{base}/{self.variant}" if self.variant else base


DEFAULT_PLATFORM = Platform("linux", "amd64")


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """The pinned identity of an image and the parts of its config checks look at.

    ``digest`` is what gets launched: the index digest for a multi-platform image,
    else the manifest digest. ``manifest_digest`` and ``config_digest`` identify
    the platform image whose config was read. Environment *values* are never
    kept, only their names; secret-looking label values and arguments of
    ``entrypoint``/``cmd``/``healthcheck`` are already redacted (``<redacted>``).
    """

    reference: Reference
    digest: str
    media_type: str
    manifest_digest: str
    config_digest: str
    platform: Platform
    platforms: tuple[Platform, ...] = ()
    user: str | None = None
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    healthcheck: tuple[str, ...] | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    env_names: tuple[str, ...] = ()
    created: str | None = None

    @property
    def pinned(self) -> Reference:
        """The input reference with the launched digest attached."""
        return self.reference.with_digest(self.digest)

    @property
    def is_index(self) -> bool:
        return self.digest != self.manifest_digest

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": str(self.reference),
            "pinned": str(self.pinned),
            "digest": self.digest,
            "media_type": self.media_type,
            "manifest_digest": self.manifest_digest,
            "config_digest": self.config_digest,
            "platform": str(self.platform),
            "platforms": [str(p) for p in self.platforms],
            "user": self.user,
            "entrypoint": list(self.entrypoint) if self.entrypoint is not None else None,
            "cmd": list(self.cmd) if self.cmd is not None else None,
            "healthcheck": list(self.healthcheck) if self.healthcheck is not None else None,
            "labels": dict(self.labels),
            "env_names": list(self.env_names),
            "created": self.created,
        }
