"""The "Launched image" extra link: the registry manifest of the digest a task launched."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink

from airflow_plugin import _gate

if TYPE_CHECKING:
    from airflow.sdk.types import TaskInstanceKey


class LaunchedImageLink(BaseOperatorLink):
    """Links a task to the manifest of the image it launched (``…/v2/REPO/manifests/sha256:…``).

    Computed in the worker after the task ran (Airflow 3 stores the link as an XCom). The pin
    comes from the report the operator kept, else from the task's ``imagegate`` XCom record:
    a deferred task resumes in a new operator instance that never ran the gate itself, and
    its record (pushed before the pod was created) is what still says what was launched.
    Empty when nothing was launched (a refusal records ``launched: null``).
    """

    name = "Launched image"

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        report = getattr(operator, "imagegate_report", None)
        if report is not None:
            return _gate.manifest_url(report.pinned) if report.pinned else ""
        from airflow.sdk.execution_time.xcom import XCom

        record = XCom.get_value(ti_key=ti_key, key=_gate.XCOM_KEY)
        if not isinstance(record, dict) or not record.get("launched") or not isinstance(record.get("pinned"), str):
            return ""
        return _gate.manifest_url(record["pinned"])
