"""The same behaviour through every door onto the one gate.

Five doors — the Airflow Docker operator and Kubernetes operator (run with ``airflow dags test``),
the Dagster Docker and Kubernetes Pipes clients (``dg.materialize``), and ``imagegate run`` (the
command line) — get the same cases against the real Docker Engine, registry and Kubernetes test cluster:

- **refusals**: a root image and a mutable tag are refused naming the check, and nothing is created;
- **hardening**: a good image runs, and what the runtime reports for it (the container's
  ``HostConfig``; the pod as the API server stored it) satisfies imagegate's rule set; a bind mount
  of the engine's socket (through a symlink) is refused by every Docker door and nothing is created;
- **launch verification**: the runtime runs the checked digest; and when the launch is tampered with
  through the door's own extension point (a subclass, a provider callback, a patch of the stored
  pod, a wrapper around the engine client), the door refuses it and removes what was created —
  for the image on every door, and on every Docker door for a ``HostConfig`` changed after
  imagegate hardened it (privileged, the engine's socket bound): the engine's record decides,
  not the request, and the container is removed without ever starting.

A door takes a *variant*: ``""`` (as written), ``"tamper"`` (another image after the gate),
``"tamper-host"`` (a weaker host config after the hardening; Docker doors) or ``"docker-sock"``
(a task that asks to bind-mount the engine's socket; Docker doors).
"""

# No `from __future__ import annotations`: Dagster reads the asset functions' annotations.
import datetime as dt
import io
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
from tests.integration.conftest import Stack, build_and_push, docker_client, run_cli, stack, unique  # noqa: F401 - fixtures
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
    started: list[str] = field(default_factory=list)  # Docker: the created containers the engine started


@dataclass
class Ctx:
    images: Images
    docker: Any
    cluster: K8sCluster
    airflow: AirflowHome
    tmp: Path


# -- Docker doors ----------------------------------------------------------------------------------------

TAMPERED_HOST = {"Privileged": True, "Binds": ["/var/run/docker.sock:/sock"]}  # what "tamper-host" adds after hardening


def _engine_socket(ctx: Ctx) -> str:
    """A symlink to the engine's socket: the engine follows it when it mounts, so imagegate must too."""
    link = ctx.tmp / "sock-link"
    if not link.is_symlink():
        link.symlink_to("/var/run/docker.sock")
    return str(link)


def _docker_record(docker_client: Any, repo: str, since: dt.datetime) -> Outcome:
    """The created container ids, hardening problems, image ids, whether all were removed and which were
    started, for containers of *repo* since *since* (everything but ``ok`` and ``error``)."""
    import docker

    time.sleep(1.1)
    until = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)
    seen = [e for e in docker_client.events(since=since, until=until, decode=True,
                                            filters={"type": "container", "event": ["create", "start"]})
            if repo in (e.get("Actor") or {}).get("Attributes", {}).get("image", "")]
    created = [e["id"] for e in seen if e.get("status", e.get("Action")) == "create"]
    started = [e["id"] for e in seen if e.get("status", e.get("Action")) == "start"]
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
    return Outcome(False, "", created, problems, running, gone, started)


def _outcome(ok: bool, error: str, record: Outcome) -> Outcome:
    record.ok, record.error = ok, error
    return record


