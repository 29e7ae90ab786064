"""Real ``dg.materialize()`` against the local Docker Engine and registry.

Needs the local stack (``python scripts/stack.py up``); under ``CI=true`` a missing
stack fails instead of skipping.
"""


import time
from typing import Any

import dagster as dg
import imagegate
import pytest

from dagster_integration import (
    ImagegateDagsterError,
    ImagegateDockerClient,
    ImagegateResource,
    ImageRefused,
    image_check_specs,
    wait_for_removals,
)
from dagster_integration._docker import PINNED_LABEL, RUN_LABEL
from tests.dagster.conftest import engine_containers, job_words, unique

pytestmark = pytest.mark.integration

ALL_CHECKS = ["image_pinned", "image_non_root", "dockerfile_lint"]
IMAGE_CHECKS = ["image_pinned", "image_non_root"]  # an image given by reference is not built: nothing to lint


def _asset(name: str, checks: list[str] = IMAGE_CHECKS, **run_kwargs: Any) -> dg.AssetsDefinition:
    @dg.asset(name=name, check_specs=image_check_specs(name, checks))
    def _a(context: dg.AssetExecutionContext, docker_pipes: ImagegateDockerClient) -> dg.MaterializeResult:
        return docker_pipes.run(context=context, **run_kwargs).get_materialize_result()

    return _a


