"""The Dagster Spark example (dagster_integration/examples/spark_wordcount.py) materialized for real on the cluster.

``dagster asset materialize`` (as for the other Dagster examples, tests/dagster/test_cli.py) runs the asset, which
pins the conf with ``imagegate.pin_spark_conf`` and runs spark-submit from the cached Spark home with the host's
Java against the test cluster with Spark (``IMAGEGATE_K8S_SPARK=1 python scripts/k8s.py up``). Without the cluster,
the stack, the Spark image or Dagster the tests skip, or fail under ``CI=true``. Checked through the API server
and the Dagster instance, not through the asset's own word:

* the word count runs: the driver pod's log has the counts Python computes from ``words.txt``; the driver (label
  ``spark-app-name``, from the Dagster run id) and its two executors (its ``spark-app-selector``, owned by it) each
  asked for and ran (``imageID``) the digest the tag names; the materialization's metadata carries those digests
  and the pods it read back;
* with the image ``:latest`` or a root image the asset fails, spark-submit never starts (its wrapper leaves no
  mark) and no Spark pod exists afterwards.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

try:
    import dagster as dg
except ImportError:  # the `dagster` extra is not installed
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip("dagster is not installed (uv sync --extra dagster)", allow_module_level=True)

from tests.dagster.conftest import dagster_home  # noqa: F401 - fixture
from tests.integration.conftest import unique
from tests.k8s.conftest import ROOT, K8sCluster, k8s_unavailable

pytestmark = [pytest.mark.k8s, pytest.mark.integration, pytest.mark.spark, pytest.mark.timeout(900)]

DAGSTER = Path(sys.executable).with_name("dagster")
MODULE, ASSET = "dagster_integration.examples.spark_wordcount", "spark_wordcount"
APP_PREFIX = "wordcount-dagster-"  # the example's --name, then the Dagster run id's first 8 characters
WORDS = ROOT / "scripts" / "localstack" / "spark" / "words.txt"
WRAPPER = """#!/bin/sh
# records that spark-submit started, then runs the real one
date > "{marker}"
SPARK_HOME="{home}"; export SPARK_HOME
exec "{home}/bin/spark-submit" "$@"
"""


def expected_counts() -> dict[str, int]:
    return dict(Counter(WORDS.read_text().lower().split()))


def log_counts(log: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\S+)\t(\d+)$", log, re.MULTILINE)}


def push_as(docker_client: Any, source: str, name: str, tag: str) -> str:
    """Push *source* (REPO@DIGEST: pulled, its layers are local) as NAME:TAG; returns the digest pushed."""
    docker_client.images.pull(source).tag(name, tag)
    digest = None
    for line in docker_client.images.push(name, tag=tag, stream=True, decode=True):
        if "error" in line:
            raise RuntimeError(line["error"])
        digest = (line.get("aux") or {}).get("Digest", digest)
    assert digest, "docker push reported no digest"
    docker_client.images.remove(f"{name}:{tag}", noprune=True)
    return str(digest)


@pytest.fixture(scope="module")
def spark_repo(spark_image: str, stack: Any, docker_client: Any) -> tuple[str, str]:
    """(REPO, DIGEST): the Spark image in a repository of its own, as REPO:4.3.0 (and REPO:latest)."""
    repo = f"{stack.registry}/imagegate-test/{unique('spark-dg')}"
    digest = push_as(docker_client, spark_image, repo, "4.3.0")
    assert digest == spark_image.split("@")[1]  # the same manifest: the tag names the image under test
    return repo, digest


@pytest.fixture
def spark_submit(k8s_services: K8sCluster, tmp_path: Path) -> tuple[dict[str, str], Path]:
    """(environment for the asset, the marker a spark-submit start leaves): SPARK_HOME is a wrapper around the
    cached Spark home; KUBECONFIG the cluster's SEC1-key kubeconfig (spark-submit's fabric8 client reads no PKCS#8)."""
    from localstack import spark_parts

    home = spark_parts.ensure_spark_home()[0]
    if not Path(home, "bin", "spark-submit").is_file():
        k8s_unavailable("a Spark home for spark-submit (PYTHONPATH=scripts python3 -m localstack.spark_parts all)")
    kubeconfig = next((p for p in (Path(k8s_services.env["IMAGEGATE_K8S_DIR"]) / n
                                   for n in ("spark-submit.kubeconfig", "spark-operator.kubeconfig")) if p.is_file()), None)
    if kubeconfig is None:
        k8s_unavailable("a kubeconfig spark-submit can read (SEC1 key; IMAGEGATE_K8S_SPARK=1 python scripts/k8s.py up)")
    marker = tmp_path / "spark-submit-started"
    wrapper = tmp_path / "spark-home"
    (wrapper / "bin").mkdir(parents=True)
    (wrapper / "bin" / "spark-submit").write_text(WRAPPER.format(marker=marker, home=home))
    (wrapper / "bin" / "spark-submit").chmod(0o755)
    env = {**k8s_services.env, "KUBECONFIG": str(kubeconfig), "SPARK_HOME": str(wrapper),
           "SPARK_CONF_DIR": str(Path(home, "conf"))}  # what the real spark-submit reads, for the gate to check
    return env, marker


