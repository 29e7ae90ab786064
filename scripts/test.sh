#!/usr/bin/env bash
# The README's second command (`make test`): installs what the tests need, starts the local stack
# (Docker Engine, two registries, base images), runs the whole suite, and stops what it started.
# Extra arguments go to pytest, e.g. `scripts/test.sh tests/unit -x`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/env.sh dev airflow dagster
was_up=1
.venv/bin/python scripts/stack.py status >/dev/null 2>&1 || was_up=0
.venv/bin/python scripts/stack.py up
if [ "$was_up" = 0 ] && [ -z "${IMAGEGATE_KEEP_STACK:-}" ]; then
    trap '.venv/bin/python scripts/stack.py down >/dev/null || true' EXIT
fi
# shellcheck disable=SC1091
source "${IMAGEGATE_STACK_DIR:-/tmp/imagegate-stack}/stack.env"
.venv/bin/python -m pytest "$@"
