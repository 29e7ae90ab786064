"""The image audit in Airflow's UI: which task runs launched which digest, and why they were allowed.

A FastAPI app on the api-server (``/imagegate``: the Images page, a task-instance view, the same rows as
JSON) that reads the ``imagegate`` XCom records through the api-server's own session and access control.
The plugin mounts it lazily (:class:`LazyApp`), so workers and DAG parsing never import FastAPI for it.
"""

from __future__ import annotations

from typing import Any


class LazyApp:
    """An ASGI app that builds the audit app on its first request (only the api-server ever serves one)."""

    def __init__(self, base_path: str = "") -> None:
        self.base_path = base_path
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            from airflow_plugin.audit._app import create_app

            self._app = create_app(self.base_path)
        await self._app(scope, receive, send)

    def __repr__(self) -> str:
        return "airflow_plugin.audit.LazyApp()"
