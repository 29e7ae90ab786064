"""The build wing: job directory -> content-addressed, pushed, pinned image; Dockerfile lint; lock files.

Nothing on the check path imports this package: ``imagegate.check()`` never loads the
Dockerfile parser, the context walker or the docker SDK. Modules, one job each::

    _dockerfile   parse a Dockerfile (BuildKit's own parser) into stages, with ARG substitution
    _context      .dockerignore (moby's rules), the context walk, content hashing, the stat cache
    _lint         the Dockerfile checklist IG001-IG009 merged with hadolint; LintFailed
    _builder      build_image: content tag -> HEAD -> (lint, build, push) -> pinned reference
    _lockfile     imagegate.lock.json: name -> pinned reference
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
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

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'imagegate.build' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
