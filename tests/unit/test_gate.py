"""The gate against the in-process fake registry: sources, the lock-file rule, plans, pods, verification."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import imagegate
from imagegate import (
    CheckFailed,
    DockerConfig,
    HardeningError,
    ImageSource,
    LaunchMismatch,
    Policy,
    RegistryClient,
    SourceError,
    plan_launch,
    plan_pod,
)
from tests.support.fakeregistry import FakeRegistry
from tests.support.oci import make_image

HOST = "registry.test"


@pytest.fixture
def registry() -> FakeRegistry:
    reg = FakeRegistry()
    reg.put_image("team/etl", make_image(user="10001:10002"), tag="1.4.2")
    reg.put_image("team/root", make_image(user="0"), tag="1.0.0")
    reg.put_image("team/side", make_image(user="1000"), tag="2.0.0")
    reg.put_image("team/side", make_image(user="1000", cmd=["x"]), tag="latest")
    return reg


@pytest.fixture
def client(registry: FakeRegistry) -> RegistryClient:
    return RegistryClient(transport=registry.transport, docker_config=DockerConfig({}))


def test_a_plan_launches_the_digest_and_knows_what_the_engine_may_report(client: RegistryClient, registry: FakeRegistry) -> None:
    plan = plan_launch(ImageSource(image=f"{HOST}/team/etl:1.4.2"), backend="kubernetes", client=client)
    digest = registry.repositories["team/etl"].tags["1.4.2"]
    assert plan.launch == f"{HOST}/team/etl@{digest}" and str(plan.pinned) == f"{HOST}/team/etl:1.4.2@{digest}"
    assert (plan.uid, plan.gid) == (10001, 10002)
    facts = plan.report.facts or {}
    assert plan.image_ids == {digest, facts["config_digest"]}
    plan.verify(facts["config_digest"], container="c")  # a Docker Engine's image id
    plan.verify(f"{HOST}/team/etl@{digest}", container="c")  # a kubelet's imageID
    with pytest.raises(LaunchMismatch) as caught:
        plan.verify("sha256:" + "0" * 64, container="c1")
    assert caught.value.container == "c1" and caught.value.actual == "sha256:" + "0" * 64


def test_a_refusal_carries_the_report_and_the_role(client: RegistryClient) -> None:
    with pytest.raises(CheckFailed) as caught:
        plan_launch(ImageSource(image=f"{HOST}/team/root:1.0.0"), client=client, role="init container", fix="pin it")
    assert caught.value.role == "init container" and caught.value.fix == "pin it"
    assert [r.check for r in caught.value.report.failures] == ["non-root"]
    assert caught.value.to_dict()["report"]["passed"] is False


@pytest.mark.parametrize(
    ("source", "option"),
    [
        (ImageSource(), "image"),
        (ImageSource(image="a:1", lock_name="x"), "lock_name"),
        (ImageSource(job_dir="jobs/x"), "repository"),
    ],
)
def test_a_source_names_exactly_one_image(source: ImageSource, option: str) -> None:
    with pytest.raises(SourceError) as caught:
        plan_launch(source)
    assert caught.value.option == option


def _lock(path: Path, digest: str) -> Path:
    lock = imagegate.LockFile(path)
    lock.set("etl", imagegate.parse_reference(f"{HOST}/team/etl:1.4.2@{digest}"))
    lock.save()
    return path


def test_the_one_lock_file_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: RegistryClient, registry: FakeRegistry) -> None:
    digest = registry.repositories["team/etl"].tags["1.4.2"]
    start = tmp_path / "dags" / "team"
    start.mkdir(parents=True)
    monkeypatch.delenv("IMAGEGATE_LOCK_FILE", raising=False)
    with pytest.raises(SourceError, match="needs a lock file") as caught:
        ImageSource(lock_name="etl", start=start).lock_path()
    assert caught.value.option == "lock_file"
    nearest = _lock(tmp_path / "dags" / imagegate.LOCK_FILE, digest)
    assert ImageSource(lock_name="etl", start=start).lock_path() == nearest  # the nearest, upwards
    from_env = _lock(tmp_path / "env.lock.json", digest)
    monkeypatch.setenv("IMAGEGATE_LOCK_FILE", str(from_env))
    assert ImageSource(lock_name="etl", start=start).lock_path() == from_env  # the environment beats the search
    explicit = _lock(start / "mine.json", digest)
    assert ImageSource(lock_name="etl", lock_file="mine.json", start=start).lock_path() == explicit  # relative to start
    plan = plan_launch(ImageSource(lock_name="etl", lock_file="mine.json", start=start), client=client)
    assert plan.pinned.digest == digest


def test_a_pod_gates_every_container(client: RegistryClient, registry: FakeRegistry) -> None:
    primary = plan_launch(ImageSource(image=f"{HOST}/team/etl:1.4.2"), backend="kubernetes", client=client)
    pod = {
        "metadata": {"name": "p", "annotations": {"mine": "kept"}},
        "spec": {
            "initContainers": [{"name": "fetch", "image": f"{HOST}/team/side:2.0.0"}],
            "containers": [{"name": "base", "image": "ignored"}, {"name": "sidecar", "image": f"{HOST}/team/side:2.0.0"}],
        },
    }
    planned = plan_pod(pod, primary=primary, primary_container="base", client=client, orchestrator="airflow", task="d.t")
    spec = planned.pod["spec"]
    side = registry.repositories["team/side"].tags["2.0.0"]
    assert spec["containers"][0]["image"] == primary.launch
    assert spec["containers"][1]["image"] == spec["initContainers"][0]["image"] == f"{HOST}/team/side@{side}"
    assert all(c["imagePullPolicy"] == "IfNotPresent" for c in spec["containers"] + spec["initContainers"])
    assert spec["securityContext"]["runAsUser"] == 10001  # from the task's image, so helpers run (and are checked) as it
    assert planned.plans["sidecar"].user == "10001"
    annotations = planned.pod["metadata"]["annotations"]
    assert annotations["mine"] == "kept" and annotations["imagegate.dev/pinned"] == str(primary.pinned)
    assert json.loads(annotations["imagegate.dev/images"])["fetch"].endswith(side)
    assert planned.pod["metadata"]["labels"] == {"imagegate.dev/orchestrator": "airflow"}
    assert pod["spec"]["containers"][0]["image"] == "ignored"  # the input is not changed

    planned.verify_spec(planned.pod)
    imagegate.verify_pod_images(planned.pod)
    swapped = json.loads(json.dumps(planned.pod))
    swapped["spec"]["containers"][1]["image"] = f"{HOST}/team/side:latest"  # e.g. a mutating webhook
    with pytest.raises(LaunchMismatch):
        planned.verify_spec(swapped)
    with pytest.raises(LaunchMismatch):
        imagegate.verify_pod_images(swapped)
    running = {**planned.pod, "status": {"containerStatuses": [{"name": "sidecar", "imageID": f"{HOST}/team/side@{side}"}]}}
    planned.verify_status(running)
    running["status"]["containerStatuses"][0]["imageID"] = "sha256:" + "1" * 64
    with pytest.raises(LaunchMismatch):
        planned.verify_status(running)


def _tampered(pod: dict, **changes: object) -> dict:
    """A copy of *pod* as a provider callback or a mutating webhook could leave it after the plan."""
    copy = json.loads(json.dumps(pod))
    spec = copy["spec"]
    base = spec["containers"][0]
    for key, value in changes.items():
        if key == "hostPath":
            spec["volumes"] = [{"name": "root", "hostPath": {"path": "/"}}]
            base["volumeMounts"] = [{"name": "root", "mountPath": "/host"}]
        elif key in ("hostPID", "hostNetwork"):
            spec[key] = value
        elif key == "podRunAsUser":
            spec.setdefault("securityContext", {})["runAsUser"] = value
        else:
            base.setdefault("securityContext", {})[key] = value
    return copy


@pytest.mark.parametrize(("change", "field"), [
    ({"privileged": True}, "privileged must be false"),
    ({"hostPath": True}, "hostPath"),
    ({"hostPID": True}, "spec.hostPID"),
    ({"allowPrivilegeEscalation": True}, "allowPrivilegeEscalation must be false"),
])
def test_a_hardened_plan_holds_the_stored_pod_to_the_profile(client: RegistryClient, change: dict, field: str) -> None:
    primary = plan_launch(ImageSource(image=f"{HOST}/team/etl:1.4.2"), backend="kubernetes", client=client)
    planned = plan_pod({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "base", "image": "x"}]}},
                       primary=primary, primary_container="base", client=client, launch_id="L1")
    assert planned.hardened
    planned.verify_spec(planned.pod)
    planned.verify_request(planned.pod)
    tampered = _tampered(planned.pod, **change)  # same images: only the profile changed
    with pytest.raises(HardeningError, match=field) as caught:
        planned.verify_spec(tampered)
    assert caught.value.container == "p"  # the stored pod: the door deletes it
    with pytest.raises(HardeningError, match=field) as caught:
        planned.verify_request(tampered)
    assert caught.value.container is None  # before the create call: nothing was created


@pytest.mark.parametrize("harden", [True, False])
def test_every_container_must_run_as_the_user_it_was_checked_as(client: RegistryClient, harden: bool) -> None:
    primary = plan_launch(ImageSource(image=f"{HOST}/team/etl:1.4.2"), backend="kubernetes", client=client)
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "base", "image": "x"},
                                                              {"name": "side", "image": f"{HOST}/team/side:2.0.0"}]}}
    planned = plan_pod(pod, primary=primary, primary_container="base", client=client, harden=harden)
    planned.verify_spec(planned.pod)
    if not harden:
        planned.verify_spec(_tampered(planned.pod, hostPID=True))  # no profile was applied, none is held
    for change in ({"runAsUser": 0}, {"runAsUser": 10002}, {"podRunAsUser": 0}):
        with pytest.raises(HardeningError, match="not the user imagegate checked") as caught:
            planned.verify_spec(_tampered(planned.pod, **change))
        assert any("'base'" in problem for problem in caught.value.problems), change
    # A plan checked as an override accepts that uid only, and not the image's USER in its place.
    overridden = plan_launch(ImageSource(image=f"{HOST}/team/etl:1.4.2"), backend="kubernetes", user="4242",
                             client=client)
    planned = plan_pod({"spec": {"containers": [{"name": "base", "image": "x",
                                                 "securityContext": {"runAsUser": 4242}}]}},
                       primary=overridden, primary_container="base", client=client, harden=harden)
    planned.verify_spec(planned.pod)
    unset = json.loads(json.dumps(planned.pod))
    del unset["spec"]["containers"][0]["securityContext"]["runAsUser"]
    unset["spec"].get("securityContext", {}).pop("runAsUser", None)
    with pytest.raises(HardeningError, match="the image's USER"):
        planned.verify_spec(unset)


@pytest.mark.parametrize("harden", [True, False])
def test_a_pod_that_runs_the_primary_as_another_user_than_checked_is_refused(client: RegistryClient,
                                                                            harden: bool) -> None:
    primary = plan_launch(ImageSource(image=f"{HOST}/team/etl:1.4.2"), backend="kubernetes", client=client)
    for context in ({"runAsUser": 0}, {"runAsUser": 4242}):  # e.g. a template or base pod spec the plan never saw
        pod = {"spec": {"containers": [{"name": "base", "image": "x", "securityContext": dict(context)}]}}
        with pytest.raises(HardeningError, match="not the user imagegate checked|runAsUser must not be 0"):
            plan_pod(pod, primary=primary, primary_container="base", client=client, harden=harden)
    same = {"spec": {"securityContext": {"runAsUser": 10001}, "containers": [{"name": "base", "image": "x"}]}}
    plan_pod(same, primary=primary, primary_container="base", client=client, harden=harden)  # the image's own uid


def test_the_request_must_be_this_launch(client: RegistryClient) -> None:
    primary = plan_launch(ImageSource(image=f"{HOST}/team/etl:1.4.2"), backend="kubernetes", client=client)
    planned = plan_pod({"spec": {"containers": [{"name": "base", "image": "x"}]}}, primary=primary,
                       primary_container="base", client=client, launch_id="L1")
    other = json.loads(json.dumps(planned.pod))
    other["metadata"]["labels"]["imagegate.dev/launch"] = "L0"
    planned.verify_spec(other)  # a stored pod of an earlier try carries its own launch id
    with pytest.raises(HardeningError, match="not this launch's 'L1'"):
        planned.verify_request(other)


def test_a_refused_helper_refuses_the_pod_and_says_which(client: RegistryClient) -> None:
    pod = {"spec": {"containers": [{"name": "base", "image": f"{HOST}/team/etl:1.4.2"},
                                   {"name": "airflow-xcom-sidecar", "image": f"{HOST}/team/side:latest"}]}}
    with pytest.raises(CheckFailed) as caught:
        plan_pod(pod, client=client, roles={"airflow-xcom-sidecar": "XCom sidecar"}, fixes={"airflow-xcom-sidecar": "pin it"})
    assert caught.value.role == "XCom sidecar" and caught.value.fix == "pin it"
    assert [r.check for r in caught.value.report.failures] == ["pinned"]


def test_a_pod_that_breaks_the_profile_is_refused_before_any_registry_request(client: RegistryClient, registry: FakeRegistry) -> None:
    pod = {"spec": {"hostNetwork": True, "containers": [{"name": "base", "image": f"{HOST}/team/etl:1.4.2"}]}}
    registry.reset_requests()
    with pytest.raises(HardeningError, match="hostNetwork"):
        plan_pod(pod, client=client)
    assert registry.requests == []
    assert plan_pod(pod, client=client, harden=False).pod["spec"]["hostNetwork"] is True


def test_pod_user_prefers_the_container() -> None:
    pod = {"spec": {"securityContext": {"runAsUser": 5}, "containers": [{"name": "a", "securityContext": {"runAsUser": 7}}, {"name": "b"}]}}
    assert imagegate.pod_user(pod, "a") == "7" and imagegate.pod_user(pod, "b") == "5"
    assert imagegate.pod_user({"spec": {"containers": [{"name": "a"}]}}, "a") is None


def test_container_labels_are_one_scheme(client: RegistryClient) -> None:
    plan = plan_launch(ImageSource(image=f"{HOST}/team/etl:1.4.2"), client=client)
    labels = imagegate.container_labels(plan, orchestrator="dagster", task="asset", launch_id="abc")
    me = imagegate.Launcher.current()
    assert labels == {"imagegate.dev/pinned": str(plan.pinned), "imagegate.dev/launch": "abc",
                      "imagegate.dev/orchestrator": "dagster", "imagegate.dev/task": "asset",
                      "imagegate.dev/host": me.host, "imagegate.dev/pid": str(os.getpid()),
                      "imagegate.dev/pid-start": me.start, "imagegate.dev/boot-id": me.boot_id,
                      "imagegate.dev/pid-ns": me.pid_ns}
    assert me.start and me.start.isdigit()  # Linux: /proc/self/stat field 22


def test_container_labels_say_who_launched_it_and_none_may_pose_as_ours(client: RegistryClient) -> None:
    plan = plan_launch(ImageSource(image=f"{HOST}/team/etl:1.4.2"), client=client)
    identity = imagegate.TaskIdentity.airflow(dag_id="etl", task_id="load", run_id="manual__2026-01-01T00:00:00+00:00",
                                              map_index=3, try_number=2)
    launcher = imagegate.Launcher("worker-7", 4242, "99", "boot", "pid:[1]")
    given = {"team": "data", "imagegate.dev/task-key": "forged", "imagegate.dev/pid": "1", "imagegate.dev/other": "x"}
    labels = imagegate.container_labels(plan, orchestrator="airflow", task="etl.load", launch_id="L", given=given,
                                        identity=identity, launcher=launcher, spec="s" * 40)
    assert labels["team"] == "data" and "imagegate.dev/other" not in labels  # the imagegate.dev/ keys are ours alone
    assert labels["imagegate.dev/task-key"] == identity.key != "forged"
    assert labels["imagegate.dev/run-id"] == "manual__2026-01-01T00:00:00+00:00"  # the full id: Docker takes any value
    assert (labels["imagegate.dev/dag-id"], labels["imagegate.dev/task-id"], labels["imagegate.dev/map-index"],
            labels["imagegate.dev/try-number"]) == ("etl", "load", "3", "2")
    assert (labels["imagegate.dev/host"], labels["imagegate.dev/pid"], labels["imagegate.dev/pid-start"]) == ("worker-7", "4242", "99")
    assert labels["imagegate.dev/spec"] == "s" * 40
    assert imagegate.Launcher.from_labels(labels) == launcher


def test_every_try_of_a_task_has_one_key_and_other_tasks_another() -> None:
    base = {"dag_id": "etl", "task_id": "load", "run_id": "scheduled__2026-01-01T00:00:00+00:00", "map_index": -1,
            "try_number": 1}
    key = imagegate.TaskIdentity.airflow(**base).key  # type: ignore[arg-type]
    assert len(key) == 40 and all(c in "0123456789abcdef" for c in key)
    assert imagegate.TaskIdentity.airflow(**{**base, "try_number": 3}).key == key  # type: ignore[arg-type]
    for change in ({"dag_id": "etl2"}, {"task_id": "loads"}, {"run_id": "manual__x"}, {"map_index": 0}):
        assert imagegate.TaskIdentity.airflow(**{**base, **change}).key != key  # type: ignore[arg-type]
    # ids that only a separator would tell apart do not collide
    assert imagegate.TaskIdentity.airflow(dag_id="a.b", task_id="c", run_id="r").key != \
        imagegate.TaskIdentity.airflow(dag_id="a", task_id="b.c", run_id="r").key
    dagster = imagegate.TaskIdentity.dagster(run_id="r2", root_run_id="r1", step_key="asset", retry_number=1)
    assert dagster.key == imagegate.TaskIdentity.dagster(run_id="r1", step_key="asset").key  # a re-execution: same key
    assert dagster.key != imagegate.TaskIdentity.dagster(run_id="r2", step_key="asset").key  # another root run
    assert dagster.key != imagegate.TaskIdentity("airflow", dagster.task).key  # the orchestrator is part of it
    assert dagster.labels()["imagegate.dev/root-run-id"] == "r1" and dagster.labels()["imagegate.dev/run-id"] == "r2"


def test_pod_labels_are_valid_kubernetes_values_and_the_ids_are_annotations(client: RegistryClient) -> None:
    primary = plan_launch(ImageSource(image=f"{HOST}/team/etl:1.4.2"), backend="kubernetes", client=client)
    identity = imagegate.TaskIdentity.airflow(dag_id="d" * 200, task_id="t", run_id="manual__2026-01-01T00:00:00+00:00",
                                              try_number=1)
    pod = {"metadata": {"labels": {"mine": "kept"}}, "spec": {"containers": [{"name": "base", "image": "x"}]}}
    planned = plan_pod(pod, primary=primary, primary_container="base", client=client, orchestrator="airflow",
                       task="d.t", identity=identity, launch_id="0" * 32)
    labels, annotations = planned.pod["metadata"]["labels"], planned.pod["metadata"]["annotations"]
    assert labels == {"mine": "kept", "imagegate.dev/orchestrator": "airflow", "imagegate.dev/launch": "0" * 32,
                      "imagegate.dev/task-key": identity.key}
    import re

    for value in labels.values():  # what the API server accepts as a label value
        assert re.fullmatch(r"([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]?", value) and len(value) <= 63, value
    assert annotations["imagegate.dev/run-id"] == "manual__2026-01-01T00:00:00+00:00"
    assert annotations["imagegate.dev/dag-id"] == "d" * 200 and annotations["imagegate.dev/try-number"] == "1"


def test_policy_waivers_apply_to_helpers(client: RegistryClient) -> None:
    policy = Policy.from_mapping({"waivers": [{"reference": f"{HOST}/team/side", "checks": ["pinned"], "reason": "vendor"}]})
    pod = {"spec": {"containers": [{"name": "base", "image": f"{HOST}/team/side:latest"}]}}
    planned = plan_pod(pod, client=client, policy=policy)
    assert planned.plans["base"].report.result("pinned").outcome.value == "waived"
