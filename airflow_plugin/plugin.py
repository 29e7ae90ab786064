"""The Airflow plugin (entry point ``airflow.plugins``): macros and the launched-image link.

Macros (``{{ macros.imagegate.NAME(...) }}``)::

    {{ macros.imagegate.pinned('wordcount') }}   REPO:TAG@sha256:… from the lock file
    {{ macros.imagegate.digest('wordcount') }}   sha256:…

The lock file is ``lock_file=`` when given, else ``$IMAGEGATE_LOCK_FILE``, else
``[imagegate] lock_file`` in Airflow's config, else the nearest
``imagegate.lock.json`` from the working directory or the DAGs folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow.plugins_manager import AirflowPlugin

from airflow_plugin.links import LaunchedImageLink


def _lock_path(lock_file: str | None) -> Path:
    import imagegate

    if lock_file or os.environ.get("IMAGEGATE_LOCK_FILE"):
        return Path(lock_file or os.environ["IMAGEGATE_LOCK_FILE"])
    from airflow.configuration import conf

    configured = conf.get("imagegate", "lock_file", fallback=None)
    if configured:
        return Path(configured)
    for start in (Path.cwd(), Path(conf.get("core", "dags_folder", fallback=".") or ".")):
        found = imagegate.find_lock_file(start)
        if found:
            return found
    raise imagegate.LockFileError(
        f"no {imagegate.LOCK_FILE} found from {Path.cwd()} or the DAGs folder; pass lock_file= or set IMAGEGATE_LOCK_FILE",
        path=imagegate.LOCK_FILE,
    )


def pinned(name: str, lock_file: str | None = None) -> str:
    """The pinned reference (``REPO:TAG@sha256:…``) locked under *name*."""
    import imagegate

    return str(imagegate.LockFile.load(_lock_path(lock_file)).get(name))


def digest(name: str, lock_file: str | None = None) -> str:
    """The digest (``sha256:…``) locked under *name*."""
    import imagegate

    return str(imagegate.LockFile.load(_lock_path(lock_file)).get(name).digest)


class ImagegatePlugin(AirflowPlugin):
    """Registers the macros and the "Launched image" operator extra link."""

    name = "imagegate"
    macros = [pinned, digest]
    operator_extra_links = [LaunchedImageLink()]
