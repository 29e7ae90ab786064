"""The Airflow plugin (entry point ``airflow.plugins``): macros and the launched-image link.

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

from airflow_plugin.links import LaunchedImageLink


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


class ImagegatePlugin(AirflowPlugin):
    """Registers the macros and the "Launched image" operator extra link."""

    name = "imagegate"
    macros = [pinned, digest]
    operator_extra_links = [LaunchedImageLink()]
