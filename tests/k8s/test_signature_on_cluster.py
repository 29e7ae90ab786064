"""Signatures required by the policy, for the Kubernetes pod operator on the real test cluster through
``airflow dags test``: an image the policy's key did not sign creates no pod (the API server never sees one); the
same image signed by the REAL cosign (v3.1.3, legacy format here) runs as a pod, and the record names the signer.

Needs the local stack, the cluster and cosign; under CI=true a missing one fails.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.airflow.conftest import AirflowHome, airflow_home  # noqa: F401 - fixture
from tests.integration.conftest import Stack, build_and_push, unique
from tests.integration.test_cosign_stack import _sign, cosign, keys  # noqa: F401 - fixtures
from tests.k8s.conftest import K8sCluster
from tests.k8s.test_airflow_on_cluster import _pods, _wait_no_pods

pytestmark = [pytest.mark.k8s, pytest.mark.integration]

DAG = '''
from __future__ import annotations
import datetime as dt
import json
from pathlib import Path
from airflow.sdk import dag, task
from airflow_plugin import ImagegateKubernetesPodOperator

CLUSTER = dict(config_file={kubeconfig!r}, cluster_context={context!r}, in_cluster=False, namespace={namespace!r},
               startup_timeout_seconds=120, get_logs=True, do_xcom_push=False)

@dag(dag_id={dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False)
def signatures_on_cluster():
    # imagegate.toml beside this file requires the `good` key's signature on {registry}/k8s-signed/**
    unsigned = ImagegateKubernetesPodOperator(task_id="unsigned", image={unsigned!r}, cmds=["echo", "must-not-run"],
                                              **CLUSTER)
    signed = ImagegateKubernetesPodOperator(task_id="signed", image={signed!r}, cmds=["echo", "signed-pod-ran"],
                                            **CLUSTER)

    @task(trigger_rule="all_done")
    def record(ti=None):
        Path({out!r}).write_text(json.dumps({{t: ti.xcom_pull(task_ids=t, key="imagegate") for t in ("signed", "unsigned")}}))

    [unsigned, signed] >> record()

signatures_on_cluster()
'''


def test_unsigned_creates_no_pod_and_signed_runs(
        tmp_path: Path, airflow_home: AirflowHome, k8s_cluster: K8sCluster, stack: Stack, docker_client: Any,
        cosign: Path, keys: dict[str, Path], nonroot_image: str) -> None:
    repo = f"k8s-signed/{unique('sig')}"
    dockerfile = "FROM {base}\nUSER 10001\n"
    signed = build_and_push(docker_client, stack, dockerfile, repo, "1.0.0")
    unsigned = build_and_push(docker_client, stack, dockerfile + "LABEL unsigned=1\n", repo, "1.0.1")
    _sign(cosign, keys["good.key"], f"{stack.registry}/{repo}@{signed}", legacy=True)

    dag_id = unique("k8s_signatures").replace("-", "_")
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "cosign.pub").write_bytes(keys["good"].read_bytes())
    (dags / "imagegate.toml").write_text(f'[[signatures]]\nimages = ["{stack.registry}/k8s-signed/**"]\n'
                                         'keys = ["cosign.pub"]\n')
    out = tmp_path / "record.json"
    (dags / "signatures.py").write_text(DAG.format(
        kubeconfig=str(k8s_cluster.kubeconfig), context=k8s_cluster.env["IMAGEGATE_K8S_CONTEXT"],
        namespace=k8s_cluster.namespace, dag_id=dag_id, registry=stack.registry, out=str(out),
        signed=f"{stack.registry}/{repo}:1.0.0", unsigned=f"{stack.registry}/{repo}:1.0.1"))
    before = _pods(k8s_cluster)
    events_before = {e.metadata.uid for e in k8s_cluster.core().list_namespaced_event(k8s_cluster.namespace).items}

    result = airflow_home.dags_test(dag_id, dags)
    output = result.stdout + result.stderr
    seen = json.loads(out.read_text())

    assert "imagegate refused" in output and "FAIL   signature" in output, output[-6000:]
    assert "must-not-run" not in output
    assert seen["unsigned"]["verdict"] == "refused" and seen["unsigned"]["launched"] is None
    assert seen["unsigned"]["digest"] == unsigned
    assert "signed-pod-ran" in output, output[-6000:]  # the signed image's pod ran, its log reached the task log
    assert seen["signed"]["verdict"] == "passed" and seen["signed"]["digest"] == signed
    signature = {c["check"]: c for c in seen["signed"]["report"]["checks"]}["signature"]
    assert signature["outcome"] == "pass" and signature["details"]["formats"] == ["legacy"]

    # the API server saw exactly one pod for this DAG: the signed one, from its digest
    new_events = [e for e in k8s_cluster.core().list_namespaced_event(k8s_cluster.namespace).items
                  if e.metadata.uid not in events_before and e.involved_object.kind == "Pod"]
    pods = {e.involved_object.name for e in new_events}
    assert pods and all(name.startswith("signed-") for name in pods), pods  # KPO names a pod after its task
    assert not [e.message for e in new_events if unsigned in (e.message or "")]
    assert _wait_no_pods(k8s_cluster, before) == []
