"""The "Launched image" extra link: the registry manifest of the digest a task launched."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink

from airflow_plugin import _gate

if TYPE_CHECKING:
    from airflow.sdk.types import TaskInstanceKey


class LaunchedImageLink(BaseOperatorLink):
    """Links a task to the manifest of the image it launched (``…/v2/REPO/manifests/sha256:…``).

    Computed in the worker after the task ran (Airflow 3 stores the link as an XCom), from
    the report the operator kept; empty when nothing was launched.
    """

    name = "Launched image"

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        report = getattr(operator, "imagegate_report", None)
        if report is None or not report.pinned:
            return ""
        return _gate.manifest_url(report.pinned)
