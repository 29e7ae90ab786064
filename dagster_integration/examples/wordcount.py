"""Example ``Definitions``: the wordcount job (``example_dags/jobs/wordcount``) as Dagster assets.

- ``wordcount`` — a Python asset using the ``ImagegateDockerClient`` resource.
- ``wordcount_component`` — the same job from ``defs/wordcount_component/defs.yaml``.
- ``wordcount_built`` — the same job built from its directory (``imagegate.build_image``,
  skipped when the content tag exists), linted (``dockerfile_lint``), checked, launched.
- ``wordcount_image`` → ``wordcount_from_build`` — the build as its own asset
  (:func:`image_build_asset`; its value is ``REPO:TAG@sha256:…``) and a run asset that takes
  that reference as input and launches it (checked again) with the Docker client.

With the test cluster's environment (``eval "$(python scripts/k8s.py env)"``: ``IMAGEGATE_K8S_NAMESPACE``,
``IMAGEGATE_K8S_CONTEXT``, ``KUBECONFIG``) two Kubernetes assets are added:

- ``wordcount_on_k8s`` — the component with ``backend: kubernetes`` (``k8s_defs/wordcount_on_k8s/defs.yaml``);
- ``wordcount_from_build_on_k8s`` — ``wordcount_image``'s reference launched as a pod (``ImagegateK8sClient``).

``wordcount``/``wordcount_component``/``wordcount_on_k8s`` run the image named by
``IMAGEGATE_WORDCOUNT_IMAGE`` (a reference with an immutable tag or a digest); the builds push to
``$IMAGEGATE_REGISTRY/examples/wordcount`` and build FROM ``$IMAGEGATE_PYTHON_IMAGE_DIGEST`` (both
from the local stack's ``stack.env``)::

    export IMAGEGATE_WORDCOUNT_IMAGE=127.0.0.1:5000/examples/wordcount:0.1.0
    dagster asset materialize -m dagster_integration.examples.wordcount --select wordcount
    dagster asset materialize -m dagster_integration.examples.wordcount --select wordcount_image,wordcount_from_build
"""

# No `from __future__ import annotations`: Dagster reads the asset functions' annotations
# (the context type, resources) at definition time.

import importlib
import os
from pathlib import Path
from typing import Any

import dagster as dg

from dagster_integration import ImagegateDockerClient, ImagegateResource, image_build_asset, image_check_specs

IMAGE_ENV = "IMAGEGATE_WORDCOUNT_IMAGE"
K8S_NAMESPACE_ENV = "IMAGEGATE_K8S_NAMESPACE"
JOB_DIRECTORY = Path(__file__).resolve().parents[2] / "example_dags" / "jobs" / "wordcount"

def wordcount_image_from_env() -> str:
    """The job image from ``IMAGEGATE_WORDCOUNT_IMAGE``; a clear error when it is unset."""
    image = os.environ.get(IMAGE_ENV)
    if not image:
        raise dg.Failure(
            f"{IMAGE_ENV} is not set: build and push example_dags/jobs/wordcount, then "
            f"export {IMAGE_ENV}=REGISTRY/examples/wordcount:TAG (see docs/dagster.md)"
        )
    return image

@dg.asset(
    check_specs=image_check_specs("wordcount"),  # image_pinned, image_non_root (nothing is built: no dockerfile_lint)
    group_name="imagegate_examples",
    kinds={"docker"},
)
def wordcount(context: dg.AssetExecutionContext, docker_pipes: ImagegateDockerClient) -> dg.MaterializeResult:
    """Count the words of the job's own source, in a pinned, checked, hardened container."""
    return docker_pipes.run(context=context, image=wordcount_image_from_env(), command=["/app/job.py"]).get_materialize_result()

def _required_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise dg.Failure(f"{name} is not set: source the local stack's stack.env (python scripts/stack.py up)")
    return value

