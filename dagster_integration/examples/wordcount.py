"""Example ``Definitions``: the wordcount job (``example_dags/jobs/wordcount``) as Dagster assets.

- ``wordcount`` — a Python asset using the ``ImagegateDockerClient`` resource.
- ``wordcount_component`` — the same job from ``defs/wordcount_component/defs.yaml``.
- ``wordcount_built`` — the same job built from its directory (``imagegate.build_image``,
  skipped when the content tag exists), linted (``dockerfile_lint``), checked, launched.

The first two run the image named by ``IMAGEGATE_WORDCOUNT_IMAGE`` (a reference with an
immutable tag or a digest); the third pushes to ``$IMAGEGATE_REGISTRY/examples/wordcount``
and builds FROM ``$IMAGEGATE_PYTHON_IMAGE_DIGEST`` (both from the local stack's ``stack.env``)::

    export IMAGEGATE_WORDCOUNT_IMAGE=127.0.0.1:5000/examples/wordcount:0.1.0
    dagster asset materialize -m dagster_integration.examples.wordcount --select wordcount
"""

# No `from __future__ import annotations`: Dagster reads the asset functions' annotations
# (the context type, resources) at definition time.

import importlib
import os
from pathlib import Path

import dagster as dg

from dagster_integration import ImagegateDockerClient, ImagegateResource, image_check_specs

IMAGE_ENV = "IMAGEGATE_WORDCOUNT_IMAGE"
JOB_DIRECTORY = Path(__file__).resolve().parents[2] / "example_dags" / "jobs" / "wordcount"

def wordcount_image() -> str:
    """The job image from ``IMAGEGATE_WORDCOUNT_IMAGE``; a clear error when it is unset."""
    image = os.environ.get(IMAGE_ENV)
    if not image:
        raise dg.Failure(
            f"{IMAGE_ENV} is not set: build and push example_dags/jobs/wordcount, then "
            f"export {IMAGE_ENV}=REGISTRY/examples/wordcount:TAG (see docs/dagster.md)"
        )
    return image

@dg.asset(
    check_specs=image_check_specs("wordcount", ["image_pinned", "image_non_root", "dockerfile_lint"]),
    group_name="imagegate_examples",
    kinds={"docker"},
)
def wordcount(context: dg.AssetExecutionContext, docker_pipes: ImagegateDockerClient) -> dg.MaterializeResult:
    """Count the words of the job's own source, in a pinned, checked, hardened container."""
    return docker_pipes.run(context=context, image=wordcount_image(), command=["/app/job.py"]).get_materialize_result()

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

def _component_defs() -> dg.Definitions:
    if not os.environ.get(IMAGE_ENV):  # the component validates its image when it loads
        return dg.Definitions()
    defs_root = importlib.import_module("dagster_integration.examples.defs")
    return dg.ComponentTree.from_module(defs_module=defs_root, project_root=Path(__file__).resolve().parents[2]).build_defs()

defs = dg.Definitions.merge(
    dg.Definitions(
        assets=[wordcount, wordcount_built],
        resources={"docker_pipes": ImagegateDockerClient(ImagegateResource())},
    ),
    _component_defs(),
)
