"""``ImagegateK8sClient``: dagster-k8s's ``PipesK8sClient`` behind imagegate's gate.

Imported only when used (``dagster_integration.ImagegateK8sClient``), so
``import dagster_integration`` does not load dagster-k8s or the kubernetes client.

The pod is planned by the core (``imagegate.plan_pod``): the first container runs the checked
digest, every other container (init containers, sidecars of ``base_pod_spec``) is checked and
pinned too, and the restricted Pod Security Standard is applied (your values win where they
satisfy it; one that breaks it is an error naming the field). dagster-k8s's own
:func:`dagster_k8s.pipes.build_pod_body` renders it; :meth:`render_pod` returns that pod without a
cluster, for review and tests. The body is held to the plan right before it is created
(``PodPlan.verify_request``: a pod that is not the plan is never created); once the pod exists, the pod
the API server stored and each container's ``imageID`` are compared with the plan too.

Killed steps leave nothing behind. The pod is labelled ``imagegate.dev/task-key`` (root run and step key)
and annotated with the step's ids. Before a step creates its pod it settles the pods of earlier attempts of
the step (a re-execution of a killed run, a retry; ``imagegate.pod_verdicts``): with ``reattach=True`` (the
default) it follows one that still runs this step's checked images — its logs and its end, as dagster-k8s
follows its own pod — and deletes every other one. An interrupted step deletes its pod (dagster-k8s's
``finally``).
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import dagster as dg
import imagegate
import kubernetes
from dagster._core.pipes.client import PipesClientCompletedInvocation
from dagster._core.pipes.utils import open_pipes_session
from dagster_k8s import PipesK8sClient
from dagster_k8s.client import DEFAULT_WAIT_TIMEOUT, DagsterKubernetesClient, WaitForPodState
from dagster_k8s.models import k8s_snake_case_dict
from dagster_k8s.pipes import DEFAULT_CONTAINER_NAME, build_pod_body, get_pod_name
from dagster_k8s.utils import detect_current_namespace
from dagster_pipes import PipesExtras

from dagster_integration._errors import ImagegateDagsterError, LaunchMismatch
from dagster_integration._invocation import ImagegateInvocation
from dagster_integration._resource import ImagegateResource, Preflight, task_identity

ORCHESTRATOR = "dagster"


def _camel(model: type, value: Mapping[str, Any] | None) -> dict[str, Any]:
    """A pod spec or metadata given in either key case, as the camelCase dict the API server reads.

    dagster-k8s's ``k8s_snake_case_dict`` reads either case (and refuses unknown keys); the way back
    follows the kubernetes client models' own ``attribute_map``/``openapi_types``, so free-form maps
    (labels, ``nodeSelector``, resource limits) keep their keys.
    """
    return _to_camel(model.__name__, k8s_snake_case_dict(model, dict(value))) if value else {}


def _to_camel(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind.startswith("list[") and isinstance(value, list):
        return [_to_camel(kind[5:-1], item) for item in value]
    if kind.startswith("dict(") or kind.startswith("dict[") or kind in ("object", "str", "int", "bool", "float", "datetime"):
        return value
    model = getattr(kubernetes.client, kind, None)
    if model is None or not isinstance(value, Mapping):
        return value
    return {model.attribute_map.get(k, k): _to_camel(model.openapi_types.get(k, "object"), v) for k, v in value.items()}


class ImagegateK8sClient(PipesK8sClient):
    """A ``PipesK8sClient`` that launches only checked, digest-pinned pods under the restricted profile.

    Args:
        imagegate: the settings (policy, lock file, build repository).
        reattach: a pod of an earlier attempt of the step (a killed run's, re-executed) that still runs
            this step's checked images is followed instead of starting a second one (default True); with
            False it is deleted first.
        **kwargs: as for ``PipesK8sClient`` (``env``, ``kubeconfig_file``, ``kube_context``, …).
    """

    def __init__(self, imagegate: ImagegateResource | None = None, *, reattach: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.imagegate = imagegate or ImagegateResource()
        self.reattach = reattach
        self.settled: list[imagegate.Predecessor] = []  # what the last run() did with earlier attempts' pods
        self._local = threading.local()  # the pod being launched, per thread (a client may serve several steps)

    def preflight(
        self,
        context: Any,
        *,
        image: str | None = None,
        lock_name: str | None = None,
        job_directory: str | Path | None = None,
        user: str | None = None,
        dockerfile: str | None = None,
        build_args: Mapping[str, str] | None = None,
    ) -> Preflight:
        """Resolve (or build) and check for the ``kubernetes`` backend (a numeric non-root user is required)."""
        return self.imagegate.preflight(
            context, image=image, lock_name=lock_name, job_directory=job_directory, dockerfile=dockerfile,
            build_args=build_args, backend="kubernetes", user=user,
        )

    def plan_pod(
        self,
        gate: Preflight,
        *,
        command: str | Sequence[str] | None = None,
        base_pod_meta: Mapping[str, Any] | None = None,
        base_pod_spec: Mapping[str, Any] | None = None,
        task: str | None = None,
        identity: imagegate.TaskIdentity | None = None,
        launch_id: str | None = None,
    ) -> imagegate.PodPlan:
        """The pod (camelCase) with every image checked and pinned and the restricted profile applied."""
        spec = _camel(kubernetes.client.V1PodSpec, base_pod_spec)
        containers = spec.setdefault("containers", [{}]) or [{}]
        spec["containers"] = containers
        first = containers[0]
        first.setdefault("name", DEFAULT_CONTAINER_NAME)
        first["image"] = gate.launch
        if command is not None:
            first["command"] = [command] if isinstance(command, str) else list(command)
        pod = {"metadata": _camel(kubernetes.client.V1ObjectMeta, base_pod_meta), "spec": spec}
        try:
            return imagegate.plan_pod(
                pod, policy=gate.policy or self.imagegate.load_policy(), primary=gate.plan, primary_container=first["name"],
                orchestrator=ORCHESTRATOR, task=task, identity=identity, launch_id=launch_id,
            )
        except imagegate.HardeningError as exc:
            raise ImagegateDagsterError(str(exc), setting="base_pod_spec") from exc

    def pod_spec(self, gate: Preflight, base_pod_spec: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """*base_pod_spec* (either key case) in camelCase, every image pinned, under the restricted profile."""
        return self.plan_pod(gate, base_pod_spec=base_pod_spec).pod["spec"]

    def render_pod(
        self,
        gate: Preflight,
        *,
        pod_name: str = "imagegate-preview",
        command: str | Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        base_pod_meta: Mapping[str, Any] | None = None,
        base_pod_spec: Mapping[str, Any] | None = None,
    ) -> Any:
        """The ``V1Pod`` that :meth:`run` would submit (without the Pipes bootstrap variables)."""
        planned = self.plan_pod(gate, command=command, base_pod_meta=base_pod_meta, base_pod_spec=base_pod_spec)
        return self.pod_body(planned, pod_name=pod_name, env_vars={**(self.env or {}), **(env or {})})

    def pod_body(self, planned: imagegate.PodPlan, *, pod_name: str, env_vars: Mapping[str, str]) -> Any:
        """The ``V1Pod`` :meth:`run` creates for *planned*: dagster-k8s's ``build_pod_body`` (it adds the
        environment, its labels and ``restartPolicy``). Whatever this returns — a subclass may override it —
        is held to the plan right before it is created (``PodPlan.verify_request``)."""
        return build_pod_body(
            pod_name=pod_name,
            image=None,
            command=None,
            env_vars=env_vars,
            base_pod_meta=planned.pod["metadata"],
            base_pod_spec=planned.pod["spec"],
        )

    def run(  # type: ignore[override]
        self,
        *,
        context: dg.OpExecutionContext | dg.AssetExecutionContext,
        image: str | None = None,
        lock_name: str | None = None,
        job_directory: str | Path | None = None,
        user: str | None = None,
        extras: PipesExtras | None = None,
        command: str | Sequence[str] | None = None,
        namespace: str | None = None,
        env: Mapping[str, str] | None = None,
        base_pod_meta: Mapping[str, Any] | None = None,
        base_pod_spec: Mapping[str, Any] | None = None,
        dockerfile: str | None = None,
        build_args: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> ImagegateInvocation:
        """Gate, then run the pod to completion; extra *kwargs* go to ``PipesK8sClient.run``.

        Raises:
            ImageRefused: a check failed under enforce (any container's image); no pod was created.
            LaunchMismatch: the pod the cluster created is not the planned one — another image, another user, or
                (hardened) a broken restricted profile — and it was deleted.
        """
        gate = self.preflight(
            context, image=image, lock_name=lock_name, job_directory=job_directory, user=user,
            dockerfile=dockerfile, build_args=build_args,
        )
        task = ",".join(sorted(k.to_user_string() for k in getattr(context, "selected_asset_keys", None) or ())) or None
        identity = task_identity(context)
        planned = self.plan_pod(gate, command=command, base_pod_meta=base_pod_meta, base_pod_spec=base_pod_spec, task=task,
                                identity=identity, launch_id=uuid.uuid4().hex)
        self._local.planned = planned  # the parent's run() calls consume_pod_logs() in this thread
        try:
            followed = self._settle(context, identity, planned, namespace) if identity is not None else None
            inner = self._launch(context, planned, followed, extras=extras, namespace=namespace, env=env, **kwargs)
        except BaseException:
            gate.log_checks(context)  # the step fails: record the checks now
            raise
        finally:
            self._local.planned = None
        return ImagegateInvocation(inner, gate)

    def _settle(self, context: Any, identity: imagegate.TaskIdentity, planned: imagegate.PodPlan,
                namespace: str | None) -> tuple[str, str] | None:
        """Delete the pods of earlier attempts of this step but the one to follow: (namespace, name) or None."""
        self._load_k8s_config()
        client = DagsterKubernetesClient.production_client()
        namespace = namespace or detect_current_namespace(self.kubeconfig_file) or "default"
        listed = client.core_api.list_namespaced_pod(namespace, label_selector=f"imagegate.dev/task-key={identity.key}").items
        pods = [kubernetes.client.ApiClient().sanitize_for_serialization(p) for p in listed]
        self.settled = imagegate.pod_verdicts(pods, planned, reattach=self.reattach)
        followed = None
        for verdict in self.settled:
            if verdict.action == "reattach":
                followed = (namespace, verdict.id)
                context.log.info(f"imagegate: reattaching to {verdict.describe()} of an earlier attempt: {verdict.reason}")
            elif verdict.action == "remove":
                try:
                    client.core_api.delete_namespaced_pod(verdict.id, namespace)
                except kubernetes.client.ApiException as exc:
                    if exc.status != 404:
                        raise
                context.log.info(f"imagegate: deleted {verdict.describe()} of an earlier attempt: {verdict.reason}")
        return followed

    def _launch(self, context: Any, planned: imagegate.PodPlan, followed: tuple[str, str] | None, *,
                extras: PipesExtras | None = None, namespace: str | None = None, env: Mapping[str, str] | None = None,
                ignore_containers: set | None = None, enable_multi_container_logs: bool = False,
                pod_wait_timeout: float = DEFAULT_WAIT_TIMEOUT, delete_pod_on_completion: bool = True) -> Any:
        """dagster-k8s's ``PipesK8sClient.run()``, its calls in its order, with the two seams it lacks: the pod
        body is held to the plan right before it is created (a pod that is not the plan is never created, so
        no kubelet starts any of it), and *followed* — (namespace, name) of an earlier attempt's pod that still
        runs this step's checked images — is adopted instead: its logs from the start through this step's
        Pipes session, its end, its deletion."""
        self._load_k8s_config()
        client = DagsterKubernetesClient.production_client()
        with open_pipes_session(context=context, extras=extras, context_injector=self.context_injector,
                                message_reader=self.message_reader) as pipes_session:
            if followed is not None:
                namespace, pod_name = followed
            else:
                namespace = namespace or detect_current_namespace(self.kubeconfig_file) or "default"
                step = getattr(context, "op_execution_context", context)  # an asset's context wraps the op's
                pod_name = get_pod_name(step.run_id, step.op.name)
                env_vars = {**pipes_session.get_bootstrap_env_vars(), **(self.env or {}), **(env or {})}
                body = self.pod_body(planned, pod_name=pod_name, env_vars=env_vars)
                request = kubernetes.client.ApiClient().sanitize_for_serialization(body)
                named = (request.get("metadata") or {}).get("name") if isinstance(request, dict) else None
                if named != pod_name:  # the pod followed, verified and deleted is the one created
                    raise LaunchMismatch(f"the pod about to be created is named {named!r}, not {pod_name!r}, the pod "
                                         "this step follows and deletes; no pod was created. Fix: keep the name "
                                         "pod_body was given")
                try:
                    planned.verify_request(request)
                except imagegate.LaunchMismatch as exc:
                    raise LaunchMismatch(
                        f"{exc.container} about to be created runs {exc.actual}, not the checked image "
                        f"({' / '.join(exc.expected)}); no pod was created. Something changed the pod after imagegate "
                        "planned it (an override of pod_body, a wrapper): remove that") from exc
                except imagegate.HardeningError as exc:  # another user, a broken profile, not this launch
                    raise LaunchMismatch(f"the pod about to be created is not the one imagegate planned; no pod was "
                                         f"created: {exc}") from exc
                client.core_api.create_namespaced_pod(namespace, body)
            try:
                with self.consume_pod_logs(context=context, client=client, namespace=namespace, pod_name=pod_name,
                                           enable_multi_container_logs=enable_multi_container_logs,
                                           ignore_containers=ignore_containers):
                    client.wait_for_pod(pod_name, namespace, wait_for_state=WaitForPodState.Terminated,
                                        ignore_containers=ignore_containers,
                                        wait_time_between_attempts=self.poll_interval, wait_timeout=pod_wait_timeout)
            finally:
                if delete_pod_on_completion:
                    client.core_api.delete_namespaced_pod(pod_name, namespace)
        return PipesClientCompletedInvocation(pipes_session)

    @contextlib.contextmanager
    def consume_pod_logs(self, context: Any, client: Any, namespace: str, pod_name: str, **kwargs: Any) -> Iterator[None]:
        """The parent's log consumption, with the pod compared with its plan first (as stored by the API
        server) and again once it runs (each container's ``imageID``)."""
        self._verify(client, namespace, pod_name, status=False)
        with super().consume_pod_logs(context=context, client=client, namespace=namespace, pod_name=pod_name, **kwargs):
            self._verify(client, namespace, pod_name, status=True)
            yield

    def _verify(self, client: Any, namespace: str, pod_name: str, *, status: bool) -> None:
        planned: imagegate.PodPlan | None = getattr(self._local, "planned", None)
        if planned is None:
            return
        stored = kubernetes.client.ApiClient().sanitize_for_serialization(
            client.core_api.read_namespaced_pod(pod_name, namespace)
        )
        try:
            (planned.verify_status if status else planned.verify_spec)(stored)
        except (imagegate.LaunchMismatch, imagegate.HardeningError) as exc:  # another image, user or profile
            client.core_api.delete_namespaced_pod(pod_name, namespace)
            raise LaunchMismatch(str(exc)) from exc

