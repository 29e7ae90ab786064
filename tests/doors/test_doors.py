"""The same behaviour through every door onto the one gate.

Four doors — the Airflow Docker operator and Kubernetes operator (run with ``airflow dags test``),
the Dagster Docker and Kubernetes Pipes clients (``dg.materialize``) — get the same cases against
the real Docker Engine, registry and Kubernetes test cluster:

- **refusals**: a root image and a mutable tag are refused naming the check, and nothing is created;
- **hardening**: a good image runs, and what the runtime reports for it (the container's
  ``HostConfig``; the pod as the API server stored it) satisfies imagegate's rule set;
- **launch verification**: the runtime runs the checked digest; and when the launch is tampered with
  through the door's own extension point (a subclass, a provider callback, a patch of the stored
  pod), the door refuses it and removes what was created.
"""

# No `from __future__ import annotations`: Dagster reads the asset functions' annotations.
import datetime as dt
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import dagster as dg
import pytest

import imagegate
from dagster_integration import ImagegateDockerClient, ImagegateK8sClient, ImagegateResource
from tests.airflow.conftest import AirflowHome, airflow_home  # noqa: F401 - fixture
from tests.integration.conftest import Stack, build_and_push, docker_client, stack, unique  # noqa: F401 - fixtures
from tests.k8s.conftest import K8sCluster, k8s_cluster  # noqa: F401 - fixture

pytestmark = [pytest.mark.k8s, pytest.mark.integration]


@dataclass
class Images:
    repo: str
    good: str  # USER 10001, by a full-version tag
    root: str  # USER unset, by a full-version tag
    mutable: str  # USER 10001, by :latest
    other: str  # another good image, by digest: what tampering swaps in
    good_digest: str


@pytest.fixture(scope="module")
def images(stack: Stack, docker_client: Any, k8s_cluster: K8sCluster) -> Images:
    repo = unique("doors")
    good = build_and_push(docker_client, stack, 'FROM {base}\nUSER 10001\nCMD ["id", "-u"]\n', repo, "1.0.0")
    build_and_push(docker_client, stack, 'FROM {base}\nUSER 10001\nCMD ["id", "-u"]\n', repo, "latest")
    build_and_push(docker_client, stack, 'FROM {base}\nCMD ["id", "-u"]\n', repo, "1.0.1")
    other = build_and_push(docker_client, stack, 'FROM {base}\nUSER 10001\nLABEL other=1\nCMD ["id", "-u"]\n', repo, "2.0.0")
    base = f"{stack.registry}/{repo}"
    docker_client.images.pull(f"{base}@{other}")  # a tampering Docker door must find it locally
    return Images(repo, f"{base}:1.0.0", f"{base}:1.0.1", f"{base}:latest", f"{base}@{other}", good)


@dataclass
class Outcome:
    ok: bool
    error: str
    created: list[str] = field(default_factory=list)  # container ids / pod names the runtime created
    hardening: list[str] = field(default_factory=list)  # what the runtime's record breaks
    running: list[str] = field(default_factory=list)  # what the runtime reports running (image ids / imageIDs)
    gone: bool = True  # everything created was removed again (only meaningful for a refused launch)


@dataclass
class Ctx:
    images: Images
    docker: Any
    cluster: K8sCluster
    airflow: AirflowHome
    tmp: Path


# -- Docker doors ----------------------------------------------------------------------------------------


def _docker_record(docker_client: Any, repo: str, since: dt.datetime) -> tuple[list[str], list[str], list[str], bool]:
    """(created container ids, hardening problems, image ids, all removed) for containers of *repo* since *since*."""
    import docker

    time.sleep(1.1)
    until = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)
    created = [e["id"] for e in docker_client.events(since=since, until=until, decode=True,
                                                      filters={"type": "container", "event": "create"})
               if repo in (e.get("Actor") or {}).get("Attributes", {}).get("image", "")]
    problems: list[str] = []
    running: list[str] = []
    gone = True
    for cid in created:
        try:
            info = docker_client.api.inspect_container(cid)
        except docker.errors.NotFound:
            continue
        gone = False
        problems += imagegate.docker_violations(info["HostConfig"], imagegate.Policy())
        running.append(info["Image"])
        docker_client.api.remove_container(cid, force=True)
    return created, problems, running, gone


