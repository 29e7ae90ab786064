"""Spark on the test cluster (``k8s.py up --spark`` or ``IMAGEGATE_K8S_SPARK=1``): the parts, the kubeflow
spark-operator controller run out of cluster as a service of ``up``, its CRDs, and the RBAC of the controller and
of Spark drivers.

* The parts come from :mod:`localstack.spark_parts` (built once, cached): kube-proxy, CoreDNS, the operator and
  its CRDs, and the Spark home unpacked from the pyspark sdist, which the controller's ``spark-submit`` runs from.
* The CRDs are server-side applied by the cluster's ``kubectl`` (they are YAML; these scripts are stdlib-only)
  and waited for until Established, before the controller starts.
* The controller runs as the user ``imagegate:spark-operator`` (a client certificate), with the kubeflow chart's
  rules in the test namespace only (plus reading namespaces and CRDs), ``--namespaces=<test namespace>``, no
  leader election, no webhook, no UI Service, health probes on loopback, no metrics. Its ``spark-submit`` reads
  ``KUBECONFIG``, which therefore carries that user's key in SEC1 form (spark-submit's fabric8 client cannot read
  PKCS#8 EC keys), and always targets ``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT``: the API
  server on loopback. A missing kubeconfig makes the controller panic, so it is checked before the start.
* The ServiceAccount ``spark`` in the test namespace is what drivers run as: it may manage pods, services,
  configmaps and persistentvolumeclaims there (executor pods and their config map), nothing else.

Without a webhook the operator does not apply ``spec.driver.securityContext`` / ``podSecurityContext`` (only its
mutating webhook does); under the namespace's restricted Pod Security Standard, set the security context through
``spec.driver.template`` / ``spec.executor.template`` (pod templates, Spark >= 3.0.0): see docs/spark.md.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import time
from pathlib import Path

from .host import K8sError, elapsed, run, say, which
from .k8s_api import Api, apply_objects, wait
from .k8s_config import cluster_role, namespaced_role
from .k8s_pki import write_kubeconfig
from .k8s_services import http_ok
from .k8s_state import save_state
from .procs import proc_matches, spawn, stop_process

OPERATOR_USER = "imagegate:spark-operator"
DRIVER_SERVICE_ACCOUNT = "spark"
SPARK_TMP = Path("/tmp/spark")  # where the controller writes pod templates (fixed in its code)
JAVA_MIN = 17  # Spark 4 runs on Java 17 or 21

# The kubeflow chart's controller rules (charts/spark-operator-chart/templates/controller/_helpers.tpl,
# spark-operator.controller.policyRules, v2.5.2) plus NetworkPolicies, granted in the test namespace only.
OPERATOR_RULES = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "create", "update", "delete"]},
    {"apiGroups": [""], "resources": ["configmaps"],
     "verbs": ["get", "list", "watch", "create", "update", "patch"]},
    {"apiGroups": [""], "resources": ["services"],
     "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "update", "patch"]},
    {"apiGroups": ["extensions", "networking.k8s.io"], "resources": ["ingresses"],
     "verbs": ["get", "create", "update", "delete"]},
    # Not in the chart: Spark 4's spark-submit server-side applies a NetworkPolicy per application (ingress to the
    # driver from its executors only). Nothing enforces NetworkPolicies on this cluster's plain bridge.
    {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"],
     "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
    {"apiGroups": ["sparkoperator.k8s.io"], "resources": ["sparkapplications"],
     "verbs": ["get", "list", "watch", "create", "delete"]},
    {"apiGroups": ["sparkoperator.k8s.io"], "resources": ["scheduledsparkapplications", "sparkconnects"],
     "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["sparkoperator.k8s.io"],
     "resources": ["sparkapplications/status", "sparkconnects/status", "scheduledsparkapplications/status",
                   "sparkapplications/finalizers", "scheduledsparkapplications/finalizers",
                   "sparkconnects/finalizers"],
     "verbs": ["update"]},
]
OPERATOR_CLUSTER_RULES = [
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["get"]},
]
# What a Spark driver does in its namespace (executor pods, their config map, on-demand volume claims).
DRIVER_RULES = [
    {"apiGroups": [""], "resources": ["pods", "services", "configmaps", "persistentvolumeclaims"],
     "verbs": ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]},
]


# ---------------------------------------------------------------------------------------------- parts


def java_major(version_output: str) -> int | None:
    """The major version in ``java -version`` output (``openjdk version "17.0.15" …`` -> 17, ``"1.8.0_…"`` -> 8)."""
    m = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major


def host_java() -> str:
    """The host's ``java`` for the controller's spark-submit, checked to be Java 17 or newer."""
    java = which("java")
    if not java:
        raise K8sError(f"the spark-operator's spark-submit needs Java {JAVA_MIN}+ on this machine: "
                       "sudo apt-get install -y openjdk-17-jre-headless")
    out = run([java, "-version"], check=False, timeout=60, what="java -version")
    major = java_major(out.stderr + out.stdout)
    if major is None or major < JAVA_MIN:
        raise K8sError(f"{java} is Java {major}; Spark 4 needs Java {JAVA_MIN} or 21: "
                       "sudo apt-get install -y openjdk-17-jre-headless")
    return java


def ensure_spark_parts() -> dict:
    """Build (once) or find every part of the cluster services and the operator; {name: path} plus timings."""
    from . import spark_parts  # its imports (docker, images) are not needed by a plain cluster

    t0 = time.monotonic()
    parts = {
        "kube_proxy": str(spark_parts.ensure_kube_proxy()),
        "coredns": str(spark_parts.ensure_coredns()),
        "spark_operator": str(spark_parts.ensure_spark_operator()),
        "crds": [str(p) for p in spark_parts.operator_crds()],
        "spark_home": str(spark_parts.ensure_spark_home()[0]),
        "socat": which("socat") or "socat",
        "java": host_java(),
        "operator_version": spark_parts.OPERATOR_VERSION,
    }
    parts["seconds"] = round(time.monotonic() - t0, 1)
    return parts


# -------------------------------------------------------------------------------------------- install


def install_crds(state: dict, timeout: float) -> None:
    kubectl = str(Path(state["binaries"]["bin_dir"]) / "kubectl")
    kubeconfig = str(Path(state["state_dir"]) / "admin.kubeconfig")
    crds = state["parts"]["crds"]
    if not crds:
        raise K8sError("the spark-operator's CRDs are missing from its cache; rebuild: "
                       "PYTHONPATH=scripts python3 -m localstack.spark_parts spark-operator")
    args = [kubectl, "--kubeconfig", kubeconfig, "apply", "--server-side", "--force-conflicts",
            "--field-manager=imagegate-k8s"]
    for crd in crds:
        args += ["-f", crd]
    run(args, timeout=120, what="kubectl apply --server-side (spark-operator CRDs)")
    names = [f"crd/{Path(c).name.split('_', 1)[1].removesuffix('.yaml')}.{Path(c).name.split('_', 1)[0]}"
             for c in crds]
    run([kubectl, "--kubeconfig", kubeconfig, "wait", "--for=condition=Established", f"--timeout={int(timeout)}s",
         *names], timeout=timeout + 30, what="kubectl wait (spark-operator CRDs Established)")


def rbac_objects(namespace: str) -> list[dict]:
    return [
        *cluster_role("imagegate:spark-operator", OPERATOR_CLUSTER_RULES, OPERATOR_USER),
        *namespaced_role("imagegate:spark-operator", namespace, OPERATOR_RULES,
                         {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": OPERATOR_USER}),
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": DRIVER_SERVICE_ACCOUNT, "namespace": namespace}},
        *namespaced_role("spark-driver", namespace, DRIVER_RULES,
                         {"kind": "ServiceAccount", "name": DRIVER_SERVICE_ACCOUNT, "namespace": namespace}),
    ]


def check_operator_kubeconfig(path: Path) -> None:
    """The controller panics on a missing kubeconfig and spark-submit fails on a PKCS#8 key: refuse both here."""
    try:
        config = json.loads(path.read_text())
        key = base64.b64decode(config["users"][0]["user"]["client-key-data"])
    except (OSError, ValueError, KeyError, IndexError) as exc:
        raise K8sError(f"the spark-operator's kubeconfig {path} is missing or unreadable ({exc}); re-run up") from None
    if b"BEGIN EC PRIVATE KEY" not in key:
        raise K8sError(f"the spark-operator's kubeconfig {path} does not carry a SEC1 EC key, which spark-submit "
                       "needs (its client cannot read PKCS#8 keys)")