@dg.asset(
    check_specs=image_check_specs("wordcount_built", ["image_pinned", "image_non_root", "dockerfile_lint"]),
    group_name="imagegate_examples",
    kinds={"docker"},
)
def wordcount_built(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """The same job, built from example_dags/jobs/wordcount by imagegate, then launched."""
    gate = ImagegateResource(
        repository=f"{_required_env('IMAGEGATE_REGISTRY')}/examples/wordcount",
        build_args={"BASE": _required_env("IMAGEGATE_PYTHON_IMAGE_DIGEST")},
    )
    client = ImagegateDockerClient(gate)
    return client.run(context=context, job_directory=JOB_DIRECTORY, command=["/app/job.py"]).get_materialize_result()

# The build as its own asset: its value is the pinned reference REPO:TAG@sha256:… (repository and
# BASE come from the `imagegate` resource below), and its checks include dockerfile_lint.
wordcount_image = image_build_asset("wordcount_image", job_directory=JOB_DIRECTORY, group_name="imagegate_examples")

@dg.asset(check_specs=image_check_specs("wordcount_from_build"), group_name="imagegate_examples", kinds={"docker"})
def wordcount_from_build(
    context: dg.AssetExecutionContext, docker_pipes: ImagegateDockerClient, wordcount_image: str
) -> dg.MaterializeResult:
    """The job, launched from exactly the digest the upstream build asset produced (checked again here)."""
    return docker_pipes.run(context=context, image=wordcount_image, command=["/app/job.py"]).get_materialize_result()

def _build_settings() -> ImagegateResource:
    """Where the example builds push and what they build FROM: the local stack's ``stack.env``."""
    registry = os.environ.get("IMAGEGATE_REGISTRY")
    base = os.environ.get("IMAGEGATE_PYTHON_IMAGE_DIGEST")
    return ImagegateResource(
        repository=f"{registry}/examples/wordcount" if registry else None,
        build_args={"BASE": base} if base else {},
    )

def _component_defs(folder: str) -> dg.Definitions:
    defs_root = importlib.import_module(f"dagster_integration.examples.{folder}")
    return dg.ComponentTree.from_module(defs_module=defs_root, project_root=Path(__file__).resolve().parents[2]).build_defs()

def _kubernetes_defs() -> dg.Definitions:
    """The Kubernetes examples, where the test cluster's environment is set."""
    from dagster_integration import ImagegateK8sClient

    @dg.asset(check_specs=image_check_specs("wordcount_from_build_on_k8s"), group_name="imagegate_examples", kinds={"kubernetes"})
    def wordcount_from_build_on_k8s(
        context: dg.AssetExecutionContext, k8s_pipes: ImagegateK8sClient, wordcount_image: str
    ) -> dg.MaterializeResult:
        """The built digest as a pod under the restricted profile (checked again, for Kubernetes)."""
        return k8s_pipes.run(context=context, image=wordcount_image, namespace=os.environ[K8S_NAMESPACE_ENV]).get_materialize_result()

    context = os.environ.get("IMAGEGATE_K8S_CONTEXT")
    cluster = {"load_incluster_config": False, "kube_context": context} if context else {}
    client = ImagegateK8sClient(ImagegateResource(), poll_interval=1.0, **cluster)
    assets: list[Any] = [wordcount_from_build_on_k8s]
    if os.environ.get(IMAGE_ENV):  # one component tree per Definitions: keep the folder's assets, not its tree
        assets += _component_defs("k8s_defs").assets or ()
    return dg.Definitions(assets=assets, resources={"k8s_pipes": client})

defs = dg.Definitions.merge(
    dg.Definitions(
        assets=[wordcount, wordcount_built, wordcount_image, wordcount_from_build],
        resources={"docker_pipes": ImagegateDockerClient(ImagegateResource()), "imagegate": _build_settings()},
    ),
    _component_defs("defs") if os.environ.get(IMAGE_ENV) else dg.Definitions(),  # components validate their image when they load
    _kubernetes_defs() if os.environ.get(K8S_NAMESPACE_ENV) else dg.Definitions(),
)