def _checks(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    """check name -> AssetCheckEvaluation, from the run's stored events (what the UI shows).

    A refused asset logs its evaluations straight to the event log (it raises, so it
    cannot return them); they are stored but not in ``result.all_events``.
    """
    checks = {}
    for record in instance.get_records_for_run(result.run_id).records:
        event = record.event_log_entry.dagster_event
        if event is not None and event.event_type_value == "ASSET_CHECK_EVALUATION":
            checks[event.event_specific_data.check_name] = event.event_specific_data
    return checks


def _instance_checks(instance: dg.DagsterInstance, key: str) -> dict[str, bool]:
    """check name -> passed, as stored in the instance's event log (what the UI shows)."""
    stored = {}
    for name in ALL_CHECKS:
        check_key = dg.AssetCheckKey(dg.AssetKey(key), name)
        history = instance.event_log_storage.get_asset_check_execution_history(check_key, limit=1)
        if history:
            evaluation = history[0].event.dagster_event.event_specific_data  # type: ignore[union-attr]
            stored[name] = evaluation.passed
    return stored


def test_materialize_launches_the_digest_hardened_and_records_everything(dagster_home, wordcount_image, docker_client):
    asset = _asset("wordcount", image=wordcount_image, command=["/app/job.py"])
    client = ImagegateDockerClient(ImagegateResource(), remove=False)  # keep it, to inspect what was launched
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize([asset], resources={"docker_pipes": client}, instance=instance)
        assert result.success
        metadata = result.asset_materializations_for_node("wordcount")[0].metadata
        pinned = metadata["imagegate/pinned"].value
        assert pinned.startswith(wordcount_image + "@sha256:")
        digest = pinned.split("@")[1]
        assert metadata["imagegate/launched"].value == wordcount_image.rsplit(":", 1)[0] + "@" + digest
        assert metadata["imagegate/verdict"].value == "passed"
        for check in ("registry", "pinned", "non-root"):
            assert metadata[f"imagegate/check/{check}"].value.startswith("pass: ")
        assert [c["check"] for c in metadata["imagegate/report"].value["checks"]] == ["registry", "pinned", "non-root"]
        assert f'"words": {job_words()}' in metadata["imagegate/output"].value  # plain stdout, no dagster-pipes in the image

        checks = _checks(instance, result)
        assert {name: c.passed for name, c in checks.items()} == {name: True for name in IMAGE_CHECKS}
        assert checks["image_pinned"].metadata["pinned"].value == pinned
        assert _instance_checks(instance, "wordcount") == {name: True for name in IMAGE_CHECKS}

    (container,) = [c for c in docker_client.containers.list(all=True, filters={"label": f"{PINNED_LABEL}={pinned}"})]
    try:
        assert container.attrs["Config"]["Image"] == metadata["imagegate/launched"].value  # by digest, no tag
        assert container.attrs["HostConfig"]["SecurityOpt"] == ["no-new-privileges:true"]
        assert container.attrs["HostConfig"]["CapDrop"] == ["ALL"]
        assert container.attrs["Config"]["User"] in ("", "10001:10001")  # "" = the image's USER
        assert container.attrs["State"]["ExitCode"] == 0
    finally:
        container.remove(force=True)


def test_refused_image_fails_with_the_report_and_creates_no_container(dagster_home, rooty_image, docker_client):
    asset = _asset("rooty", image=rooty_image)
    since = int(time.time()) - 1
    before = {c.id for c in docker_client.containers.list(all=True)}
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize([asset], resources={"docker_pipes": ImagegateDockerClient()}, instance=instance, raise_on_error=False)
        assert not result.success
        (failure,) = result.get_step_failure_events()
        error = failure.event_specific_data.error
        assert error.cls_name == "ImageRefused"
        assert "nothing was launched" in error.message
        failure_metadata = failure.event_specific_data.user_failure_data.metadata
        assert failure_metadata["imagegate/verdict"].value == "refused"
        assert failure_metadata["imagegate/check/pinned"].value.startswith("fail: ")
        assert failure_metadata["imagegate/check/non-root"].value.startswith("fail: ")
        assert not result.asset_materializations_for_node("rooty")

        checks = _checks(instance, result)
        assert {n: c.passed for n, c in checks.items()} == {"image_pinned": False, "image_non_root": False}
        assert checks["image_non_root"].severity == dg.AssetCheckSeverity.ERROR
        assert "USER" in checks["image_non_root"].metadata["fix"].value
        assert _instance_checks(instance, "rooty") == {"image_pinned": False, "image_non_root": False}

    # the engine is the oracle: no container was created from that image, none at all meanwhile
    assert {c.id for c in docker_client.containers.list(all=True)} - before == set()  # an earlier test's may be going away
    repository = rooty_image.rsplit(":", 1)[0]
    assert not engine_containers(docker_client, repository)
    events = docker_client.events(since=since, until=int(time.time()) + 1, filters={"type": "container", "event": "create"}, decode=True)
    assert [e for e in events if (e.get("Actor", {}).get("Attributes", {}).get("image") or "").startswith(repository)] == []


def test_refusal_raises_image_refused_carrying_the_report(dagster_home, rooty_image):
    asset = _asset("rooty_direct", image=rooty_image)
    with pytest.raises(ImageRefused) as info:
        dg.materialize([asset], resources={"docker_pipes": ImagegateDockerClient()})
    report = info.value.report
    assert isinstance(report, imagegate.Report) and not report.passed
    assert {r.check for r in report.failures} == {"pinned", "non-root"}
    assert info.value.metadata["imagegate/pinned"].value == report.pinned


def test_warn_mode_launches_and_reports_warnings(dagster_home, rooty_image):
    gate = ImagegateResource(check_modes={"non-root": "warn"}, resolve_mutable_tags=True)
    asset = _asset("rooty_warned", image=rooty_image, command=["echo", "ran as root, caps dropped"])
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([asset], resources={"docker_pipes": ImagegateDockerClient(gate)}, instance=instance)
    assert result.success
    checks = _checks(instance, result)
    assert not checks["image_non_root"].passed and checks["image_non_root"].severity == dg.AssetCheckSeverity.WARN
    assert not checks["image_pinned"].passed and checks["image_pinned"].severity == dg.AssetCheckSeverity.WARN
    metadata = result.asset_materializations_for_node("rooty_warned")[0].metadata
    assert metadata["imagegate/check/non-root"].value.startswith("warn: ")
    assert "ran as root, caps dropped" in metadata["imagegate/output"].value


def test_a_check_the_policy_turns_off_is_not_reported_as_passed(dagster_home, rooty_image):
    """non-root off: the root image launches, and ``image_non_root`` says "not checked" (WARN), not "passed"."""
    gate = ImagegateResource(check_modes={"non-root": "off", "pinned": "off"})
    asset = _asset("rooty_unchecked", image=rooty_image, command=["echo", "nobody checked the user"])
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([asset], resources={"docker_pipes": ImagegateDockerClient(gate)}, instance=instance)
    assert result.success
    checks = _checks(instance, result)
    for name in ("image_non_root", "image_pinned"):
        assert not checks[name].passed and checks[name].severity == dg.AssetCheckSeverity.WARN, name
        assert checks[name].metadata["outcome"].value == "skipped" and checks[name].metadata["verified"].value is False
    output = result.asset_materializations_for_node("rooty_unchecked")[0].metadata["imagegate/output"].value
    assert "nobody checked the user" in output


def test_lock_file_entry_is_launched(dagster_home, wordcount_image, tmp_path, docker_client):
    pinned = imagegate.resolve(wordcount_image)
    lock = imagegate.LockFile(tmp_path / "imagegate.lock")
    lock.set("wordcount", pinned)
    lock.save()
    asset = _asset("wordcount_locked", lock_name="wordcount", command=["/app/job.py"])
    gate = ImagegateResource(lock_file=str(lock.path))
    result = dg.materialize([asset], resources={"docker_pipes": ImagegateDockerClient(gate)})
    metadata = result.asset_materializations_for_node("wordcount_locked")[0].metadata
    assert metadata["imagegate/pinned"].value == pinned.familiar
    # the default client removes its container once it has exited (in the background)
    wait_for_removals()
    assert not docker_client.containers.list(all=True, filters={"label": f"{PINNED_LABEL}={pinned.familiar}"})


def test_failing_job_still_records_the_checks_and_removes_the_container(dagster_home, wordcount_image, docker_client):
    asset = _asset("wordcount_broken", image=wordcount_image, command=["/no/such/file"])
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([asset], resources={"docker_pipes": ImagegateDockerClient()}, raise_on_error=False, instance=instance)
    assert not result.success
    error = result.get_step_failure_events()[0].event_specific_data.error
    assert "DagsterPipesError" in error.to_string() and "non-zero status code" in error.to_string()
    assert {n: c.passed for n, c in _checks(instance, result).items()} == {name: True for name in IMAGE_CHECKS}
    wait_for_removals()
    assert not docker_client.containers.list(all=True, filters={"label": [RUN_LABEL, "imagegate.dev/orchestrator=dagster"]})


def test_bad_arguments_name_the_setting(dagster_home, wordcount_image):
    asset = _asset("wordcount_privileged", image=wordcount_image, container_kwargs={"privileged": True})
    with pytest.raises(Exception, match=r"container_kwargs: .*privileged=True"):
        dg.materialize([asset], resources={"docker_pipes": ImagegateDockerClient()})
    asset = _asset("nothing_named")
    with pytest.raises(Exception, match="name exactly one image source"):
        dg.materialize([asset], resources={"docker_pipes": ImagegateDockerClient()})


def test_pipes_messages_from_inside_the_container_merge_with_the_gate(dagster_home, pipes_image):
    """A job image with dagster-pipes reports its own metadata and checks; the gate's are added."""

    @dg.asset(check_specs=[*image_check_specs("piped"), dg.AssetCheckSpec("row_count", asset="piped")])
    def piped(context: dg.AssetExecutionContext, docker_pipes: ImagegateDockerClient):
        return docker_pipes.run(context=context, image=pipes_image).get_materialize_result()

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([piped], resources={"docker_pipes": ImagegateDockerClient()}, instance=instance)
    metadata = result.asset_materializations_for_node("piped")[0].metadata
    assert metadata["rows"].value == 3  # from inside the container
    assert metadata["imagegate/pinned"].value.startswith(pipes_image + "@sha256:")
    assert {n: c.passed for n, c in _checks(instance, result).items()} == {"image_pinned": True, "image_non_root": True, "row_count": True}


def test_job_directory_is_built_linted_checked_and_launched(dagster_home, stack, docker_client, tmp_path):
    """``job_directory=``: imagegate.build_image builds and pushes (content tag), the lint is the
    ``dockerfile_lint`` check, and the pushed digest is launched."""
    from tests.dagster.conftest import WORDCOUNT

    repository = f"{stack.registry}/dagster/{unique('built')}"
    gate = ImagegateResource(repository=repository, build_args={"BASE": stack.env["IMAGEGATE_PYTHON_IMAGE_DIGEST"]})
    asset = _asset("wordcount_built", ALL_CHECKS, job_directory=str(WORDCOUNT), command=["/app/job.py"])
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([asset], resources={"docker_pipes": ImagegateDockerClient(gate)}, instance=instance)
    metadata = result.asset_materializations_for_node("wordcount_built")[0].metadata
    build = metadata["imagegate/build"].value
    assert build["pinned"] == metadata["imagegate/pinned"].value and build["pinned"].startswith(repository + ":c-")
    assert metadata["imagegate/lint"].value["passed"] is True
    assert f'"words": {job_words()}' in metadata["imagegate/output"].value
    checks = _checks(instance, result)
    assert {n: c.passed for n, c in checks.items()} == {name: True for name in ALL_CHECKS}
    assert checks["dockerfile_lint"].metadata["outcome"].value == "pass"

    # a second materialization finds the content tag in the registry and does not rebuild
    again = dg.materialize([asset], resources={"docker_pipes": ImagegateDockerClient(gate)}, instance=instance)
    rebuilt = again.asset_materializations_for_node("wordcount_built")[0].metadata["imagegate/build"].value
    assert rebuilt["built"] is False and rebuilt["pinned"] == build["pinned"]


def test_lint_errors_refuse_the_build_and_launch_nothing(dagster_home, stack, docker_client, tmp_path):
    job = tmp_path / "job"
    job.mkdir()
    (job / "Dockerfile").write_text(
        f"FROM {stack.env['IMAGEGATE_PYTHON_IMAGE_DIGEST']}\nENV API_SECRET=hunter2\nCMD [\"python3\", \"-c\", \"print(1)\"]\n"
    )
    (job / ".dockerignore").write_text(".git\n")
    repository = f"{stack.registry}/dagster/{unique('lintfail')}"
    asset = _asset("lint_refused", ALL_CHECKS, job_directory=str(job))
    since = int(time.time()) - 1
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [asset], resources={"docker_pipes": ImagegateDockerClient(ImagegateResource(repository=repository))},
        instance=instance, raise_on_error=False,
    )
    (failure,) = result.get_step_failure_events()
    assert failure.event_specific_data.error.cls_name == "BuildRefused"
    assert "IG009" in failure.event_specific_data.error.message
    checks = _checks(instance, result)
    assert set(checks) == {"dockerfile_lint"}  # the image checks did not run: there is no image
    assert not checks["dockerfile_lint"].passed and checks["dockerfile_lint"].severity == dg.AssetCheckSeverity.ERROR
    # nothing built, pushed or created

    import httpx

    assert httpx.get(f"http://{stack.registry}/v2/{repository.split('/', 1)[1]}/tags/list").status_code == 404
    events = docker_client.events(since=since, until=int(time.time()) + 1, filters={"type": "container", "event": "create"}, decode=True)
    assert [e for e in events if repository in (e.get("Actor", {}).get("Attributes", {}).get("image") or "")] == []


