"""Signatures and vulnerability attestations required by the policy, through ``airflow dags test`` on the real
engine: an image not signed by the policy's key is refused and no container is created (the engine's events are the
oracle); one signed by the REAL cosign (v3.1.3, bundle format) whose signed scan is clean runs, and its ``imagegate``
XCom record carries both results — who signed which digest, which scan counted — as the audit page shows them; one
signed but with a CRITICAL finding in its signed scan is refused, the finding listed, and nothing is created.

Needs the local stack and cosign (see tests/integration/test_cosign_stack.py); under CI=true a missing one fails.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.airflow.conftest import AirflowHome, Events, airflow_home, push_image  # noqa: F401 - fixtures
from tests.integration.conftest import Stack, unique
from tests.integration.test_cosign_stack import _sign, cosign, keys  # noqa: F401 - fixtures
from tests.support.vuln_attestation import attest

pytestmark = pytest.mark.integration

DAG = '''
from __future__ import annotations
import datetime as dt
import json
from pathlib import Path
from airflow.sdk import dag, task
from airflow_plugin import ImagegateDockerOperator

@dag(dag_id={dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False)
def signatures():
    # the policy (imagegate.toml beside this file) requires the `good` key's signature on {registry}/airflow-signed/**
    signed = ImagegateDockerOperator(task_id="signed", image={signed!r}, mount_tmp_dir=False, auto_remove="force")
    unsigned = ImagegateDockerOperator(task_id="unsigned", image={unsigned!r}, mount_tmp_dir=False,
                                       command=["echo", "must-not-run"])
    critical = ImagegateDockerOperator(task_id="critical", image={critical!r}, mount_tmp_dir=False,
                                       command=["echo", "must-not-run-either"])

    @task(trigger_rule="all_done")
    def record(ti=None):
        Path({out!r}).write_text(json.dumps({{
            "signed": ti.xcom_pull(task_ids="signed", key="imagegate"),
            "unsigned": ti.xcom_pull(task_ids="unsigned", key="imagegate"),
            "critical": ti.xcom_pull(task_ids="critical", key="imagegate"),
            "return_value": ti.xcom_pull(task_ids="signed"),
        }}))

    [signed, unsigned, critical] >> record()

signatures()
'''


@pytest.fixture(scope="module")
def images(stack: Stack, docker_client: Any, cosign: Path, keys: dict[str, Path]) -> dict[str, str]:
    repo = f"airflow-signed/{unique('sig')}"
    signed = push_image(docker_client, stack, repo, "1.0.0", "signed-task-ran")
    unsigned = push_image(docker_client, stack, repo, "1.0.1", "unsigned")
    critical = push_image(docker_client, stack, repo, "1.0.2", "critical")
    for digest, clean in ((signed, True), (critical, False)):
        _sign(cosign, keys["good.key"], f"{stack.registry}/{repo}@{digest}", legacy=False)
        attest(cosign, keys["good.key"], f"{stack.registry}/{repo}@{digest}", clean=clean)
    return {"repo": f"{stack.registry}/{repo}", "signed": f"{stack.registry}/{repo}:1.0.0", "signed_digest": signed,
            "unsigned": f"{stack.registry}/{repo}:1.0.1", "unsigned_digest": unsigned,
            "critical": f"{stack.registry}/{repo}:1.0.2", "critical_digest": critical}


def test_unsigned_is_refused_before_any_container_and_signed_runs_with_its_record(
        airflow_home: AirflowHome, tmp_path: Path, stack: Stack, keys: dict[str, Path], images: dict[str, str],
        events: Events) -> None:
    dag_id = unique("signatures").replace("-", "_")
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "cosign.pub").write_bytes(keys["good"].read_bytes())
    rules = f'images = ["{stack.registry}/airflow-signed/**"]\nkeys = ["cosign.pub"]\n'
    (dags / "imagegate.toml").write_text(f'[[signatures]]\n{rules}\n[[vulnerabilities]]\n{rules}max-severity = "high"\n')
    out = tmp_path / "record.json"
    (dags / "signatures.py").write_text(DAG.format(dag_id=dag_id, registry=stack.registry, signed=images["signed"],
                                                   unsigned=images["unsigned"], critical=images["critical"],
                                                   out=str(out)))
    result = airflow_home.dags_test(dag_id, dags)
    output = result.stdout + result.stderr
    seen = json.loads(out.read_text())

    # unsigned: refused, nothing created from it
    assert "imagegate refused" in output and "FAIL   signature" in output, output[-6000:]
    assert "must-not-run" not in output and "must-not-run-either" not in output
    refused = seen["unsigned"]
    assert refused["verdict"] == "refused" and refused["launched"] is None
    assert refused["digest"] == images["unsigned_digest"]
    checks = {c["check"]: c for c in refused["report"]["checks"]}
    assert checks["signature"]["outcome"] == "fail" and "no cosign signature found" in checks["signature"]["message"]
    # no signature, and so no attestation either: a missing attestation is its own outcome
    assert [c for c, v in checks.items() if v["outcome"] == "fail"] == ["signature", "vulnerabilities"]
    assert "no verified vulnerability attestation" in checks["vulnerabilities"]["message"]

    # signed: ran, from the checked digest; the record says who signed it
    assert seen["return_value"] == "signed-task-ran", output[-8000:]
    record = seen["signed"]
    assert record["verdict"] == "passed" and record["launched"]["launched"] == f"{images['repo']}@{images['signed_digest']}"
    signature = {c["check"]: c for c in record["report"]["checks"]}["signature"]
    assert signature["outcome"] == "pass" and "signed by 1 of 1 key(s)" in signature["message"]
    assert signature["details"]["digest"] == images["signed_digest"]
    assert [Path(k).name for k in signature["details"]["signed_by"]] == ["cosign.pub"]
    assert signature["details"]["formats"] == ["bundle"]
    assert "imagegate: signature: signed by" in output  # the task log says who signed, and how
    scan = {c["check"]: c for c in record["report"]["checks"]}["vulnerabilities"]
    assert scan["outcome"] == "pass" and scan["details"]["blocking"] == 0
    assert [Path(k).name for k in scan["details"]["attestation"]["signed_by"]] == ["cosign.pub"]
    assert "imagegate: vulnerabilities: vuln+trivy scan by" in output

    # signed, but its signed scan has a CRITICAL finding: refused by that check alone, the finding in the record
    critical = seen["critical"]
    assert critical["verdict"] == "refused" and critical["launched"] is None
    checks = {c["check"]: c for c in critical["report"]["checks"]}
    assert [c for c, v in checks.items() if v["outcome"] == "fail"] == ["vulnerabilities"]
    assert [f["id"] for f in checks["vulnerabilities"]["details"]["findings"]] == ["CVE-2019-18224"]
    assert "- CVE-2019-18224 critical in libidn2-0" in output  # the task log lists the deciding finding

    # the audit page shows the evidence from the stored records
    import imagegate
    from airflow_plugin.audit._html import Links, evidence, task_page

    assert evidence(record)["signature"][0].startswith("signed by ") and "(bundle)" in evidence(record)["signature"][0]
    assert any(line.startswith("CVE-2019-18224 critical in libidn2-0") for line in evidence(critical)["vulnerabilities"])
    page = task_page(row=imagegate.AuditRow.from_record(critical, dag_id=dag_id, run_id="r", task_id="critical"),
                     raw=critical, message="", links=Links(""))
    assert '<div class="evidence small mono">CVE-2019-18224 critical in libidn2-0' in page
    # and so does `imagegate audit` (the row the plugin's API serves, as text and --json)
    audit = imagegate.AuditRow.from_dict(imagegate.AuditRow.from_record(critical, dag_id=dag_id, run_id="r",
                                                                        task_id="critical").to_dict())
    assert any(line.startswith("CVE-2019-18224 critical in libidn2-0") for line in audit.evidence["vulnerabilities"])
    assert "evidence [vulnerabilities] CVE-2019-18224 critical in libidn2-0" in audit.render_text()
    signed = imagegate.AuditRow.from_record(record, dag_id=dag_id, run_id="r", task_id="signed")
    assert signed.evidence["signature"][0].endswith(f"(bundle) for {images['signed_digest']}")

    created = events.containers(images["repo"])
    assert [e["Actor"]["Attributes"]["image"] for e in created] == [f"{images['repo']}@{images['signed_digest']}"]
