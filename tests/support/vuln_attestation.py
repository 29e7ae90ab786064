"""A vulnerability attestation made by the REAL cosign for the door tests (Airflow, Dagster, Kubernetes).

    attest(cosign, key, "127.0.0.1:5000/team/app@sha256:…", clean=False)

``cosign attest --type vuln`` (offline: no transparency log) of Trivy's own debian-buster golden report
(tests/fixtures/vulns, one CRITICAL finding: CVE-2019-18224 in libidn2-0), or of the same report with no finding;
scanned now, and naming the image it is attested for, as ``trivy image REF@DIGEST --format cosign-vuln`` writes it
(imagegate refuses a report that names another image).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.integration.test_cosign_stack import _cosign

REPORT = Path(__file__).resolve().parents[1] / "fixtures" / "vulns" / "cosign-vuln-trivy-debian-buster.json"
CRITICAL = "CVE-2019-18224"


def attest(cosign: Path, key: Path, ref: str, *, clean: bool) -> None:
    predicate = json.loads(REPORT.read_text())
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    predicate["metadata"] = {"scanStartedOn": now, "scanFinishedOn": now}
    result = predicate["scanner"]["result"]
    result["ArtifactName"] = ref
    result["Metadata"]["RepoDigests"] = [ref]
    result["Metadata"].pop("ImageID")  # the config digest of the golden file's image, not of this one
    if clean:
        result["Results"] = []
    path = key.parent / f"vuln-{'clean' if clean else 'critical'}.json"
    path.write_text(json.dumps(predicate))
    _cosign(cosign, key.parent, "attest", "--key", str(key), "--use-signing-config=false", "--tlog-upload=false",
            "--yes", "--type", "vuln", "--predicate", str(path), ref)
