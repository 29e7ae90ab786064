#!/usr/bin/env bash
# The README's second command (`make test`): installs what the tests need, starts the local stack
# (Docker Engine, two registries, base images) and the local Kubernetes cluster, runs the whole suite,
# and stops what it started. Extra arguments go to pytest, e.g. `scripts/test.sh tests/unit -x`.
# IMAGEGATE_KEEP_STACK=1 leaves the stack and cluster running afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/env.sh dev airflow dagster
py=.venv/bin/python
stack_was_up=1; $py scripts/stack.py status >/dev/null 2>&1 || stack_was_up=0
k8s_was_up=1; $py scripts/k8s.py status >/dev/null 2>&1 || k8s_was_up=0
cleanup() {
    [ -n "${IMAGEGATE_KEEP_STACK:-}" ] && return
    [ "$k8s_was_up" = 0 ] && { $py scripts/k8s.py down >/dev/null 2>&1 || true; }
    [ "$stack_was_up" = 0 ] && { $py scripts/stack.py down >/dev/null 2>&1 || true; }
    return 0
}
trap cleanup EXIT
$py scripts/stack.py up
PYTHONPATH=scripts $py -m localstack.browser   # chromium + chromedriver for the Airflow UI tests (apt, once)
PYTHONPATH=scripts $py -m localstack.cosign_tools   # cosign v3.1.3 from the Go module proxy (once, ~5 min)
PYTHONPATH=scripts $py -m localstack.cosign_tools cosign-v2   # cosign v2.6.5, the legacy .sig default (once, ~5 min)
PYTHONPATH=scripts $py -m localstack.trivy_tools   # Trivy v0.74.0 (once, ~7-10 min on 2 cores) + its fixture DB (<1 s)
export IMAGEGATE_K8S_SPARK=1   # k8s.py up --spark: kube-proxy, CoreDNS, spark-operator (+ the Spark image for its tests); ~6 min cold once, cached after
$py scripts/k8s.py up
# shellcheck disable=SC1091
source "${IMAGEGATE_STACK_DIR:-/tmp/imagegate-stack}/stack.env"
eval "$($py scripts/k8s.py env)"
$py -m pytest "$@"