def _check_statuses(instance: dg.DagsterInstance, key: str) -> dict[str, str]:
    """check name -> the latest execution's stored status (what the UI shows), for every declared check."""
    stored = {}
    for name in ALL_CHECKS:
        history = instance.event_log_storage.get_asset_check_execution_history(dg.AssetCheckKey(dg.AssetKey(key), name), limit=1)
        if history:
            stored[name] = history[0].status.value
    return stored


@pytest.mark.parametrize("source", ["image", "lock_name"])
def test_dockerfile_lint_where_nothing_is_built_is_refused_never_passed(dagster_home, wordcount_image, tmp_path, docker_client, source):
    """``dockerfile_lint`` declared on an image given by reference: nothing would be linted, so the step
    is refused with a settings error naming the check and the fix — before anything is resolved or created
    — and the check is never recorded as passed."""
    lock = imagegate.LockFile(tmp_path / "imagegate.lock.json")
    lock.set("wordcount", imagegate.resolve(wordcount_image))
    lock.save()
    name = f"unlinted_{source}"
    run_kwargs = {"image": wordcount_image} if source == "image" else {"lock_name": "wordcount"}
    asset = _asset(name, ALL_CHECKS, command=["/app/job.py"], **run_kwargs)
    since = int(time.time()) - 1
    instance = dg.DagsterInstance.ephemeral()
    client = ImagegateDockerClient(ImagegateResource(lock_file=str(lock.path)))
    result = dg.materialize([asset], resources={"docker_pipes": client}, instance=instance, raise_on_error=False)
    assert not result.success
    (failure,) = result.get_step_failure_events()
    error = failure.event_specific_data.error.cause  # dagster wraps an exception that is not a dg.Failure
    assert error.cls_name == "ImagegateDagsterError"
    assert error.message.split(": ", 1)[1].startswith("dockerfile_lint: ")  # the setting to fix
    assert f"given by {source}=" in error.message and "Remove 'dockerfile_lint'" in error.message
    assert "job_directory=" in error.message  # ... or build the image where the check is declared
    assert _checks(instance, result) == {}  # no check evaluated at all: none reads "passed"
    assert "SUCCEEDED" not in _check_statuses(instance, name).values()
    assert not result.asset_materializations_for_node(name)
    repository = wordcount_image.rsplit(":", 1)[0]
    events = docker_client.events(since=since, until=int(time.time()) + 1, filters={"type": "container", "event": "create"}, decode=True)
    assert [e for e in events if (e.get("Actor", {}).get("Attributes", {}).get("image") or "").startswith(repository)] == []


