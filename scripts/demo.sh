#!/usr/bin/env bash
# The README's first command (`make demo`): build -> push -> resolve -> check -> run, on local Docker.
# Installs what it needs (Python env, Docker Engine, a local registry, base images); needs no public registry.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/env.sh dev
.venv/bin/python scripts/stack.py up
# shellcheck disable=SC1091
source "${IMAGEGATE_STACK_DIR:-/tmp/imagegate-stack}/stack.env"
export PATH="$PWD/.venv/bin:$PATH"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
REPO="$IMAGEGATE_REGISTRY/examples/wordcount"
TAG="0.1.0-$(git rev-parse --short=12 HEAD 2>/dev/null || echo local)"

step "build the example job (example_dags/jobs/wordcount) FROM the digest-pinned python base"
docker build --build-arg "BASE=$IMAGEGATE_PYTHON_IMAGE_DIGEST" -t "$REPO:$TAG" example_dags/jobs/wordcount

step "push $REPO:$TAG"
docker push "$REPO:$TAG"

step "resolve the tag to an immutable reference"
PINNED=$(imagegate resolve "$REPO:$TAG")
echo "$PINNED"

step "check it before anything is launched"
imagegate check "$REPO:$TAG" --backend docker
imagegate check "$REPO:$TAG" --backend kubernetes

step "a root image pushed as :latest is refused (exit 1, nothing launched)"
printf 'FROM %s\nCMD ["id"]\n' "$IMAGEGATE_BUSYBOX_LOCAL_IMAGE" | docker build -q -t "$IMAGEGATE_REGISTRY/examples/rooty:latest" - >/dev/null
docker push -q "$IMAGEGATE_REGISTRY/examples/rooty:latest" >/dev/null
if imagegate check "$IMAGEGATE_REGISTRY/examples/rooty:latest"; then
    echo "error: the root :latest image was not refused" >&2
    exit 1
fi

step "run exactly the checked digest"
docker run --rm --security-opt no-new-privileges --cap-drop ALL "$PINNED"

step "done: the pinned reference and its check report"
imagegate check "$PINNED"
