"""ImagegateDockerOperator against the real engine and registry: refusals, hardening, moved tags."""

from __future__ import annotations

from typing import Any

import pytest

import imagegate

from airflow_plugin import ImageRefused, ImagegateDockerOperator
from tests.airflow.conftest import Events, local_build, push_image
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration


def operator(image: str, **kwargs: Any) -> ImagegateDockerOperator:
    kwargs.setdefault("mount_tmp_dir", False)
    return ImagegateDockerOperator(task_id="t", image=image, docker_url=None, **kwargs)


@pytest.mark.parametrize(
    ("tag", "user", "failed"),
    [
        ("latest", None, {"pinned"}),  # a floating tag
        ("1.0.0-root", None, {"non-root"}),  # no USER: root
        ("1.0.0-uid", "0", {"non-root"}),  # a root user= override of a good image
        ("1.0.0-uid", "root:root", {"non-root"}),
    ],
)
def test_refused_before_any_container_exists(
    docker_client: Any, stack: Stack, repo: str, events: Events, tag: str, user: str | None, failed: set[str]
) -> None:
    push_image(docker_client, stack, repo, "latest", "floating")
    push_image(docker_client, stack, repo, "1.0.0-root", "rooty", user="0")
    push_image(docker_client, stack, repo, "1.0.0-uid", "fine")
    op = operator(f"{stack.registry}/{repo}:{tag}", user=user)
    with pytest.raises(ImageRefused) as caught:
        op.execute({})
    assert {r.check for r in caught.value.report.failures} == failed
    assert "REFUSED" in str(caught.value)
    assert op.imagegate_launched is None
    assert events.containers(repo) == [], "a refused image must not get a container"


def test_runs_the_checked_digest_hardened(docker_client: Any, stack: Stack, repo: str) -> None:
    digest = push_image(docker_client, stack, repo, "2.0.0", "hardened")
    op = operator(f"{stack.registry}/{repo}:2.0.0", auto_remove="never")
    try:
        assert op.execute({}) == "hardened"
        launched = op.imagegate_launched
        assert launched is not None
        container = docker_client.api.inspect_container(launched["container_id"])
        assert container["Config"]["Image"] == f"{stack.registry}/{repo}@{digest}"
        assert container["Image"] == (op.imagegate_report.facts or {})["config_digest"]
        assert container["HostConfig"]["SecurityOpt"] == ["no-new-privileges:true"]  # imagegate.harden_docker
        assert imagegate.docker_violations(container["HostConfig"], imagegate.Policy()) == []
        assert container["HostConfig"]["CapDrop"] == ["ALL"]
        assert container["Config"]["Labels"]["imagegate.dev/pinned"] == f"{stack.registry}/{repo}:2.0.0@{digest}"
        assert launched["pinned"] == f"{stack.registry}/{repo}:2.0.0@{digest}"
    finally:
        if op.imagegate_launched:
            docker_client.api.remove_container(op.imagegate_launched["container_id"], force=True)


def test_tag_moved_between_check_and_launch_runs_the_checked_digest(docker_client: Any, stack: Stack, repo: str) -> None:
    first = push_image(docker_client, stack, repo, "3.0.0", "first")
    op = operator(f"{stack.registry}/{repo}:3.0.0")
    report = op.gate({})
    assert report.pinned and report.pinned.endswith(first)
    second = push_image(docker_client, stack, repo, "3.0.0", "second")  # the tag moves
    assert second != first
    assert op.launch({}) == "first"
    assert op.imagegate_launched and op.imagegate_launched["launched"].endswith(first)


