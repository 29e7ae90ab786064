#!/usr/bin/env bash
# The Airflow part of the demo: `airflow dags test` of the example DAGs on local Docker.
#   imagegate_wordcount: build -> push -> resolve -> check -> run exactly the built digest -> save the result
#   imagegate_refused:   a :latest and a root image, refused before any container exists
# Needs: the stack's variables (source "$IMAGEGATE_STACK_DIR/stack.env") and `airflow` + `imagegate` on PATH
# (the project's environment with the airflow extra). Uses its own AIRFLOW_HOME, never ~/airflow.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${IMAGEGATE_REGISTRY:?source the stack's stack.env first (python scripts/stack.py up)}"
: "${IMAGEGATE_PYTHON_IMAGE_DIGEST:?source the stack's stack.env first}"
export AIRFLOW_HOME="${AIRFLOW_HOME:-/tmp/airflow-home-demo}"
export AIRFLOW__CORE__DAGS_FOLDER="$PWD/example_dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export IMAGEGATE_EXAMPLE_DATA="${IMAGEGATE_EXAMPLE_DATA:-/tmp/imagegate-example-data}"
export IMAGEGATE_BACKEND=docker
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
LOG_DIR="$(mktemp -d /tmp/imagegate-demo-airflow.XXXXXX)"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
# the interesting lines of an `airflow dags test` log, without the log prefix
highlights() { sed -nE 's/^.*\] (imagegate: .*|imagegate refused.*|\{"file".*|.*runs image.*|Starting docker container.*) \[airflow.*$/  \1/p' "$1"; }

step "airflow db migrate (SQLite in $AIRFLOW_HOME)"
airflow db migrate >"$LOG_DIR/migrate.log" 2>&1 || { tail -50 "$LOG_DIR/migrate.log"; exit 1; }

step "airflow dags test imagegate_wordcount: build -> push -> resolve -> check -> run the digest on Docker"
if ! airflow dags test imagegate_wordcount >"$LOG_DIR/wordcount.log" 2>&1; then
    tail -80 "$LOG_DIR/wordcount.log"
    echo "error: imagegate_wordcount failed (full log: $LOG_DIR/wordcount.log)" >&2
    exit 1
fi
highlights "$LOG_DIR/wordcount.log"
echo "result: $(tr -d ' \n' <"$IMAGEGATE_EXAMPLE_DATA/wordcount.json")"

step "a :latest image and a root image are refused before any container exists"
printf 'FROM %s\nCMD ["id"]\n' "$IMAGEGATE_BUSYBOX_LOCAL_IMAGE" | docker build -q -t "$IMAGEGATE_REGISTRY/examples/rooty:latest" - >/dev/null 2>&1
docker tag "$IMAGEGATE_REGISTRY/examples/rooty:latest" "$IMAGEGATE_REGISTRY/examples/rooty:1.0.0"
docker push -q "$IMAGEGATE_REGISTRY/examples/rooty:latest" >/dev/null
docker push -q "$IMAGEGATE_REGISTRY/examples/rooty:1.0.0" >/dev/null
since=$(date +%s)
if airflow dags test imagegate_refused >"$LOG_DIR/refused.log" 2>&1; then
    echo "error: imagegate_refused succeeded; the images should have been refused" >&2
    exit 1
fi
grep -oE "imagegate refused [^ ]+ before launching anything \(.*\)" "$LOG_DIR/refused.log" | sort -u | cut -c1-400 | sed 's/^/  /'
created=$(docker events --since "$since" --until "$(date +%s)" --filter type=container --filter event=create --format '{{.Actor.Attributes.image}}' | grep -c examples/rooty || true)
echo "containers created from examples/rooty: $created"
[ "$created" = 0 ]

step "done: the pinned reference the DAG launched and its check report"
PINNED=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["images"]["wordcount"]["reference"])' \
    "$IMAGEGATE_EXAMPLE_DATA/imagegate.lock.json")
echo "$PINNED"
imagegate check "$PINNED" --backend docker