def test_dockerfile_lint_refusal_comes_before_the_registry_is_asked(dagster_home):
    """The refusal is decided from the asset's declaration and arguments alone: an image on a registry
    that does not exist gives the settings error, not a connection error."""
    asset = _asset("unlinted_unreachable", ALL_CHECKS, image="127.0.0.1:9/nowhere/job:1.0.0")
    with pytest.raises(ImagegateDagsterError, match=r"^dockerfile_lint: asset 'unlinted_unreachable' declares"):
        dg.materialize([asset], resources={"docker_pipes": ImagegateDockerClient()})


def test_dockerfile_lint_with_the_lint_turned_off_is_refused_before_building(dagster_home, stack):
    from tests.dagster.conftest import WORDCOUNT

    repository = f"{stack.registry}/dagster/{unique('lintoff')}"
    gate = ImagegateResource(repository=repository, check_modes={"lint": "off"},
                             build_args={"BASE": stack.env["IMAGEGATE_PYTHON_IMAGE_DIGEST"]})
    asset = _asset("lint_off", ALL_CHECKS, job_directory=str(WORDCOUNT))
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([asset], resources={"docker_pipes": ImagegateDockerClient(gate)}, instance=instance, raise_on_error=False)
    (failure,) = result.get_step_failure_events()
    assert failure.event_specific_data.error.cause.cls_name == "ImagegateDagsterError"
    assert 'checks.lint = "off"' in failure.event_specific_data.error.cause.message
    assert _checks(instance, result) == {}

    import httpx

    assert httpx.get(f"http://{stack.registry}/v2/{repository.split('/', 1)[1]}/tags/list").status_code == 404  # nothing built
    # without the check declared, the same settings build and launch (the lint is simply off)
    asset = _asset("lint_off_undeclared", IMAGE_CHECKS, job_directory=str(WORDCOUNT), command=["/app/job.py"])
    result = dg.materialize([asset], resources={"docker_pipes": ImagegateDockerClient(gate)}, instance=instance)
    metadata = result.asset_materializations_for_node("lint_off_undeclared")[0].metadata
    assert "imagegate/lint" not in metadata and metadata["imagegate/build"].value["lint"] is None