def test_a_launch_that_is_not_the_checked_image_is_removed_unstarted(
    docker_client: Any, stack: Stack, repo: str, events: Events
) -> None:
    """Whatever changes ``image`` after the gate (a subclass, a callback), the engine's own record of the
    created container is compared with the checked image: a mismatch is removed before it ever starts."""
    import docker

    from airflow_plugin import LaunchMismatch

    push_image(docker_client, stack, repo, "5.0.0", "checked")
    other = push_image(docker_client, stack, repo, "5.0.1", "unchecked")
    op = operator(f"{stack.registry}/{repo}:5.0.0")
    report = op.gate({})
    op.image = f"{stack.registry}/{repo}@{other}"  # not what was checked
    with pytest.raises(LaunchMismatch) as caught:
        op.launch({})
    mismatch = caught.value
    assert mismatch.expected and (report.facts or {})["config_digest"] in mismatch.expected
    assert mismatch.actual not in mismatch.expected
    assert mismatch.actual == docker_client.api.inspect_image(f"{stack.registry}/{repo}@{other}")["Id"]
    with pytest.raises(docker.errors.NotFound):
        docker_client.api.inspect_container(mismatch.container)
    assert [e["id"] for e in events.containers(repo)] == [mismatch.container]  # created ...
    assert events.containers(repo, action="start") == []  # ... never started
    assert op.imagegate_launched is None


def test_a_stale_local_tag_is_not_run(docker_client: Any, stack: Stack, repo: str) -> None:
    """The provider never re-pulls a tag it has; launching by digest makes that irrelevant."""
    from airflow.providers.docker.operators.docker import DockerOperator

    ref = f"{stack.registry}/{repo}:4.0.0"
    push_image(docker_client, stack, repo, "4.0.0", "current")
    local_build(docker_client, stack, ref, "stale")  # the engine's copy of the tag is older
    try:
        plain = DockerOperator(task_id="plain", image=ref, mount_tmp_dir=False, auto_remove="force")
        assert plain.execute({}) == "stale"
        assert operator(ref, force_pull=False).execute({}) == "current"
    finally:
        docker_client.images.remove(ref, force=True)


def test_privileged_is_refused_at_definition() -> None:
    from airflow_plugin import HardeningViolation

    with pytest.raises(HardeningViolation, match="privileged"):
        ImagegateDockerOperator(task_id="p", image="registry.example.com/a:1.0.0", privileged=True)


def test_exactly_one_image_source() -> None:
    from airflow_plugin import ImageSourceError

    with pytest.raises(ImageSourceError, match="exactly one of image=, lock_name= or job_dir="):
        ImagegateDockerOperator(task_id="p", image="registry.example.com/a:1.0.0", lock_name="a")
    with pytest.raises(ImageSourceError, match="none of them"):
        ImagegateDockerOperator(task_id="p")


def test_lock_name_launches_the_locked_digest(docker_client: Any, stack: Stack, repo: str, tmp_path: Any) -> None:
    import imagegate

    digest = push_image(docker_client, stack, repo, "5.0.0", "locked")
    lock = imagegate.LockFile(tmp_path / imagegate.LOCK_FILE)
    lock.set("job", imagegate.parse_reference(f"{stack.registry}/{repo}:5.0.0@{digest}"))
    lock.save()
    push_image(docker_client, stack, repo, "5.0.0", "moved-after-lock")
    op = ImagegateDockerOperator(task_id="l", lock_name="job", lock_file=str(lock.path), mount_tmp_dir=False)
    assert op.execute({}) == "locked"
    with pytest.raises(imagegate.LockFileError, match="no image named 'nope'"):
        ImagegateDockerOperator(task_id="m", lock_name="nope", lock_file=str(lock.path)).execute({})


def test_job_dir_builds_then_runs_the_built_digest(stack: Stack, wordcount: str) -> None:
    from tests.airflow.conftest import ROOT

    op = ImagegateDockerOperator(
        task_id="j",
        job_dir=str(ROOT / "example_dags" / "jobs" / "wordcount"),
        repository=f"{stack.registry}/examples/wordcount",
        build_options={"build_args": {"BASE": stack.env["IMAGEGATE_PYTHON_IMAGE_DIGEST"]}},
        command=["/app/job.py"],
        mount_tmp_dir=False,
        auto_remove="force",
    )
    assert '"words": ' in op.execute({})
    assert op.imagegate_report is not None and op.imagegate_report.pinned == wordcount  # up to date: same pin


def test_job_dir_needs_a_repository() -> None:
    from airflow_plugin import ImageSourceError

    with pytest.raises(ImageSourceError, match="needs repository="):
        ImagegateDockerOperator(task_id="k", job_dir="jobs/wordcount").execute({})
