"""imagegate: pin container images to digests, check them, launch exactly that digest.

The core shared by the Airflow and Dagster integrations; it imports neither. Every public
name loads on first use (the checks, the gate, the hardening rules, the registry client and
httpx with it, the build wing), so ``import imagegate`` stays cheap in DAG files and in the
command line's start-up.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # not typing's: `import typing` alone is ~7 ms, and nothing here needs it at run time
if TYPE_CHECKING:
    from typing import Any

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

# Every public name loads on first use, so ``import imagegate`` costs next to nothing (a DAG file, the
# CLI's start-up): the check path pulls in the policy and checks, the registry client httpx, and the
# build names come from imagegate.build, which knows their modules.
_LAZY = {
    "check": "imagegate._api",
    "check_offline": "imagegate._api",
    "enforce": "imagegate._api",
    "inspect": "imagegate._api",
    "resolve": "imagegate._api",
    "shared_client": "imagegate._api",
    "Credentials": "imagegate._auth",
    "DockerConfig": "imagegate._auth",
    "CheckInput": "imagegate._checks",
    "evaluate": "imagegate._checks",
    "is_root_user": "imagegate._checks",
    "numeric_ids": "imagegate._checks",
    "AuthenticationError": "imagegate._errors",
    "BuildError": "imagegate._errors",
    "CheckFailed": "imagegate._errors",
    "ContextError": "imagegate._errors",
    "CredentialError": "imagegate._errors",
    "DigestMismatch": "imagegate._errors",
    "DockerfileError": "imagegate._errors",
    "ImagegateError": "imagegate._errors",
    "InsecureRegistry": "imagegate._errors",
    "InvalidReference": "imagegate._errors",
    "MalformedResponse": "imagegate._errors",
    "ManifestUnknown": "imagegate._errors",
    "PlatformNotFound": "imagegate._errors",
    "PolicyError": "imagegate._errors",
    "RegistryError": "imagegate._errors",
    "RegistryUnreachable": "imagegate._errors",
    "UnexpectedError": "imagegate._errors",
    "UnsupportedManifest": "imagegate._errors",
    "DEFAULT_PLATFORM": "imagegate._facts",
    "ImageFacts": "imagegate._facts",
    "Platform": "imagegate._facts",
    "Backend": "imagegate._policy",
    "Mode": "imagegate._policy",
    "Policy": "imagegate._policy",
    "Waiver": "imagegate._policy",
    "Reference": "imagegate._reference",
    "ReferenceKind": "imagegate._reference",
    "launch_reference": "imagegate._reference",
    "parse_digest": "imagegate._reference",
    "parse_reference": "imagegate._reference",
    "CheckResult": "imagegate._report",
    "Finding": "imagegate._report",
    "Outcome": "imagegate._report",
    "Report": "imagegate._report",
    "Status": "imagegate._report",
    "TagClass": "imagegate._tags",
    "TagRules": "imagegate._tags",
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


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'imagegate' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