def test_a_named_volume_made_with_the_local_drivers_bind_options_never_starts(dagster_home, wordcount_image, docker_client):
    """`docker volume create -o type=none -o o=bind -o device=/etc` mounts the host's /etc, and the container's record
    names only the volume: its own record is read, and the container is removed before it starts."""
    import uuid

    bound, plain = f"ig-bind-{uuid.uuid4().hex[:12]}", f"ig-plain-{uuid.uuid4().hex[:12]}"
    docker_client.api.create_volume(bound, driver="local", driver_opts={"type": "none", "o": "bind", "device": "/etc"})
    docker_client.api.create_volume(plain, driver="local")
    since = int(time.time())
    try:
        asset = _asset("wordcount_bound_volume", image=wordcount_image, command=["/data/hostname"],
                       container_kwargs={"volumes": {bound: {"bind": "/data", "mode": "ro"}}})
        with pytest.raises(Exception, match=f"volume '{bound}' was created with the local driver's"):
            dg.materialize([asset], resources={"docker_pipes": ImagegateDockerClient()})
        events = docker_client.events(since=since, until=int(time.time()) + 1, decode=True,
                                      filters={"type": "container", "event": ["create", "start"]})
        seen = [(e["Action"], e["Actor"]["ID"]) for e in events  # this asset's containers only (not the last test's)
                if e.get("Actor", {}).get("Attributes", {}).get("imagegate.dev/task") == "wordcount_bound_volume"]
        assert [a for a, _ in seen if a == "create"] and not [a for a, _ in seen if a == "start"], seen  # never started
        assert not [c for c in docker_client.containers.list(all=True) if c.id in {i for _, i in seen}]  # and removed
        ok = _asset("wordcount_plain_volume", image=wordcount_image, command=["/app/job.py"],  # counts its own words
                    container_kwargs={"volumes": {plain: {"bind": "/data", "mode": "rw"}}})
        result = dg.materialize([ok], resources={"docker_pipes": ImagegateDockerClient()})
        assert result.success  # a plain named volume is fine
    finally:
        wait_for_removals()  # the run's container is removed in the background: then its volume is free
        for volume in (bound, plain):
            docker_client.api.remove_volume(volume, force=True)
