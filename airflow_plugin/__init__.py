"""imagegate for Airflow: pinned, checked container tasks on Docker or Kubernetes.

Names load lazily, so ``from airflow_plugin import ContainerTask`` with the
Docker backend never imports the Kubernetes provider::

    ContainerTask            one task, two backends (factory; backend from a setting)
    ImagegateDockerOperator  provider DockerOperator, gated and hardened
    ImagegateKubernetesPodOperator  provider KubernetesPodOperator, gated, restricted PSS
    ImagegateBuildOperator   build (or find) a job directory's image, XCom the pinned reference
    PinnedSparkKubernetesOperator  provider SparkKubernetesOperator: every driver/executor image gated and pinned
    PinnedSparkSubmitOperator      provider SparkSubmitOperator (k8s master): image confs and pod templates pinned
    ImageRefused, ImageSourceError, LaunchMismatch, BackendOptionError, HardeningViolation, PodSecurityViolation,
    PresetPodRefused, TaskKilled
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BackendOptionError": "airflow_plugin.task",
    "HardeningViolation": "airflow_plugin._gate",
    "ContainerTask": "airflow_plugin.task",
    "ImageRefused": "airflow_plugin._gate",
    "ImageSourceError": "airflow_plugin._gate",
    "ImagegateBuildOperator": "airflow_plugin.build",
    "ImagegateDockerOperator": "airflow_plugin.docker",
    "ImagegateKubernetesPodOperator": "airflow_plugin.kubernetes",
    "LaunchMismatch": "airflow_plugin._gate",
    "PinnedSparkKubernetesOperator": "airflow_plugin.spark",
    "PinnedSparkSubmitOperator": "airflow_plugin.spark",
    "PodSecurityViolation": "airflow_plugin._gate",
    "PresetPodRefused": "airflow_plugin.kubernetes",
    "TaskKilled": "airflow_plugin._gate",
    "backend_setting": "airflow_plugin.task",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'airflow_plugin' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
