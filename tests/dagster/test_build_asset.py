"""A build as its own asset (``image_build_asset``) feeding a run asset, against the real stack.

The build asset builds the job directory through the same door as ``run(job_directory=...)``
and its value is ``REPO:TAG@sha256:…``; the run asset takes that value as input and launches it
through ``ImagegateDockerClient``, which resolves and checks it again. Needs the local stack
(``python scripts/stack.py up``); under ``CI=true`` a missing stack fails instead of skipping.
"""

import pickle
import time
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest

from dagster_integration import (
    ImagegateDagsterError,
    ImagegateDockerClient,
    ImagegateResource,
    image_build_asset,
    image_check_specs,
)
from dagster_integration._docker import PINNED_LABEL
from tests.dagster.conftest import WORDCOUNT, unique

pytestmark = pytest.mark.integration


def _run_asset(name: str, upstream: str) -> dg.AssetsDefinition:
    """The run side, as a user writes it: the upstream build asset's value is the ``image=``."""

    @dg.asset(name=name, ins={"image": dg.AssetIn(upstream)}, check_specs=image_check_specs(name))
    def _run(context: dg.AssetExecutionContext, docker_pipes: ImagegateDockerClient, image: str):
        return docker_pipes.run(context=context, image=image, command=["/app/job.py"]).get_materialize_result()

    return _run


def _evaluations(instance: dg.DagsterInstance, run_id: str) -> dict[tuple[str, str], Any]:
    """(asset, check) -> the stored AssetCheckEvaluation of this run."""
    found = {}
    for record in instance.get_records_for_run(run_id).records:
        event = record.event_log_entry.dagster_event
        if event is not None and event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            found[(data.asset_key.to_user_string(), data.check_name)] = data
    return found


def _registry_digest(registry: str, repository: str, tag: str) -> str:
    """The registry's own answer (not imagegate's) for REPO:TAG."""
    accept = ", ".join((
        "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json", "application/vnd.docker.distribution.manifest.v2+json",
    ))
    response = httpx.head(f"http://{registry}/v2/{repository}/manifests/{tag}", headers={"Accept": accept})
    response.raise_for_status()
    return response.headers["Docker-Content-Digest"]


def test_build_asset_feeds_the_run_asset_which_launches_exactly_the_built_digest(dagster_home, stack, docker_client):
    repository = f"{stack.registry}/dagster/{unique('buildasset')}"
    gate = ImagegateResource(repository=repository, build_args={"BASE": stack.env["IMAGEGATE_PYTHON_IMAGE_DIGEST"]})
    build = image_build_asset("job_image", job_directory=WORDCOUNT)
    run = _run_asset("job_run", "job_image")
    client = ImagegateDockerClient(ImagegateResource(), remove=False)  # keep the container, to inspect it
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize([build, run], resources={"imagegate": gate, "docker_pipes": client}, instance=instance)
        assert result.success

        # the build asset's value is the pinned reference, and it is what the registry holds
        pinned = result.output_for_node("job_image")
        name, digest = pinned.split("@")
        tag = name.rsplit(":", 1)[1]
        assert name == f"{repository}:{tag}" and tag.startswith("c-")
        assert digest == _registry_digest(stack.registry, repository.split("/", 1)[1], tag)
        built = result.asset_materializations_for_node("job_image")[0].metadata
        assert built["imagegate/pinned"].value == pinned
        assert built["imagegate/build"].value["built"] is True and built["imagegate/build"].value["pinned"] == pinned
        assert built["imagegate/lint"].value["passed"] is True
        assert "imagegate/launched" not in built  # the build asset launches nothing

        # the run asset checked the reference again (its checks ran, on that digest) and launched it
        ran = result.asset_materializations_for_node("job_run")[0].metadata
        assert ran["imagegate/pinned"].value == pinned
        assert ran["imagegate/launched"].value == f"{repository}@{digest}"
        evaluations = _evaluations(instance, result.run_id)
        assert {k: e.passed for k, e in evaluations.items()} == {
            ("job_image", "image_pinned"): True, ("job_image", "image_non_root"): True, ("job_image", "dockerfile_lint"): True,
            ("job_run", "image_pinned"): True, ("job_run", "image_non_root"): True,
        }
        assert evaluations[("job_run", "image_pinned")].metadata["pinned"].value == pinned
        assert evaluations[("job_image", "dockerfile_lint")].metadata["outcome"].value == "pass"

    # the engine is the oracle: the container ran the image the registry holds under that digest
    (container,) = docker_client.containers.list(all=True, filters={"label": f"{PINNED_LABEL}={pinned}"})
    try:
        assert container.attrs["Config"]["Image"] == f"{repository}@{digest}"
        assert container.attrs["Image"] == docker_client.images.get(f"{repository}@{digest}").id
        assert container.attrs["State"]["ExitCode"] == 0
        assert container.attrs["Config"]["Labels"]["imagegate.dev/task"] == "job_run"
    finally:
        container.remove(force=True)

    # a second run finds the content tag in the registry: nothing rebuilt, the same digest launched
    again = dg.materialize([build, run], resources={"imagegate": gate, "docker_pipes": ImagegateDockerClient(ImagegateResource())})
    assert again.output_for_node("job_image") == pinned
    assert again.asset_materializations_for_node("job_image")[0].metadata["imagegate/build"].value["built"] is False