# ---------------------------------------------------------------------------------------------- start


def operator_argv(binary: str, kubeconfig: Path, namespace: str, health_port: int) -> list[str]:
    return [binary, "controller", "start", f"--kubeconfig={kubeconfig}", f"--namespaces={namespace}",
            "--leader-election=false", f"--health-probe-bind-address=127.0.0.1:{health_port}",
            "--metrics-bind-address=0", "--enable-ui-service=false", "--zap-log-level=info"]


def operator_env(state: dict, kubeconfig: Path, home: Path) -> dict[str, str]:
    """The controller's environment: what its spark-submit needs, and nothing of the caller's but PATH/LANG."""
    parts = state["parts"]
    java_bin = str(Path(os.path.realpath(parts["java"])).parent)
    return {
        "PATH": f"{java_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(home),
        "SPARK_HOME": parts["spark_home"],
        "JAVA_HOME": str(Path(java_bin).parent),
        "KUBECONFIG": str(kubeconfig),
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(state["ports"]["apiserver"]),
    }


def start_operator(sdir: Path, state: dict, api: Api, namespace: str, timeout: float) -> None:
    t0 = time.monotonic()
    state["spark_tmp_existed"] = SPARK_TMP.exists()
    install_crds(state, timeout)
    apply_objects(api, rbac_objects(namespace))
    kubeconfig = sdir / "spark-operator.kubeconfig"
    pki = sdir / "pki"
    write_kubeconfig(kubeconfig, state["server"], pki, "spark-operator", namespace, key=pki / "spark-operator.sec1.key")
    check_operator_kubeconfig(kubeconfig)
    home = sdir / "spark-operator-home"
    home.mkdir(mode=0o700, exist_ok=True)
    port = state["ports"]["spark_operator_health"]
    cmd = operator_argv(state["parts"]["spark_operator"], kubeconfig, namespace, port)
    _, rec = spawn(cmd, sdir / "logs" / "spark-operator.log", env=operator_env(state, kubeconfig, home))
    state["procs"]["spark_operator"] = rec
    save_state(sdir, state)
    say(f"spark-operator: started pid {rec['pid']}")
    wait("the spark-operator's /readyz", lambda: http_ok(port, "/readyz"), timeout, {"spark_operator": rec})
    say(f"spark-operator {state['parts'].get('operator_version')}: ready in {elapsed(t0)} (namespace {namespace}, "
        f"drivers run as the service account {DRIVER_SERVICE_ACCOUNT})")


def operator_healthy(state: dict) -> tuple[bool, str]:
    if not proc_matches((state.get("procs") or {}).get("spark_operator")):
        return False, "spark_operator is not running"
    if not http_ok((state.get("ports") or {}).get("spark_operator_health", 0), "/readyz"):
        return False, "the spark-operator is not ready"
    return True, "running"


def stop_operator(state: dict) -> None:
    stop_process("spark_operator", (state.get("procs") or {}).get("spark_operator"), 20)


def cleanup_spark_tmp(state: dict) -> None:
    """The controller's pod templates (``/tmp/spark/<submission id>/``), when ``/tmp/spark`` was not there before."""
    if "spark_tmp_existed" in state and not state["spark_tmp_existed"] and SPARK_TMP.is_dir():
        shutil.rmtree(SPARK_TMP, ignore_errors=True)