def airflow_docker(ctx: Ctx, image: str, tamper: bool) -> Outcome:
    dag_id = unique("door_af_docker").replace("-", "_")
    operator = "ImagegateDockerOperator"
    prelude = ""
    if tamper:
        operator = "Tampered"
        prelude = textwrap.dedent(f'''
            class Tampered(ImagegateDockerOperator):
                def launch(self, context):
                    self.image = {ctx.images.other!r}  # after the gate, before the launch
                    return super().launch(context)
            ''')
    source = textwrap.dedent('''
        import pendulum
        from airflow.sdk import dag
        from airflow_plugin import ImagegateDockerOperator
        {prelude}
        @dag(dag_id={dag_id!r}, schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False)
        def d():
            {operator}(task_id="t", image={image!r}, auto_remove="never", mount_tmp_dir=False)
        d()
        ''').format(prelude=prelude, dag_id=dag_id, operator=operator, image=image)
    dags = ctx.tmp / dag_id
    dags.mkdir()
    (dags / f"{dag_id}.py").write_text(source)
    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    result = ctx.airflow.dags_test(dag_id, dags)
    created, problems, running, gone = _docker_record(ctx.docker, ctx.images.repo, since)
    return Outcome(result.returncode == 0, result.stdout + result.stderr, created, problems, running, gone)


def dagster_docker(ctx: Ctx, image: str, tamper: bool) -> Outcome:
    class Tampered(ImagegateDockerClient):
        def _create_container(self, client: Any, image: str, *args: Any, **kwargs: Any) -> Any:
            return super()._create_container(client, ctx.images.other, *args, **kwargs)

    @dg.asset(name=unique("door_dg_docker").replace("-", "_"))
    def job(context: dg.AssetExecutionContext, pipes: ImagegateDockerClient):  # dagster reads the annotations
        return pipes.run(context=context, image=image).get_materialize_result()

    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    client = (Tampered if tamper else ImagegateDockerClient)(remove=False)
    result = dg.materialize([job], resources={"pipes": client}, raise_on_error=False)
    error = "" if result.success else str(result.get_step_failure_events()[0].event_specific_data.error)
    created, problems, running, gone = _docker_record(ctx.docker, ctx.images.repo, since)
    return Outcome(result.success, error, created, problems, running, gone)


# -- Kubernetes doors ------------------------------------------------------------------------------------


def _pod_record(cluster: K8sCluster, suite: str) -> tuple[list[str], list[str], list[str], bool]:
    """(pod names, restricted-profile problems, container imageIDs, all deleted) for the pods labelled *suite*."""
    from kubernetes import client

    core = cluster.core()
    pods = core.list_namespaced_pod(cluster.namespace, label_selector=f"imagegate-suite={suite}").items
    names = [p.metadata.name for p in pods]
    problems: list[str] = []
    running: list[str] = []
    for pod in pods:
        deadline = time.monotonic() + 60
        while pod.status.phase not in ("Succeeded", "Failed") and time.monotonic() < deadline and not pod.metadata.deletion_timestamp:
            time.sleep(0.5)
            pod = core.read_namespaced_pod(pod.metadata.name, cluster.namespace)
        stored = client.ApiClient().sanitize_for_serialization(pod)
        problems += imagegate.restricted_violations(stored)
        running += [s.get("imageID", "") for s in (stored.get("status") or {}).get("containerStatuses") or []]
        try:
            core.delete_namespaced_pod(pod.metadata.name, cluster.namespace, grace_period_seconds=0)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
    return names, problems, running, not any(p.metadata.deletion_timestamp is None for p in pods)


def airflow_kubernetes(ctx: Ctx, image: str, tamper: bool) -> Outcome:
    cluster = ctx.cluster
    dag_id = unique("door_af_k8s").replace("-", "_")
    suite = unique("s")
    callbacks = ""
    prelude = ""
    if tamper:
        callbacks = "callbacks=[Tamper],"
        prelude = textwrap.dedent(f'''
            from airflow.providers.cncf.kubernetes.callbacks import KubernetesPodOperatorCallback

            class Tamper(KubernetesPodOperatorCallback):
                @staticmethod
                def on_pod_manifest_created(*, pod_request, **kwargs):
                    pod_request.spec.containers[0].image = {ctx.images.other!r}  # after the gate, before the create
            ''')
    source = textwrap.dedent('''
        import pendulum
        from airflow.sdk import dag
        from airflow_plugin import ImagegateKubernetesPodOperator
        {prelude}
        @dag(dag_id={dag_id!r}, schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False)
        def d():
            ImagegateKubernetesPodOperator(
                task_id="t", image={image!r}, config_file={config!r}, cluster_context={context!r}, in_cluster=False,
                namespace={namespace!r}, labels={{"imagegate-suite": {suite!r}}}, on_finish_action="keep_pod",
                startup_timeout_seconds=120, get_logs=True, {callbacks})
        d()
        ''').format(prelude=prelude, dag_id=dag_id, image=image, config=str(cluster.kubeconfig),
                     context=cluster.env["IMAGEGATE_K8S_CONTEXT"], namespace=cluster.namespace, suite=suite,
                     callbacks=callbacks)
    dags = ctx.tmp / dag_id
    dags.mkdir()
    (dags / f"{dag_id}.py").write_text(source)
    result = ctx.airflow.dags_test(dag_id, dags)
    names, problems, running, gone = _pod_record(cluster, suite)
    return Outcome(result.returncode == 0, result.stdout + result.stderr, names, problems, running, gone)


