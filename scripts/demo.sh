#!/usr/bin/env bash
# The README's first command (`make demo`): build -> push -> resolve -> check -> `airflow dags test` of the
# example DAG on local Docker, ending with the pinned reference and its check report.
# Installs what it needs (Python env, Docker Engine, a local registry, base images); needs no public registry.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/env.sh dev airflow dagster  # the same environment as `make test`, so switching between them reinstalls nothing
.venv/bin/python scripts/stack.py up
# shellcheck disable=SC1091
source "${IMAGEGATE_STACK_DIR:-/tmp/imagegate-stack}/stack.env"
export PATH="$PWD/.venv/bin:$PATH"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
REPO="$IMAGEGATE_REGISTRY/examples/wordcount"

step "build and push the example job (example_dags/jobs/wordcount) under a content tag"
PINNED=$(imagegate build example_dags/jobs/wordcount --repository "$REPO" \
    --build-arg "BASE=$IMAGEGATE_PYTHON_IMAGE_DIGEST")
TAGGED="${PINNED%@*}"

step "resolve the tag to an immutable reference"
imagegate resolve "$TAGGED"

step "check it before anything is launched"
imagegate check "$TAGGED" --backend docker
imagegate check "$TAGGED" --backend kubernetes

scripts/demo_airflow.sh
