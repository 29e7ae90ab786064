"""The Airflow plugin (entry point ``airflow.plugins``): macros, the launched-image link and the image audit.

The image audit (``airflow_plugin.audit``): an "Images" page in the Browse menu, an "Image audit" tab on
every task instance, and the same rows as JSON at ``/imagegate/api/runs`` — see docs/audit.md.

Macros (``{{ macros.imagegate.NAME(...) }}``)::

    {{ macros.imagegate.pinned('wordcount') }}   REPO:TAG@sha256:… from the lock file
    {{ macros.imagegate.digest('wordcount') }}   sha256:…

The lock file is found by imagegate's one rule, as for the operators: ``lock_file=`` when given,
else ``$IMAGEGATE_LOCK_FILE``, else ``[imagegate] lock_file`` in Airflow's config, else the nearest
``imagegate.lock.json`` from the working directory or the DAGs folder.
"""

from __future__ import annotations

from pathlib import Path

from airflow.plugins_manager import AirflowPlugin

from airflow_plugin.audit import LazyApp
from airflow_plugin.links import LaunchedImageLink

AUDIT_PREFIX = "/imagegate"


def _lock_path(lock_file: str | None) -> Path:
    """The lock file: imagegate's one rule (given, ``$IMAGEGATE_LOCK_FILE``, ``[imagegate] lock_file``, the nearest
    from the working directory, then from the DAGs folder)."""
    import imagegate
    from airflow.configuration import conf

    from airflow_plugin._gate import configured_lock_file

    given = configured_lock_file(lock_file)
    starts = [Path.cwd(), Path(conf.get("core", "dags_folder", fallback=".") or ".")]
    for index, start in enumerate(starts):
        try:
            return imagegate.ImageSource(lock_name="(macro)", lock_file=given, start=start).lock_path()
        except imagegate.SourceError:
            if index == len(starts) - 1:
                raise imagegate.LockFileError(
                    f"no {imagegate.LOCK_FILE} found from {Path.cwd()} or the DAGs folder; pass lock_file= or set "
                    "IMAGEGATE_LOCK_FILE",
                    path=imagegate.LOCK_FILE,
                ) from None
    raise AssertionError("unreachable")  # pragma: no cover


def pinned(name: str, lock_file: str | None = None) -> str:
    """The pinned reference (``REPO:TAG@sha256:…``) locked under *name*."""
    import imagegate

    return str(imagegate.LockFile.load(_lock_path(lock_file)).get(name))


def digest(name: str, lock_file: str | None = None) -> str:
    """The digest (``sha256:…``) locked under *name*."""
    import imagegate

    return str(imagegate.LockFile.load(_lock_path(lock_file)).get(name).digest)


def _base_path() -> str:
    """The path of ``[api] base_url`` (Airflow served under a sub-path, e.g. ``/airflow``), else ''."""
    from urllib.parse import urlsplit

    from airflow.configuration import conf

    return urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


def _audit_views(base: str) -> list[dict[str, str]]:
    """The Images page in the Browse menu and the per-task-instance tab, both shown by Airflow in an iframe."""
    return [
        {"name": "Images", "href": f"{base}{AUDIT_PREFIX}/images", "url_route": "imagegate-images",
         "category": "browse", "destination": "nav"},
        {"name": "Image audit", "url_route": "imagegate-task", "destination": "task_instance",
         "href": f"{base}{AUDIT_PREFIX}/task?dag_id={{DAG_ID}}&run_id={{RUN_ID}}&task_id={{TASK_ID}}&map_index={{MAP_INDEX}}"},
    ]


class ImagegatePlugin(AirflowPlugin):
    """Registers the macros, the "Launched image" operator extra link and the image audit (page, tab, JSON)."""

    name = "imagegate"
    macros = [pinned, digest]
    operator_extra_links = [LaunchedImageLink()]
    fastapi_apps = [{"app": LazyApp(_base_path()), "url_prefix": AUDIT_PREFIX, "name": "imagegate audit"}]
    external_views = _audit_views(_base_path())
