"""Errors raised by the Dagster integration.

::

    imagegate.ImagegateError
     └── ImagegateDagsterError        bad integration settings (names the setting and the fix)

    dagster.Failure
     ├── ImageRefused(.report)        a check failed under enforce; nothing was launched
     ├── BuildRefused(.lint)          Dockerfile lint errors refused the build; nothing built or launched
     └── LaunchMismatch               the runtime created something other than the checked image (removed)
"""

from __future__ import annotations

from typing import Any, Mapping

import dagster as dg
import imagegate


class ImagegateDagsterError(imagegate.ImagegateError, ValueError):
    """A setting of a resource, client or component is wrong; ``setting`` names it."""

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(f"{setting}: {message}" if setting else message)
        self.setting = setting


class ImageRefused(dg.Failure):
    """A check failed under ``enforce``: the step fails and no container or pod was created.

    ``report`` is the :class:`imagegate.Report`; the Failure's metadata holds the
    pinned reference, the verdict and every check, so the Dagster UI shows why.
    """

    def __init__(self, report: imagegate.Report, metadata: Mapping[str, Any]) -> None:
        failed = ", ".join(r.check for r in report.failures) or "(none)"
        super().__init__(
            description=f"imagegate refused {report.reference} (failed: {failed}); nothing was launched\n"
            + report.render_text(),
            metadata=metadata,
            allow_retries=False,  # retrying cannot change the verdict of the same image
        )
        self.report = report


class BuildRefused(dg.Failure):
    """Lint errors refused a job-directory build (``checks.lint = "enforce"``): nothing was built or launched.

    ``lint`` is the :class:`imagegate.LintReport`.
    """

    def __init__(self, lint: Any, metadata: Mapping[str, Any]) -> None:
        errors = "; ".join(f"{f.rule} line {f.line or '-'}: {f.message}" for f in lint.errors) or "(none)"
        super().__init__(
            description=f"imagegate refused to build {lint.dockerfile}: {errors}; nothing was built or launched",
            metadata=metadata,
            allow_retries=False,
        )
        self.lint = lint


class LaunchMismatch(dg.Failure):
    """The engine or kubelet created a container from an image other than the checked one; it was removed."""

    def __init__(self, message: str) -> None:
        super().__init__(description=message, allow_retries=False)