def dagster_kubernetes(ctx: Ctx, image: str, tamper: bool) -> Outcome:
    import contextlib

    cluster = ctx.cluster
    suite = unique("s")
    other = ctx.images.other

    class Tampered(ImagegateK8sClient):
        @contextlib.contextmanager
        def consume_pod_logs(self, context: Any, client: Any, namespace: str, pod_name: str, **kwargs: Any) -> Any:
            pod = client.core_api.read_namespaced_pod(pod_name, namespace)
            patch = {"spec": {"containers": [{"name": pod.spec.containers[0].name, "image": other}]}}
            client.core_api.patch_namespaced_pod(pod_name, namespace, patch)  # the stored pod, after our create
            with super().consume_pod_logs(context, client, namespace, pod_name, **kwargs):
                yield

    @dg.asset(name=unique("door_dg_k8s").replace("-", "_"))
    def job(context: dg.AssetExecutionContext, pipes: ImagegateK8sClient):  # dagster reads the annotations
        return pipes.run(context=context, image=image, namespace=cluster.namespace, delete_pod_on_completion=False,
                         base_pod_meta={"labels": {"imagegate-suite": suite}}).get_materialize_result()

    client = (Tampered if tamper else ImagegateK8sClient)(
        ImagegateResource(), load_incluster_config=False, kubeconfig_file=str(cluster.kubeconfig),
        kube_context=cluster.env["IMAGEGATE_K8S_CONTEXT"], poll_interval=0.5,
    )
    result = dg.materialize([job], resources={"pipes": client}, raise_on_error=False)
    error = "" if result.success else str(result.get_step_failure_events()[0].event_specific_data.error)
    names, problems, running, gone = _pod_record(cluster, suite)
    return Outcome(result.success, error, names, problems, running, gone)


DOORS: dict[str, Callable[[Ctx, str, bool], Outcome]] = {
    "airflow-docker": airflow_docker,
    "airflow-kubernetes": airflow_kubernetes,
    "dagster-docker": dagster_docker,
    "dagster-kubernetes": dagster_kubernetes,
}


@pytest.fixture
def ctx(images: Images, docker_client: Any, k8s_cluster: K8sCluster, airflow_home: AirflowHome, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Ctx:
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="dagster-home-"))
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return Ctx(images, docker_client, k8s_cluster, airflow_home, tmp_path)


@pytest.mark.parametrize("door", sorted(DOORS))
@pytest.mark.parametrize(("case", "check"), [("root", "non-root"), ("mutable", "pinned")])
def test_every_door_refuses_the_same_images_and_creates_nothing(ctx: Ctx, door: str, case: str, check: str) -> None:
    image = ctx.images.root if case == "root" else ctx.images.mutable
    outcome = DOORS[door](ctx, image, False)
    assert not outcome.ok
    assert "REFUSED" in outcome.error or "refused" in outcome.error, outcome.error[-3000:]
    assert check in outcome.error
    assert outcome.created == [], f"{door} created {outcome.created} for a refused image"


@pytest.mark.parametrize("door", sorted(DOORS))
def test_every_door_launches_the_checked_digest_hardened(ctx: Ctx, door: str) -> None:
    outcome = DOORS[door](ctx, ctx.images.good, False)
    assert outcome.ok, outcome.error[-3000:]
    assert len(outcome.created) == 1
    assert outcome.hardening == [], outcome.hardening
    plan = imagegate.plan_launch(imagegate.ImageSource(image=ctx.images.good), backend="kubernetes")
    assert outcome.running and all(imagegate._gate.reported_digest(r) in plan.image_ids for r in outcome.running), outcome.running


@pytest.mark.parametrize("door", sorted(DOORS))
def test_every_door_refuses_a_tampered_launch_and_removes_it(ctx: Ctx, door: str) -> None:
    outcome = DOORS[door](ctx, ctx.images.good, True)
    assert not outcome.ok
    assert "not the checked image" in outcome.error or "unchecked image" in outcome.error, outcome.error[-3000:]
    assert outcome.gone, f"{door} left {outcome.created} behind"
