"""The ``dg`` component for container assets (registered as ``dagster_dg_cli.registry_modules``).

``defs.yaml``::

    type: dagster_integration.components.ContainerAssetComponent
    attributes:
      asset_key: wordcount
      image: "{{ env.WORDCOUNT_IMAGE }}"     # or lock_name: wordcount, or job_directory: ../jobs/wordcount
                                             # (+ repository, build_args, dockerfile)
      command: ["/app/job.py"]
      checks: [image_pinned, image_non_root]  # dockerfile_lint only with job_directory; image_signed,
                                             # image_vulnerabilities only where a policy rule covers the image
      policy_file: imagegate.toml
      backend: docker                         # or kubernetes (+ namespace, kubeconfig_file,
                                              #   kube_context, poll_interval)

The spec is validated when definitions load: unknown keys are errors naming their
path (``attributes.imagee``), exactly one image source must be given, the image
reference must parse, check names and the backend must be known, ``dockerfile_lint``
needs a ``job_directory`` (an image given by reference is not built, so nothing would
be linted), ``image_signed`` / ``image_vulnerabilities`` need a policy whose
``[[signatures]]`` / ``[[vulnerabilities]]`` rules cover the image (the policy is read
when definitions load; an image given as a template or by a lock entry or a build is
matched when it is resolved), and the Kubernetes settings need ``backend: kubernetes``.
Nothing is resolved or launched until the asset is materialized.
"""

# No `from __future__ import annotations`: Dagster reads the asset functions' annotations
# (the context type, resources) at definition time.

import os
from pathlib import Path
from typing import Any, Literal, Optional

import dagster as dg
import imagegate
from pydantic import model_validator

from dagster_integration._asset_checks import CHECK_NAMES, EVIDENCE, evidence_not_runnable, image_check_specs
from dagster_integration._errors import ImagegateDagsterError
from dagster_integration._resource import ImagegateResource

CheckName = Literal["image_pinned", "image_non_root", "image_signed", "image_vulnerabilities", "dockerfile_lint"]
CHECK_MODE_IDS = ("registry", "pinned", "non-root", "lint", "signature", "vulnerabilities")

