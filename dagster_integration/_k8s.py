"""``ImagegateK8sClient``: dagster-k8s's ``PipesK8sClient`` behind the gate.

Imported only when used (``dagster_integration.ImagegateK8sClient``), so
``import dagster_integration`` does not load dagster-k8s or the kubernetes client.

The pod is the one dagster-k8s's :func:`dagster_k8s.pipes.build_pod_body` renders,
given the digest reference and a ``base_pod_spec`` with the restricted Pod
Security Standard merged in (:func:`restricted_pod_spec`). :meth:`render_pod`
returns that pod without a cluster, for review and tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import dagster as dg
from dagster_k8s import PipesK8sClient
from dagster_k8s.pipes import build_pod_body
from dagster_k8s.models import k8s_snake_case_dict
from dagster_pipes import PipesExtras

from dagster_integration._invocation import ImagegateInvocation
from dagster_integration._resource import ImagegateResource, Preflight
from dagster_integration._security import restricted_pod_spec


class ImagegateK8sClient(PipesK8sClient):
    """A ``PipesK8sClient`` that launches only checked, digest-pinned pods under the restricted profile.

    Args:
        imagegate: the settings (policy, lock file, build repository).
        **kwargs: as for ``PipesK8sClient`` (``env``, ``kubeconfig_file``, ``kube_context``, …).
    """

    def __init__(self, imagegate: ImagegateResource | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.imagegate = imagegate or ImagegateResource()

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

    def pod_spec(self, gate: Preflight, base_pod_spec: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """*base_pod_spec* (either key case) in snake_case, with the restricted security context."""
        import kubernetes

        base = k8s_snake_case_dict(kubernetes.client.V1PodSpec, dict(base_pod_spec or {})) if base_pod_spec else {}
        return restricted_pod_spec(gate.user, base)

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
        return build_pod_body(
            pod_name=pod_name,
            image=gate.launch,
            command=command,
            env_vars={**(self.env or {}), **(env or {})},
            base_pod_meta=base_pod_meta,
            base_pod_spec=self.pod_spec(gate, base_pod_spec),
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
            ImageRefused: a check failed under enforce; no pod was created.
        """
        gate = self.preflight(
            context, image=image, lock_name=lock_name, job_directory=job_directory, user=user,
            dockerfile=dockerfile, build_args=build_args,
        )
        pod_spec = self.pod_spec(gate, base_pod_spec)
        try:
            inner = super().run(
                context=context,
                image=gate.launch,
                extras=extras,
                command=command,
                namespace=namespace,
                env=env,
                base_pod_meta=base_pod_meta,
                base_pod_spec=pod_spec,
                **kwargs,
            )
        except BaseException:
            gate.log_checks(context)  # the step fails: record the checks now
            raise
        return ImagegateInvocation(inner, gate)
