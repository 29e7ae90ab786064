"""``ImagegateDockerOperator``: the provider's DockerOperator, gated and hardened.

Before anything is created the image is resolved (or built), checked, and
pinned; the container is created from ``REPO@sha256:…`` only, verified against
the checked image before it starts, and runs with ``no-new-privileges`` and
every capability dropped. Importing this module does not import the
Kubernetes provider.
"""

from __future__ import annotations

import os
import time
from functools import cached_property
from typing import TYPE_CHECKING, Any, Sequence

from airflow.providers.docker.operators.docker import DockerOperator

from airflow_plugin import _gate
from airflow_plugin.links import LaunchedImageLink

if TYPE_CHECKING:
    from docker import APIClient

    from imagegate import Policy, Report

DEFAULT_SECURITY_OPT = ("no-new-privileges",)
DEFAULT_CAP_DROP = ("ALL",)


class ImagegateDockerOperator(DockerOperator):
    """Run a container from a checked, digest-pinned image on a Docker Engine.

    Give exactly one of ``image`` (a reference), ``lock_name`` (a name in
    ``imagegate.lock.json``) or ``job_dir`` (a directory with a Dockerfile,
    built and pushed to ``repository``). Every other argument is the
    provider's ``DockerOperator`` argument, plus:

    :param policy: a :class:`imagegate.Policy`, a policy file path, or ``None`` for the nearest
        ``imagegate.toml`` / ``pyproject.toml [tool.imagegate]`` from the DAG file's folder.
    :param lock_file: the lock file for ``lock_name`` (default: ``$IMAGEGATE_LOCK_FILE`` or the nearest).
    :param repository: where ``job_dir`` builds are pushed. (templated)
    :param build_options: extra keyword arguments for ``imagegate.build_image`` (``build_args``,
        ``dockerfile``, ``target``, ``tag_policy``…).
    :param security_opt: Docker security options (default ``["no-new-privileges"]``).
    :param cap_drop: capabilities to drop (default ``["ALL"]``; add back what the job needs with ``cap_add``).

    XCom: ``return_value`` is the provider's (the last log line); ``imagegate`` the record
    ``{"pinned", "launched", "report"}``: the pinned reference, what the engine ran (container
    id, image id) and the check report (pushed with ``launched: null`` when a check refused it).
    """

    template_fields: Sequence[str] = (*DockerOperator.template_fields, "lock_name", "job_dir", "repository")
    operator_extra_links = (LaunchedImageLink(),)
    imagegate_gated = True  # the cluster policy leaves this operator alone
    imagegate_report: Report | None = None  # set by gate()
    imagegate_launched: dict[str, Any] | None = None  # set when the container is created

    def __init__(
        self,
        *,
        image: str | None = None,
        lock_name: str | None = None,
        job_dir: str | None = None,
        repository: str | None = None,
        lock_file: str | os.PathLike[str] | None = None,
        build_options: dict[str, Any] | None = None,
        policy: Policy | str | os.PathLike[str] | None = None,
        security_opt: Sequence[str] | None = None,
        cap_drop: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("privileged"):
            raise _gate.ImageSourceError(
                "privileged=True is refused: it undoes no-new-privileges and cap_drop; add the one capability "
                "the job needs with cap_add= instead",
                option="privileged",
            )
        super().__init__(image=image or "", **kwargs)
        _gate.init_attributes(
            self,
            lock_name=lock_name,
            job_dir=job_dir,
            repository=repository,
            lock_file=lock_file,
            build_options=dict(build_options or {}),
            policy=policy,
            security_opt=list(DEFAULT_SECURITY_OPT if security_opt is None else security_opt),
            cap_drop=list(DEFAULT_CAP_DROP if cap_drop is None else cap_drop),
        )
        # not templated, so validated now; templated values are validated in execute()
        if not any(isinstance(v, str) and "{{" in v for v in (image, lock_name, job_dir)):
            _gate.ImageSource(image, lock_name, job_dir).validate()

    # -- the gate ---------------------------------------------------------------------

    def gate(self, context: Any) -> Report:
        """Resolve (or build) the image, run the checks, and point ``self.image`` at the pinned digest.

        Raises :class:`~airflow_plugin.ImageRefused` (nothing is created) when a check fails.
        """
        started = time.perf_counter()
        start = _gate.dag_folder(self)
        policy = _gate.load_policy(self.policy, start)
        reference = _gate.source_reference(
            _gate.ImageSource(self.image or None, self.lock_name, self.job_dir),
            start=start,
            lock_file=self.lock_file,
            repository=self.repository,
            build_options=self.build_options,
            policy=policy,
            log=self.log,
        )
        report = _gate.run_checks(
            reference, backend="docker", user=_gate.normalise_user(self.user), policy=policy, log=self.log,
            context=context, started=started,
        )
        self.imagegate_report = report
        self.image = _gate.launch_reference(report)
        return report

    def execute(self, context: Any) -> Any:
        self.gate(context)
        return self.launch(context)

    def launch(self, context: Any) -> Any:
        """Run the container from the checked digest (call :meth:`gate` first)."""
        if self.imagegate_report is None:
            raise _gate.ImageSourceError("launch() before gate(): nothing was checked", option="image")
        # A digest never changes, so pulling it again cannot fetch a different image.
        self.force_pull = False
        result = super().execute(context)
        _gate.push_record(context, self.imagegate_report, self.imagegate_launched)
        return result

    # -- the engine client: hardening and verification ----------------------------------

    @cached_property
    def _gated_cli(self) -> _GatedClient:
        return _GatedClient(self.hook.api_client, self)

    @property
    def cli(self) -> APIClient:
        return self._gated_cli  # type: ignore[return-value]


class _GatedClient:
    """The provider's docker ``APIClient`` with three changes; everything else passes through.

    - ``create_host_config`` adds ``security_opt`` and ``cap_drop`` (the provider has no such arguments);
    - ``create_container`` refuses any image but the checked digest, and labels the container
      ``imagegate.dev/pinned`` (the checked reference) and ``imagegate.dev/task`` (``DAG.TASK``);
    - after creating, it reads the container's image id from the engine and removes the container
      without starting it when that is not the checked image.
    """

    def __init__(self, client: APIClient, operator: ImagegateDockerOperator) -> None:
        self._client = client
        self._operator = operator

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def create_host_config(self, **kwargs: Any) -> Any:
        op = self._operator
        kwargs.setdefault("security_opt", list(op.security_opt) or None)
        kwargs.setdefault("cap_drop", list(op.cap_drop) or None)
        return self._client.create_host_config(**kwargs)

    def create_container(self, **kwargs: Any) -> dict[str, Any]:
        op = self._operator
        report = op.imagegate_report
        if report is None or kwargs.get("image") != op.image:
            raise _gate.ImageSourceError(f"refusing to create a container from unchecked image {kwargs.get('image')!r}")
        labels = kwargs.get("labels") or {}
        labels = dict.fromkeys(labels, "") if isinstance(labels, list) else dict(labels)
        dag_id = op.dag_id if op.has_dag() else None
        labels.update({"imagegate.dev/pinned": report.pinned or "", "imagegate.dev/task": f"{dag_id or '-'}.{op.task_id}"})
        kwargs["labels"] = labels
        container = self._client.create_container(**kwargs)
        facts = report.facts or {}
        expected = tuple(d for d in (facts.get("config_digest"), facts.get("manifest_digest"), facts.get("digest")) if d)
        actual = self._client.inspect_container(container["Id"])["Image"]
        if actual not in expected:
            self._client.remove_container(container["Id"], force=True)
            raise _gate.LaunchMismatch(expected, actual, container["Id"])
        op.imagegate_launched = {
            "pinned": report.pinned,
            "launched": op.image,
            "container_id": container["Id"],
            "image_id": actual,
        }
        op.log.info("imagegate: container %s runs image %s (%s)", container["Id"][:12], actual, report.pinned)
        return container