def airflow_docker(ctx: Ctx, image: str, variant: str) -> Outcome:
    dag_id = unique("door_af_docker").replace("-", "_")
    operator = "ImagegateDockerOperator"
    prelude = ""
    extra = ""
    if variant == "tamper":
        operator = "Tampered"
        prelude = textwrap.dedent(f'''
            class Tampered(ImagegateDockerOperator):
                def launch(self, context):
                    self.image = {ctx.images.other!r}  # after the gate, before the launch
                    return super().launch(context)
            ''')
    elif variant == "tamper-host":
        operator = "Tampered"
        prelude = textwrap.dedent(f'''
            class Tampered(ImagegateDockerOperator):
                @property
                def cli(self):  # the engine client the provider calls, wrapped after imagegate's
                    gated = super().cli

                    class AfterHardening:
                        def __getattr__(self, name):
                            return getattr(gated, name)

                        def create_host_config(self, **kwargs):
                            host = gated.create_host_config(**kwargs)  # hardened by imagegate…
                            host.update({TAMPERED_HOST!r})  # …and weakened after it
                            return host

                    return AfterHardening()
            ''')
    elif variant == "docker-sock":
        prelude = "from docker.types import Mount"
        extra = f"mounts=[Mount(source={_engine_socket(ctx)!r}, target='/sock', type='bind')],"
    elif variant:
        raise ValueError(variant)
    source = textwrap.dedent('''
        import pendulum
        from airflow.sdk import dag
        from airflow_plugin import ImagegateDockerOperator
        {prelude}
        @dag(dag_id={dag_id!r}, schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False)
        def d():
            {operator}(task_id="t", image={image!r}, auto_remove="never", mount_tmp_dir=False, {extra})
        d()
        ''').format(prelude=prelude, dag_id=dag_id, operator=operator, image=image,
                     extra=extra)
    dags = ctx.tmp / dag_id
    dags.mkdir()
    (dags / f"{dag_id}.py").write_text(source)
    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    result = ctx.airflow.dags_test(dag_id, dags)
    return _outcome(result.returncode == 0, result.stdout + result.stderr, _docker_record(ctx.docker, ctx.images.repo, since))


def dagster_docker(ctx: Ctx, image: str, variant: str) -> Outcome:
    other = ctx.images.other

    class Tampered(ImagegateDockerClient):
        def _create_container(self, client: Any, image: str, *args: Any, **kwargs: Any) -> Any:
            if variant == "tamper":
                image = other
            else:  # tamper-host: container_kwargs as imagegate hardened them, then weakened
                kwargs["container_kwargs"] = {**(kwargs.get("container_kwargs") or {}), "privileged": True,
                                              "volumes": ["/var/run/docker.sock:/sock"]}
            return super()._create_container(client, image, *args, **kwargs)

    container_kwargs = {"volumes": [f"{_engine_socket(ctx)}:/sock"]} if variant == "docker-sock" else None
    if variant not in ("", "tamper", "tamper-host", "docker-sock"):
        raise ValueError(variant)

    @dg.asset(name=unique("door_dg_docker").replace("-", "_"))
    def job(context: dg.AssetExecutionContext, pipes: ImagegateDockerClient):  # dagster reads the annotations
        return pipes.run(context=context, image=image, container_kwargs=container_kwargs).get_materialize_result()

    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    client = (Tampered if variant.startswith("tamper") else ImagegateDockerClient)(remove=False)
    result = dg.materialize([job], resources={"pipes": client}, raise_on_error=False)
    error = "" if result.success else str(result.get_step_failure_events()[0].event_specific_data.error)
    return _outcome(result.success, error, _docker_record(ctx.docker, ctx.images.repo, since))


class _TamperingEngine:
    """The engine client ``imagegate run``'s core (``run_container``) takes, changing the create after
    imagegate built and hardened it: another image ("tamper"), or a weaker host config ("tamper-host")."""

    def __init__(self, api: Any, variant: str, other: str) -> None:
        self._api, self._variant, self._other = api, variant, other

    def __getattr__(self, name: str) -> Any:
        return getattr(self._api, name)

    def create_host_config(self, **kwargs: Any) -> Any:
        host = self._api.create_host_config(**kwargs)
        if self._variant == "tamper-host":
            host.update(TAMPERED_HOST)
        return host

    def create_container(self, **kwargs: Any) -> Any:
        if self._variant == "tamper":
            kwargs["image"] = self._other
        return self._api.create_container(**kwargs)


def cli_docker(ctx: Ctx, image: str, variant: str) -> Outcome:
    """``imagegate run`` as a user runs it; a tampered launch goes through the core run the command calls,
    with a wrapped engine client (the command takes none: its extension point is the Python API)."""
    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    if variant in ("tamper", "tamper-host"):
        policy = imagegate.Policy()
        try:
            plan = imagegate.plan_launch(imagegate.ImageSource(image=image), policy=policy)
            out = io.BytesIO()
            imagegate.run_container(plan, imagegate.RunSpec(remove=False), policy=policy, stdout=out, stderr=out,
                                    client=_TamperingEngine(ctx.docker.api, variant, ctx.images.other))
            ok, error = True, ""
        except imagegate.ImagegateError as exc:
            ok, error = False, str(exc)
    elif variant in ("", "docker-sock"):
        mount = ["-v", f"{_engine_socket(ctx)}:/sock"] if variant == "docker-sock" else []
        result = run_cli("run", "--keep", *mount, image, cwd=ctx.tmp)  # kept: its record is read below
        ok, error = result.returncode == 0, result.stdout + result.stderr
    else:
        raise ValueError(variant)
    return _outcome(ok, error, _docker_record(ctx.docker, ctx.images.repo, since))


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


