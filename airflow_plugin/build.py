"""``ImagegateBuildOperator``: build (or find, when up to date) a job directory's image.

Returns the pinned reference (``REPO:TAG@sha256:…``) through XCom, so a
downstream task can launch exactly what was built::

    build = ImagegateBuildOperator(task_id="build", job_dir="jobs/wordcount", repository=REPO)
    run = ContainerTask(task_id="run", image=build.output)

The build itself is ``imagegate.build_image`` (content-addressed tag; skipped
when the tag already exists in the registry). The built image is then checked
like any other (``check=False`` to skip), so a root image fails here, before a
downstream task would try to launch it. ``lock_name`` (with ``lock_file``)
also records the pin in the lock file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from airflow.sdk import BaseOperator

from airflow_plugin import _gate

if TYPE_CHECKING:
    from imagegate import Policy


class ImagegateBuildOperator(BaseOperator):
    """Build a job directory's image, push it to ``repository``, return its pinned reference.

    :param job_dir: the build context (absolute, or relative to the DAG file's folder). (templated)
    :param repository: where to push, e.g. ``registry.example.com/jobs/wordcount``. (templated)
    :param build_args: Dockerfile ``ARG`` values. (templated)
    :param dockerfile, target, platform, tag_policy: passed to ``imagegate.build_image``.
    :param backend: the backend the image is checked for (``docker`` or ``kubernetes``).
    :param lock_file, lock_name: record the pin in this lock file under this name.
    """

    template_fields: Sequence[str] = ("job_dir", "repository", "build_args")
    imagegate_gated = True

    def __init__(
        self,
        *,
        job_dir: str,
        repository: str,
        dockerfile: str | None = None,
        target: str | None = None,
        build_args: dict[str, str] | None = None,
        platform: str | None = None,
        tag_policy: str = "content",
        backend: str = "docker",
        policy: Policy | str | os.PathLike[str] | None = None,
        check: bool = True,
        lock_file: str | os.PathLike[str] | None = None,
        lock_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if backend not in ("docker", "kubernetes"):
            raise _gate.ImageSourceError(f"backend={backend!r}: use 'docker' or 'kubernetes'", option="backend")
        if lock_file and not lock_name:
            raise _gate.ImageSourceError("lock_file= needs lock_name= (the name to record the pin under)", option="lock_name")
        self.job_dir = job_dir
        self.repository = repository
        self.dockerfile = dockerfile
        self.target = target
        self.build_args = build_args
        self.platform = platform
        self.tag_policy = tag_policy
        self.backend = backend
        self.policy = policy
        self.check = check
        self.lock_file = lock_file
        self.lock_name = lock_name

    def execute(self, context: Any) -> str:
        import imagegate

        start = _gate.dag_folder(self)
        policy = _gate.load_policy(self.policy, start)
        lock = None
        if self.lock_name:
            lock = str(self.lock_file or imagegate.find_lock_file(start) or start / imagegate.LOCK_FILE)
        job_dir = Path(self.job_dir)
        context_dir = job_dir if job_dir.is_absolute() else start / job_dir
        with _gate.airflow_errors(context):
            result = imagegate.build_image(
                context_dir, repository=self.repository, dockerfile=self.dockerfile, target=self.target,
                build_args=self.build_args, platform=self.platform, tag_policy=self.tag_policy, policy=policy,
                progress=self._progress, lock=lock, name=self.lock_name,
            )
            self.log.info("imagegate: %s %s", "built" if result.built else "up to date:", result.pinned)
            if self.check:
                plan = imagegate.plan_launch(imagegate.ImageSource(image=result.pinned), backend=self.backend, policy=policy)
                _gate.log_report(self.log, plan.report)
                _gate.push_record(context, plan.report, None)
        return str(result.pinned)

    def _progress(self, line: str) -> None:
        if not line.startswith("\r"):  # transient progress lines are for terminals
            self.log.info("%s", line.rstrip())