def test_the_run_asset_does_not_trust_its_input(dagster_home, stack, rooty_image, tmp_path, docker_client):
    """The upstream value is input like any other: replaced in the IO manager's storage by a mutable-tag
    root image, it is refused by the run asset's own gate and nothing is launched."""
    repository = f"{stack.registry}/dagster/{unique('tampered')}"
    gate = ImagegateResource(repository=repository, build_args={"BASE": stack.env["IMAGEGATE_PYTHON_IMAGE_DIGEST"]})
    build = image_build_asset("job_image_t", job_directory=WORDCOUNT)
    run = _run_asset("job_run_t", "job_image_t")
    storage = tmp_path / "storage"
    resources = {"imagegate": gate, "docker_pipes": ImagegateDockerClient(), "io_manager": dg.FilesystemIOManager(base_dir=str(storage))}
    instance = dg.DagsterInstance.ephemeral()
    dg.materialize([build], resources=resources, instance=instance)
    stored = storage / "job_image_t"
    assert pickle.loads(stored.read_bytes()).startswith(repository + ":c-")
    stored.write_bytes(pickle.dumps(rooty_image))

    since = int(time.time()) - 1
    result = dg.materialize([build, run], selection=["job_run_t"], resources=resources, instance=instance, raise_on_error=False)
    (failure,) = result.get_step_failure_events()
    assert failure.event_specific_data.error.cls_name == "ImageRefused"
    checks = {k[1]: e.passed for k, e in _evaluations(instance, result.run_id).items()}
    assert checks == {"image_pinned": False, "image_non_root": False}
    events = docker_client.events(since=since, until=int(time.time()) + 1, filters={"type": "container", "event": "create"}, decode=True)
    assert [e for e in events if "rooty" in (e.get("Actor", {}).get("Attributes", {}).get("image") or "")] == []


def test_a_refused_build_stops_the_run_asset(dagster_home, stack, tmp_path, docker_client):
    """A root image is built (the lint only warns here) and refused by the build asset's own checks:
    the run asset never starts, no container is created."""
    job = tmp_path / "rootjob"
    job.mkdir()
    (job / "Dockerfile").write_text('ARG BASE\nFROM ${BASE}\nCMD ["echo", "ran as root"]\n')
    (job / ".dockerignore").write_text(".git\n")
    repository = f"{stack.registry}/dagster/{unique('rootbuild')}"
    gate = ImagegateResource(repository=repository, check_modes={"lint": "warn"},
                             build_args={"BASE": stack.env["IMAGEGATE_BUSYBOX_IMAGE_DIGEST"]})
    build = image_build_asset("root_image", job_directory=job)
    run = _run_asset("root_run", "root_image")
    since = int(time.time()) - 1
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([build, run], resources={"imagegate": gate, "docker_pipes": ImagegateDockerClient()},
                            instance=instance, raise_on_error=False)
    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert failure.step_key == "root_image" and failure.event_specific_data.error.cls_name == "ImageRefused"
    assert "root_image" in {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert "root_run" not in {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert not result.asset_materializations_for_node("root_run")
    checks = {k: e.passed for k, e in _evaluations(instance, result.run_id).items()}
    assert checks[("root_image", "image_non_root")] is False
    assert not any(asset == "root_run" for asset, _ in checks)
    events = docker_client.events(since=since, until=int(time.time()) + 1, filters={"type": "container", "event": "create"}, decode=True)
    assert [e for e in events if repository in (e.get("Actor", {}).get("Attributes", {}).get("image") or "")] == []


def test_build_asset_settings_fail_when_definitions_load(tmp_path):
    with pytest.raises(ImagegateDagsterError, match=r"^job_directory: .*is not a directory"):
        image_build_asset("x", job_directory=tmp_path / "missing")
    with pytest.raises(ImagegateDagsterError, match=r"^backend: 'nomad' is not one of docker, kubernetes"):
        image_build_asset("x", job_directory=tmp_path, backend="nomad")
    with pytest.raises(ValueError, match="unknown imagegate check 'image_scanned'"):
        image_build_asset("x", job_directory=tmp_path, checks=["image_scanned"])


def test_build_asset_without_a_repository_names_the_setting(dagster_home, tmp_path):
    job = Path(tmp_path)
    (job / "Dockerfile").write_text("FROM scratch\n")
    build = image_build_asset("no_repo", job_directory=job)
    with pytest.raises(ImagegateDagsterError, match=r"^repository: .*needs repository="):
        dg.materialize([build], resources={"imagegate": ImagegateResource()})
