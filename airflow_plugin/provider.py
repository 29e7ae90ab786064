"""Provider metadata (entry point ``apache_airflow_provider``): lets ``airflow providers list`` show imagegate."""

from __future__ import annotations

from typing import Any

_MODULES = [
    "airflow_plugin.build",
    "airflow_plugin.docker",
    "airflow_plugin.kubernetes",
    "airflow_plugin.spark",
    "airflow_plugin.task",
]


def get_provider_info() -> dict[str, Any]:
    """The provider description Airflow's ProvidersManager reads (schema: ``provider_info.schema.json``).

    Every Airflow process that discovers providers calls this (DAG parsing included), so it reads the
    version from the installed metadata instead of importing the imagegate core (~20 ms).
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        __version__ = version("imagegate")
    except PackageNotFoundError:  # running from a source tree that is not installed
        __version__ = "0.0.0"

    return {
        "package-name": "imagegate",
        "name": "imagegate",
        "description": "Pin container images to digests, check them, and launch exactly that digest "
        "on Docker or Kubernetes.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "imagegate",
                "external-doc-url": "https://github.com/imagegate/imagegate/blob/main/docs/airflow.md",
                "tags": ["software"],
            }
        ],
        "operators": [{"integration-name": "imagegate", "python-modules": _MODULES}],
        "extra-links": ["airflow_plugin.links.LaunchedImageLink"],
        "config": {
            "imagegate": {
                "description": "imagegate's deployment-wide settings.",
                "options": {
                    "cluster_policy": {
                        "description": "The cluster policy for plain DockerOperator and KubernetesPodOperator "
                        "tasks: off (installing the package changes nothing), warn (check and log, "
                        "launch the pinned digest) or enforce (refuse failed checks).",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "enforce",
                        "default": "off",
                    },
                    "policy": {
                        "description": "The imagegate policy file for every task that names none with policy= "
                        "(imagegate.toml or pyproject.toml), and for the cluster policy; default: the nearest "
                        "one from each DAG file's folder.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "/opt/airflow/imagegate.toml",
                        "default": None,
                    },
                    "lock_file": {
                        "description": "The lock file lock_name= and the macros read when a task names none and "
                        "IMAGEGATE_LOCK_FILE is unset; default: the nearest imagegate.lock.json.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "/opt/airflow/dags/imagegate.lock.json",
                        "default": None,
                    },
                    "backend": {
                        "description": "Default backend of ContainerTask when neither backend= nor "
                        "IMAGEGATE_BACKEND is given: docker, kubernetes, or variable:NAME to read it from the "
                        "Airflow Variable NAME when a task runs or a DAG is parsed (a metadata-DB query per parse).",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "kubernetes",
                        "default": "docker",
                    },
                },
            }
        },
    }