def airflow_kubernetes(ctx: Ctx, image: str, variant: str) -> Outcome:
    if variant not in ("", "tamper"):
        raise ValueError(variant)
    tamper = variant == "tamper"
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


def dagster_kubernetes(ctx: Ctx, image: str, variant: str) -> Outcome:
    import contextlib

    if variant not in ("", "tamper"):
        raise ValueError(variant)
    tamper = variant == "tamper"

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


DOORS: dict[str, Callable[[Ctx, str, str], Outcome]] = {
    "airflow-docker": airflow_docker,
    "airflow-kubernetes": airflow_kubernetes,
    "cli-docker": cli_docker,
    "dagster-docker": dagster_docker,
    "dagster-kubernetes": dagster_kubernetes,
}
DOCKER_DOORS = sorted(door for door in DOORS if door.endswith("-docker"))


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
    outcome = DOORS[door](ctx, image, "")
    assert not outcome.ok
    assert "REFUSED" in outcome.error or "refused" in outcome.error, outcome.error[-3000:]
    assert check in outcome.error
    assert outcome.created == [], f"{door} created {outcome.created} for a refused image"


@pytest.mark.parametrize("door", sorted(DOORS))
def test_every_door_launches_the_checked_digest_hardened(ctx: Ctx, door: str) -> None:
    outcome = DOORS[door](ctx, ctx.images.good, "")
    assert outcome.ok, outcome.error[-3000:]
    assert len(outcome.created) == 1
    assert outcome.hardening == [], outcome.hardening
    plan = imagegate.plan_launch(imagegate.ImageSource(image=ctx.images.good), backend="kubernetes")
    assert outcome.running and all(imagegate._gate.reported_digest(r) in plan.image_ids for r in outcome.running), outcome.running


@pytest.mark.parametrize("door", sorted(DOORS))
def test_every_door_refuses_a_tampered_launch_and_removes_it(ctx: Ctx, door: str) -> None:
    outcome = DOORS[door](ctx, ctx.images.good, "tamper")
    assert not outcome.ok
    assert "not the checked image" in outcome.error or "unchecked image" in outcome.error, outcome.error[-3000:]
    assert outcome.gone, f"{door} left {outcome.created} behind"
    assert outcome.started == [], f"{door} started {outcome.started}"


@pytest.mark.parametrize("door", DOCKER_DOORS)
def test_every_docker_door_refuses_a_bind_of_the_engines_socket_and_creates_nothing(ctx: Ctx, door: str) -> None:
    outcome = DOORS[door](ctx, ctx.images.good, "docker-sock")
    assert not outcome.ok
    assert "docker.sock is a container engine's API socket" in outcome.error, outcome.error[-3000:]
    assert "sock-link" in outcome.error and "allowed-host-paths" in outcome.error  # names the mount and the fix
    assert outcome.created == [], f"{door} created {outcome.created} for a refused mount"


@pytest.mark.parametrize("door", DOCKER_DOORS)
def test_every_docker_door_checks_the_engines_record_of_the_host_config(ctx: Ctx, door: str) -> None:
    """The request was hardened; what the engine recorded was not. The record decides: removed, never started."""
    outcome = DOORS[door](ctx, ctx.images.good, "tamper-host")
    assert not outcome.ok
    assert "HostConfig.Privileged is true" in outcome.error, outcome.error[-3000:]
    assert "docker.sock is a container engine's API socket" in outcome.error
    assert "removed without starting" in outcome.error
    assert len(outcome.created) == 1 and outcome.gone, f"{door} left {outcome.created} behind"
    assert outcome.started == [], f"{door} started {outcome.started}"
