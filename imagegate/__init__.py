"""imagegate: pin container images to digests, check them, launch exactly that digest.

The core shared by the Airflow and Dagster integrations; it imports neither.
``RegistryClient`` (and httpx with it) loads on first use, so ``import
imagegate`` stays cheap in DAG files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from imagegate._api import check, enforce, inspect, resolve, shared_client
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
    ManifestUnknown,
    PlatformNotFound,
    PolicyError,
    RegistryError,
    RegistryUnreachable,
    UnsupportedManifest,
)
from imagegate._facts import DEFAULT_PLATFORM, ImageFacts, Platform
from imagegate._policy import Backend, Mode, Policy, Waiver
from imagegate._reference import Reference, ReferenceKind, launch_reference, parse_digest, parse_reference
from imagegate._tags import TagClass, TagRules
from imagegate._report import CheckResult, Finding, Outcome, Report, Status

if TYPE_CHECKING:
    from imagegate.build._builder import BuildResult, build_image
    from imagegate.build._lint import LintFailed, LintFinding, LintReport, lint_dockerfile
    from imagegate.build._lockfile import LOCK_FILE, LockEntry, LockFile, LockFileError, find_lock_file
    from imagegate._registry import Descriptor, RegistryClient

# Loaded on first use: the registry client pulls in httpx, builds and lint their own modules.
_LAZY = {
    "RegistryClient": "imagegate._registry",
    "Descriptor": "imagegate._registry",
    "BuildResult": "imagegate.build._builder",
    "build_image": "imagegate.build._builder",
    "LintFailed": "imagegate.build._lint",
    "LintFinding": "imagegate.build._lint",
    "LintReport": "imagegate.build._lint",
    "lint_dockerfile": "imagegate.build._lint",
    "LOCK_FILE": "imagegate.build._lockfile",
    "LockEntry": "imagegate.build._lockfile",
    "LockFile": "imagegate.build._lockfile",
    "LockFileError": "imagegate.build._lockfile",
    "find_lock_file": "imagegate.build._lockfile",
}

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_PLATFORM",
    "LOCK_FILE",
    "AuthenticationError",
    "Backend",
    "BuildError",
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
    "DockerfileError",
    "Finding",
    "ImageFacts",
    "ImagegateError",
    "InsecureRegistry",
    "InvalidReference",
    "LintFailed",
    "LintFinding",
    "LintReport",
    "LockEntry",
    "LockFile",
    "LockFileError",
    "ManifestUnknown",
    "Mode",
    "Outcome",
    "Platform",
    "PlatformNotFound",
    "Policy",
    "PolicyError",
    "Reference",
    "ReferenceKind",
    "RegistryClient",
    "RegistryError",
    "RegistryUnreachable",
    "Report",
    "Status",
    "TagClass",
    "TagRules",
    "UnsupportedManifest",
    "Waiver",
    "build_image",
    "check",
    "enforce",
    "evaluate",
    "find_lock_file",
    "inspect",
    "is_root_user",
    "launch_reference",
    "lint_dockerfile",
    "numeric_ids",
    "parse_digest",
    "parse_reference",
    "resolve",
    "shared_client",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'imagegate' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
