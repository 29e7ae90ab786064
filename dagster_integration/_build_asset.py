"""A build as its own asset: :func:`image_build_asset`.

Dagster's form of Airflow's build task → run task::

    wordcount_image = image_build_asset("wordcount_image", job_directory="jobs/wordcount")

    @dg.asset(check_specs=image_check_specs("wordcount"))
    def wordcount(context, docker_pipes: ImagegateDockerClient, wordcount_image: str):
        return docker_pipes.run(context=context, image=wordcount_image).get_materialize_result()

The build asset goes through the same door as ``run(job_directory=...)``:
:meth:`ImagegateResource.preflight` → ``imagegate.plan_launch`` builds the directory (content
tag, not rebuilt when the registry has it), lints it once and checks the result. Its value is the
pinned reference ``REPO:TAG@sha256:…``; nothing is launched. The run asset receives that string
through the IO manager and names it as ``image=``: the gate resolves and checks it again (an
upstream value is input like any other, not trusted), then launches exactly that digest.
"""

# No `from __future__ import annotations`: Dagster reads the asset function's annotations
# (the context type) at definition time.

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import dagster as dg

from dagster_integration._asset_checks import DOCKERFILE_LINT, IMAGE_NON_ROOT, IMAGE_PINNED, image_check_specs
from dagster_integration._errors import ImagegateDagsterError
from dagster_integration._resource import ImagegateResource, report_metadata

BACKENDS = ("docker", "kubernetes")


def image_build_asset(
    key: dg.AssetKey | str | Sequence[str],
    *,
    job_directory: str | os.PathLike[str],
    repository: str | None = None,
    dockerfile: str | None = None,
    build_args: Mapping[str, str] | None = None,
    backend: str = "docker",
    checks: Iterable[str] = (IMAGE_PINNED, IMAGE_NON_ROOT, DOCKERFILE_LINT),
    blocking: bool = False,
    resource_key: str = "imagegate",
    group_name: str | None = None,
    description: str | None = None,
    deps: Iterable[dg.AssetKey | str] = (),
) -> dg.AssetsDefinition:
    """An asset that builds *job_directory* and whose value is its pinned reference ``REPO:TAG@sha256:…``.

    Args:
        key: the asset key (a downstream asset takes the reference as the input of that name).
        job_directory: the build context (a directory with a Dockerfile); checked when definitions load.
        repository: where to push; default: the resource's ``repository``.
        dockerfile, build_args: for the build (``build_args`` on top of the resource's).
        backend: the backend the built image is checked for (``kubernetes``: a numeric non-root user).
        checks: the asset checks to declare (default: ``image_pinned``, ``image_non_root``, ``dockerfile_lint``).
        blocking: make them blocking checks (see :func:`image_check_specs`).
        resource_key: the :class:`ImagegateResource` with the policy and build settings.

    A lint refusal raises ``BuildRefused`` (nothing built), a refused image ``ImageRefused``
    (built and pushed, but no downstream asset receives it); the check results are recorded either way.
    """
    asset_key = dg.AssetKey.from_coercible(key)
    if backend not in BACKENDS:
        raise ImagegateDagsterError(f"{backend!r} is not one of {', '.join(BACKENDS)}", setting="backend")
    directory = Path(job_directory).expanduser().resolve()
    if not directory.is_dir():
        raise ImagegateDagsterError(f"{str(job_directory)!r}: {directory} is not a directory", setting="job_directory")
    specs = image_check_specs(asset_key, list(checks), blocking=blocking)
    args = dict(build_args or {})

    @dg.asset(
        key=asset_key,
        description=description or f"the image built from {directory.name}/ by imagegate: its pinned reference",
        group_name=group_name,
        deps=list(deps),
        check_specs=specs,
        required_resource_keys={resource_key},
        kinds={"docker"},
    )
    def _build(context: dg.AssetExecutionContext):  # noqa: ANN202 (a return annotation would be read as the outputs)
        gate = getattr(context.resources, resource_key)
        if not isinstance(gate, ImagegateResource):
            raise ImagegateDagsterError(
                f"the resource {resource_key!r} is a {type(gate).__name__}, not an ImagegateResource",
                setting="resource_key",
            )
        built = gate.preflight(
            context, job_directory=directory, dockerfile=dockerfile, build_args=args, repository=repository,
            backend=backend,
        )
        pinned = built.report.pinned or ""
        context.log.info(f"imagegate: {'built' if (built.build or {}).get('built') else 'up to date:'} {pinned}")
        return dg.MaterializeResult(
            value=pinned,
            metadata=report_metadata(built.report, build=built.build, lint=built.lint),
            check_results=built.check_results(),
        )

    return _build