def spark_pods(cluster: K8sCluster) -> dict[str, Any]:
    """Every Spark pod (label spark-role) named for the example's applications (spark-app-name) in the test
    namespace, by name: their drivers (executors take the name the job gives itself: the driver owns them)."""
    pods = cluster.core().list_namespaced_pod(cluster.namespace, label_selector="spark-role").items
    return {p.metadata.name: p for p in pods if (p.metadata.labels or {}).get("spark-app-name", "").startswith(APP_PREFIX)}


def materialize(stack: Any, env: dict[str, str], image: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DAGSTER), "asset", "materialize", "-m", MODULE, "--select", ASSET],
        env={**os.environ, **stack.env, **env, "IMAGEGATE_SPARK_IMAGE": image},
        capture_output=True, text=True, cwd=cwd, timeout=600,
    )


def test_materialize_runs_the_word_count_by_digest(
    dagster_home: Path, tmp_path: Path, stack: Any, k8s_services: K8sCluster, spark_repo: tuple[str, str],
    spark_submit: tuple[dict[str, str], Path],
) -> None:
    (repo, digest), (env, marker) = spark_repo, spark_submit
    core, namespace = k8s_services.core(), k8s_services.namespace
    before = set(spark_pods(k8s_services))
    proc = materialize(stack, env, f"{repo}:4.3.0", tmp_path)
    output = proc.stdout + proc.stderr
    drivers = [pod for name, pod in spark_pods(k8s_services).items() if name not in before]
    try:
        assert proc.returncode == 0, output[-6000:]
        assert marker.is_file()
        with dg.DagsterInstance.get() as instance:
            event = instance.get_latest_materialization_event(dg.AssetKey(ASSET))
        assert event is not None and event.asset_materialization is not None, output[-4000:]
        metadata = {key: value.value for key, value in event.asset_materialization.metadata.items()}
        (driver,) = [p for p in drivers if p.metadata.labels["spark-app-name"] == APP_PREFIX + event.run_id[:8]]
        assert driver.metadata.labels["spark-role"] == "driver"
        # the executors: the driver's application id, and owned by the driver pod (the job renames the app itself)
        selector = f"spark-role=executor,spark-app-selector={driver.metadata.labels['spark-app-selector']}"
        executors = core.list_namespaced_pod(namespace, label_selector=selector).items
        assert len(executors) == 2, [p.metadata.name for p in executors]
        assert all([o.uid for o in p.metadata.owner_references or []] == [driver.metadata.uid] for p in executors)
        ours = {p.metadata.name: p for p in [driver, *executors]}

        pinned = f"{repo}@{digest}"
        for pod in ours.values():
            assert [c.image for c in pod.spec.containers] == [pinned], pod.metadata.name
            statuses = pod.status.container_statuses or []
            assert statuses and all(s.image_id.endswith(f"@{digest}") for s in statuses), pod.metadata.name
            assert pod.spec.security_context.run_as_non_root is True
            assert all(c.security_context.allow_privilege_escalation is False for c in pod.spec.containers)
        assert driver.status.phase == "Succeeded"
        log = bytes(core.read_namespaced_pod_log(driver.metadata.name, namespace, _preload_content=False).data).decode()
        expected = expected_counts()
        assert log_counts(log) == expected, log[-4000:]
        assert f"wordcount: {len(expected)} distinct words, {sum(expected.values())} in all" in log

        assert metadata["imagegate/driver"] == metadata["imagegate/executor"] == pinned
        assert metadata["imagegate/verdict"] == "passed"
        assert metadata["imagegate/pinned"].endswith(f"@{digest}")
        images = metadata["imagegate/images"]
        assert images == {"driver": {"spark-kubernetes-driver": images["driver"]["spark-kubernetes-driver"]},
                          "executor": {"spark-kubernetes-executor": images["executor"]["spark-kubernetes-executor"]}}
        assert all(ref.endswith(f"@{digest}") for plans in images.values() for ref in plans.values())
        assert metadata["imagegate/pods"] == {n: p.metadata.labels["spark-role"] for n, p in ours.items()}
        assert all(p.metadata.labels["imagegate.dev/launch"] == metadata["imagegate/launch"] for p in ours.values())
    finally:  # spark-submit leaves the driver pod, which owns the executors
        for pod in drivers:
            core.delete_namespaced_pod(pod.metadata.name, namespace)


@pytest.mark.parametrize("case", ["latest", "root"])
def test_a_refused_image_fails_the_asset_before_spark_submit(
    dagster_home: Path, tmp_path: Path, stack: Any, k8s_services: K8sCluster, spark_repo: tuple[str, str],
    spark_image: str, root_image: str, docker_client: Any, spark_submit: tuple[dict[str, str], Path], case: str,
) -> None:
    (repo, _), (env, marker) = spark_repo, spark_submit
    if case == "latest":  # a :latest that exists (the same Spark image): refused for the tag, not for a 404
        push_as(docker_client, spark_image, repo, "latest")
        image, check = f"{repo}:latest", "pinned"
    else:
        image, check = root_image, "non-root"
    before = set(spark_pods(k8s_services))
    proc = materialize(stack, env, image, tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-4000:]
    assert re.search(rf"imagegate refused \S+ \(failed: [^)]*\b{re.escape(check)}\b", output), output[-4000:]
    assert "spark.kubernetes.container.image" in output  # the field it came from
    assert not marker.exists()  # spark-submit never started
    assert set(spark_pods(k8s_services)) - before == set()  # and no driver (or executor) pod exists
    with dg.DagsterInstance.get() as instance:
        assert instance.get_latest_materialization_event(dg.AssetKey(ASSET)) is None
