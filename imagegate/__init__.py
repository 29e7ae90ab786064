"""imagegate: pin container images to digests, check them, launch exactly that digest.

The core shared by the Airflow and Dagster integrations; it imports neither. The gate
(``plan_launch``, ``plan_pod``), the hardening rules, the registry client (and httpx with
it) and the build wing load on first use, so ``import imagegate`` stays cheap in DAG files.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from imagegate._api import check, check_offline, enforce, inspect, resolve, shared_client
from imagegate._auth import Credentials, DockerConfig
from imagegate._checks import CheckInput, evaluate, is_root_user, numeric_ids
from imagegate._errors import (
    AuthenticationError,
    BuildError,
    CheckFailed,
    ContextError,
    CredentialError,
    DigestMismatch,
    DockerfileError,
    ImagegateError,
    InsecureRegistry,
    InvalidReference,
    MalformedResponse,
    ManifestUnknown,
    PlatformNotFound,
    PolicyError,
    RegistryError,
    RegistryUnreachable,
    UnexpectedError,
    UnsupportedManifest,
)
from imagegate._facts import DEFAULT_PLATFORM, ImageFacts, Platform
from imagegate._policy import Backend, Mode, Policy, Waiver
from imagegate._reference import Reference, ReferenceKind, launch_reference, parse_digest, parse_reference
from imagegate._report import CheckResult, Finding, Outcome, Report, Status
from imagegate._tags import TagClass, TagRules

if TYPE_CHECKING:
    from imagegate._gate import (
        BuildOptions,
        ImageSource,
        LaunchMismatch,
        LaunchPlan,
        PodPlan,
        SourceError,
        container_labels,
        plan_launch,
        plan_pod,
        pod_metadata,
        pod_user,
        verify_container,
        verify_pod_images,
    )
    from imagegate._hardening import HardeningError, docker_violations, harden_docker, harden_pod, restricted_violations
    from imagegate._registry import Descriptor, RegistryClient
    from imagegate._run import RunError, RunResult, run_container
    from imagegate._runspec import Bind, DockerLaunch, RunOptionError, RunSpec, docker_launch
    from imagegate.build._builder import BuildResult, build_image
    from imagegate.build._lint import LintFailed, LintFinding, LintReport, lint_dockerfile
    from imagegate.build._lockfile import LOCK_FILE, LockEntry, LockFile, LockFileError, find_lock_file

# Loaded on first use: the registry client pulls in httpx; build names come from imagegate.build,
# which knows their modules.
_LAZY = {
    "BuildOptions": "imagegate._gate",
    "ImageSource": "imagegate._gate",
    "LaunchMismatch": "imagegate._gate",
    "LaunchPlan": "imagegate._gate",
    "PodPlan": "imagegate._gate",
    "SourceError": "imagegate._gate",
    "container_labels": "imagegate._gate",
    "plan_launch": "imagegate._gate",
    "plan_pod": "imagegate._gate",
    "pod_metadata": "imagegate._gate",
    "pod_user": "imagegate._gate",
    "verify_container": "imagegate._gate",
    "verify_pod_images": "imagegate._gate",
    "HardeningError": "imagegate._hardening",
    "docker_violations": "imagegate._hardening",
    "harden_docker": "imagegate._hardening",
    "harden_pod": "imagegate._hardening",
    "restricted_violations": "imagegate._hardening",
    "RegistryClient": "imagegate._registry",
    "Descriptor": "imagegate._registry",
    "RunError": "imagegate._run",
    "RunResult": "imagegate._run",
    "run_container": "imagegate._run",
    "Bind": "imagegate._runspec",
    "DockerLaunch": "imagegate._runspec",
    "RunOptionError": "imagegate._runspec",
    "RunSpec": "imagegate._runspec",
    "docker_launch": "imagegate._runspec",
    "BuildResult": "imagegate.build",
    "build_image": "imagegate.build",
    "LintFailed": "imagegate.build",
    "LintFinding": "imagegate.build",
    "LintReport": "imagegate.build",
    "lint_dockerfile": "imagegate.build",
    "LOCK_FILE": "imagegate.build",
    "LockEntry": "imagegate.build",
    "LockFile": "imagegate.build",
    "LockFileError": "imagegate.build",
    "find_lock_file": "imagegate.build",
}

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_PLATFORM",
    "LOCK_FILE",
    "AuthenticationError",
    "Backend",
    "Bind",
    "BuildError",
    "BuildOptions",
    "BuildResult",
    "CheckFailed",
    "CheckInput",
    "CheckResult",
    "ContextError",
    "CredentialError",
    "Credentials",
    "Descriptor",
    "DigestMismatch",
    "DockerConfig",
    "DockerLaunch",
    "DockerfileError",
    "Finding",
    "HardeningError",
    "ImageFacts",
    "ImageSource",
    "ImagegateError",
    "InsecureRegistry",
    "InvalidReference",
    "LaunchMismatch",
    "LaunchPlan",
    "LintFailed",
    "LintFinding",
    "LintReport",
    "LockEntry",
    "LockFile",
    "LockFileError",
    "MalformedResponse",
    "ManifestUnknown",
    "Mode",
    "Outcome",
    "Platform",
    "PlatformNotFound",
    "PodPlan",
    "Policy",
    "PolicyError",
    "Reference",
    "ReferenceKind",
    "RegistryClient",
    "RegistryError",
    "RegistryUnreachable",
    "Report",
    "RunError",
    "RunOptionError",
    "RunResult",
    "RunSpec",
    "SourceError",
    "Status",
    "TagClass",
    "TagRules",
    "UnexpectedError",
    "UnsupportedManifest",
    "Waiver",
    "build_image",
    "check",
    "check_offline",
    "container_labels",
    "docker_launch",
    "docker_violations",
    "enforce",
    "evaluate",
    "find_lock_file",
    "harden_docker",
    "harden_pod",
    "inspect",
    "is_root_user",
    "launch_reference",
    "lint_dockerfile",
    "numeric_ids",
    "parse_digest",
    "parse_reference",
    "plan_launch",
    "plan_pod",
    "pod_metadata",
    "pod_user",
    "resolve",
    "restricted_violations",
    "run_container",
    "shared_client",
    "verify_container",
    "verify_pod_images",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'imagegate' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
