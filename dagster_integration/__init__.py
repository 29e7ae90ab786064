"""Dagster integration: pinned, checked container assets.

- :class:`ImagegateResource` — registry, policy, lock-file and build settings; ``preflight()``.
- :class:`ImagegateDockerClient` — ``PipesDockerClient`` that gates, then launches by digest, hardened.
- :class:`ImagegateK8sClient` — ``PipesK8sClient`` whose every container is gated, under the
  restricted profile (loaded on first use: ``import dagster_integration`` does not import dagster-k8s).

No rule lives here: the gate, the hardening and the launch verification are imagegate's core.
- :func:`image_check_specs` — the ``image_pinned`` / ``image_non_root`` / ``image_signed`` /
  ``image_vulnerabilities`` / ``dockerfile_lint`` asset checks to declare on an asset (``dockerfile_lint`` only
  where a job directory is built; ``image_signed`` / ``image_vulnerabilities`` only where a policy rule covers it).
- :func:`image_build_asset` — a build as its own asset: its value is the pinned reference
  ``REPO:TAG@sha256:…`` a downstream asset launches (checked again) with either client.
- :class:`ContainerAssetComponent` — the ``dg`` component (``dagster_integration.components``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dagster_integration._asset_checks import (
    CHECK_NAMES,
    DOCKERFILE_LINT,
    IMAGE_NON_ROOT,
    IMAGE_PINNED,
    IMAGE_SIGNED,
    IMAGE_VULNERABILITIES,
    image_check_specs,
)
from dagster_integration._build_asset import image_build_asset
from dagster_integration._docker import ImagegateDockerClient, wait_for_removals
from dagster_integration._errors import BuildRefused, ImagegateDagsterError, ImageRefused, LaunchMismatch
from dagster_integration._invocation import ImagegateInvocation
from dagster_integration._resource import ImagegateResource, Preflight, report_metadata

if TYPE_CHECKING:
    from dagster_integration._k8s import ImagegateK8sClient
    from dagster_integration.components import ContainerAssetComponent

__all__ = [
    "CHECK_NAMES",
    "DOCKERFILE_LINT",
    "IMAGE_NON_ROOT",
    "IMAGE_PINNED",
    "IMAGE_SIGNED",
    "IMAGE_VULNERABILITIES",
    "BuildRefused",
    "ContainerAssetComponent",
    "ImageRefused",
    "ImagegateDagsterError",
    "ImagegateDockerClient",
    "ImagegateInvocation",
    "ImagegateK8sClient",
    "ImagegateResource",
    "LaunchMismatch",
    "Preflight",
    "image_build_asset",
    "image_check_specs",
    "report_metadata",
    "wait_for_removals",
]


def __getattr__(name: str) -> Any:
    if name == "ImagegateK8sClient":
        from dagster_integration._k8s import ImagegateK8sClient

        return ImagegateK8sClient
    if name == "ContainerAssetComponent":
        from dagster_integration.components import ContainerAssetComponent

        return ContainerAssetComponent
    raise AttributeError(f"module 'dagster_integration' has no attribute {name!r}")