class ContainerAssetComponent(dg.Component, dg.Model, dg.Resolvable):
    """One asset that runs a container from a checked, digest-pinned image (Docker or Kubernetes)."""

    asset_key: str
    image: Optional[str] = None
    lock_name: Optional[str] = None
    job_directory: Optional[str] = None
    dockerfile: Optional[str] = None
    build_args: dict[str, str] = {}
    command: Optional[list[str]] = None
    env: dict[str, str] = {}
    user: Optional[str] = None
    backend: Literal["docker", "kubernetes"] = "docker"
    namespace: Optional[str] = None
    kubeconfig_file: Optional[str] = None
    kube_context: Optional[str] = None
    poll_interval: Optional[float] = None
    checks: list[CheckName] = ["image_pinned", "image_non_root"]
    blocking_checks: bool = False
    description: Optional[str] = None
    group_name: Optional[str] = None
    deps: list[str] = []
    policy_file: Optional[str] = None
    check_modes: dict[str, Literal["enforce", "warn", "off"]] = {}
    lock_file: Optional[str] = None
    repository: Optional[str] = None

    @model_validator(mode="after")
    def _validate(self) -> "ContainerAssetComponent":
        given = [n for n in ("image", "lock_name", "job_directory") if getattr(self, n)]
        if len(given) != 1:
            raise ValueError(f"name exactly one of image, lock_name, job_directory (got {', '.join(given) or 'none'})")
        if self.image and "{{" not in self.image:
            imagegate.parse_reference(self.image)  # InvalidReference names the reference and the problem
        if self.job_directory and not self.repository:
            raise ValueError("job_directory needs repository (where the built image is pushed)")
        if "dockerfile_lint" in self.checks and not self.job_directory:
            source = "image" if self.image else "lock_name"
            raise ValueError(
                f"checks: dockerfile_lint needs job_directory; with {source} nothing is built, so there is no "
                "Dockerfile to lint and the check could never run. Remove dockerfile_lint from checks, or build "
                "the image here (job_directory + repository)"
            )
        if "dockerfile_lint" in self.checks and self.check_modes.get("lint") == "off":
            raise ValueError("checks: dockerfile_lint cannot run with check_modes {lint: off}; remove one of them")
        k8s_only = [n for n in ("namespace", "kubeconfig_file", "kube_context", "poll_interval") if getattr(self, n) is not None]
        if k8s_only and self.backend != "kubernetes":
            raise ValueError(f"{', '.join(k8s_only)}: only for backend: kubernetes (the backend is {self.backend})")
        if self.poll_interval is not None and not self.poll_interval > 0:
            raise ValueError(f"poll_interval: {self.poll_interval} is not a positive number of seconds")
        for check in self.check_modes:
            if check.replace("_", "-") not in CHECK_MODE_IDS:
                raise ValueError(f"check_modes: unknown check {check!r}; known: {', '.join(CHECK_MODE_IDS)}")
        for name, check in (("image_signed", "signature"), ("image_vulnerabilities", "vulnerabilities")):
            if name in self.checks and self.check_modes.get(check) == "off":
                raise ValueError(f"checks: {name} cannot run with check_modes {{{check}: off}}; remove one of them")
        unknown = sorted(set(self.checks) - set(CHECK_NAMES))
        if unknown:  # pragma: no cover - the Literal already refuses them
            raise ValueError(f"unknown checks {unknown}")
        return self

    def _resource(self, base: Path | None) -> ImagegateResource:
        return ImagegateResource(
            policy_file=_relative_to(base, self.policy_file),
            check_modes=dict(self.check_modes),
            lock_file=_relative_to(base, self.lock_file),
            repository=self.repository,
            build_args=dict(self.build_args),
        )

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        base = Path(context.path) if getattr(context, "path", None) else None
        gate = self._resource(base)
        self._require_evidence(gate)
        job_directory = self.job_directory
        if job_directory and base and not Path(job_directory).is_absolute():
            job_directory = str((base / job_directory).resolve())
        spec = self
        key = dg.AssetKey.from_user_string(self.asset_key)

        @dg.asset(
            key=key,
            description=self.description or f"container asset gated by imagegate ({self.backend})",
            group_name=self.group_name,
            deps=[dg.AssetKey.from_user_string(d) for d in self.deps],
            check_specs=image_check_specs(key, spec.checks, blocking=spec.blocking_checks),
            kinds={"docker" if spec.backend == "docker" else "kubernetes"},
        )
        def _container_asset(context: dg.AssetExecutionContext):  # noqa: ANN202 (dagster reads annotations)
            return spec._run(context, gate, job_directory, base)

        return dg.Definitions(assets=[_container_asset])

    def _require_evidence(self, gate: ImagegateResource) -> None:
        """``image_signed`` / ``image_vulnerabilities`` verify what the policy's rules ask for: refuse them when
        definitions load where nothing would be verified (no such rule, the check off, no rule covering
        ``image``). Never "passed" unverified; the resource checks again once the image is resolved."""
        wanted = [name for name in self.checks if name in EVIDENCE]
        if not wanted:
            return
        policy = gate.load_policy()
        reference = imagegate.parse_reference(self.image) if self.image and "{{" not in self.image else None
        for name in wanted:
            reason = evidence_not_runnable(dg.AssetKey.from_user_string(self.asset_key), name, policy, reference)
            if reason:
                raise ImagegateDagsterError(reason, setting=f"checks ({self.asset_key})")

    def _run(self, context: dg.AssetExecutionContext, gate: ImagegateResource, job_directory: str | None,
             base: Path | None) -> Any:
        source: dict[str, Any] = {"image": self.image, "lock_name": self.lock_name, "job_directory": job_directory}
        if job_directory:
            source["dockerfile"] = self.dockerfile
        if self.backend == "kubernetes":
            from dagster_integration._k8s import ImagegateK8sClient

            k8s = ImagegateK8sClient(gate, **self._k8s_settings(base))
            return k8s.run(context=context, command=self.command, env=self.env, user=self.user, namespace=self.namespace, **source).get_materialize_result()
        from dagster_integration._docker import ImagegateDockerClient

        docker = ImagegateDockerClient(gate)
        return docker.run(context=context, command=self.command, env=self.env, user=self.user, **source).get_materialize_result()

    def _k8s_settings(self, base: Path | None) -> dict[str, Any]:
        """``PipesK8sClient`` arguments: without a kubeconfig or context, dagster-k8s's own default
        (in-cluster config inside a pod, else ``$KUBECONFIG`` / ``~/.kube/config``)."""
        settings: dict[str, Any] = {}
        if self.kubeconfig_file or self.kube_context:
            kubeconfig = os.path.expanduser(self.kubeconfig_file) if self.kubeconfig_file else None
            settings.update(load_incluster_config=False, kube_context=self.kube_context,
                            kubeconfig_file=_relative_to(base, kubeconfig))
        if self.poll_interval is not None:
            settings["poll_interval"] = self.poll_interval
        return settings


def _relative_to(base: Path | None, value: str | None) -> str | None:
    """*value* (a path in defs.yaml) relative to the component's folder, unless absolute."""
    return str((base / value).resolve()) if value and base and not Path(value).is_absolute() else value
