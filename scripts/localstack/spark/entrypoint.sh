#!/bin/bash
# Entrypoint of imagegate's Spark image (scripts/localstack/spark_parts.py): the contract of the official
# apache/spark image's entrypoint.sh, written anew.
#
#   driver ARGS...    spark-submit --deploy-mode client ARGS..., bound to $SPARK_DRIVER_BIND_ADDRESS
#                     (what Spark's Kubernetes driver pods run)
#   executor          a KubernetesExecutorBackend JVM from the SPARK_EXECUTOR_* / SPARK_DRIVER_URL / ... variables
#                     Spark sets on executor pods; JVM options from SPARK_JAVA_OPT_0, _1, ... in numeric order
#   anything else     run as given (e.g. `spark-submit --master local[2] ...`)
#
# Differences from the official script: the image always runs as a non-root user (no gosu), a missing variable
# that the driver or executor needs is an error that names it (instead of an empty flag), the classpath never
# starts with an empty entry, and SPARK_JAVA_OPT_10 sorts after _9.
set -eo pipefail

tini=/usr/bin/tini

die() {
  echo "entrypoint: $*" >&2
  exit 64
}

require() {
  local name
  for name in "$@"; do
    [ -n "${!name}" ] || die "$name is not set (Spark sets it on $mode pods; set it to run '$mode' by hand)"
  done
}

# An arbitrary uid (e.g. OpenShift's) has no passwd entry, which the JVM and Hadoop need: give it one.
fake_passwd_entry() {
  local uid gid wrapper
  uid="$(id -u)"
  getent passwd "$uid" >/dev/null 2>&1 && return 0
  for wrapper in {/usr,}/lib{/*,}/libnss_wrapper.so; do
    if [ -s "$wrapper" ]; then
      gid="$(id -g)"
      NSS_WRAPPER_PASSWD="$(mktemp)"
      NSS_WRAPPER_GROUP="$(mktemp)"
      export LD_PRELOAD="$wrapper" NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP
      printf 'spark:x:%s:%s:%s:%s:/bin/false\n' "$uid" "$gid" "${SPARK_USER_NAME:-anonymous uid}" "$SPARK_HOME" \
        >"$NSS_WRAPPER_PASSWD"
      printf 'spark:x:%s:\n' "$gid" >"$NSS_WRAPPER_GROUP"
      return 0
    fi
  done
}

mode="${1:-}"
case "$mode" in
  driver | executor) ;;
  *) exec "$@" ;;
esac
shift

[ -n "$SPARK_HOME" ] || die "SPARK_HOME is not set"
if [ -z "$JAVA_HOME" ]; then
  JAVA_HOME="$(java -XshowSettings:properties -version 2>&1 >/dev/null | awk '$1 == "java.home" {print $3}')"
fi

classpath="${SPARK_HOME}/jars/*"
[ -z "$SPARK_CLASSPATH" ] || classpath="$SPARK_CLASSPATH:$classpath"
[ -z "$SPARK_EXTRA_CLASSPATH" ] || classpath="$classpath:$SPARK_EXTRA_CLASSPATH"
[ -z "${HADOOP_CONF_DIR+x}" ] || classpath="$HADOOP_CONF_DIR:$classpath"
if [ -n "${SPARK_CONF_DIR+x}" ]; then
  classpath="$SPARK_CONF_DIR:$classpath"
else
  classpath="$SPARK_HOME/conf:$classpath"
fi
classpath="$classpath:$PWD" # SPARK-43540: the working directory is on the executor's classpath
[ -z "$SPARK_DIST_CLASSPATH" ] || classpath="$classpath:$SPARK_DIST_CLASSPATH"

[ -z "${PYSPARK_PYTHON+x}" ] || export PYSPARK_PYTHON
[ -z "${PYSPARK_DRIVER_PYTHON+x}" ] || export PYSPARK_DRIVER_PYTHON

java_opts=()
while IFS= read -r name; do
  [ -n "$name" ] && java_opts+=("${!name}")
done < <(compgen -e | grep -E '^SPARK_JAVA_OPT_[0-9]+$' | sort -t_ -k4,4n)

if [ "$mode" = driver ]; then
  require SPARK_DRIVER_BIND_ADDRESS
  cmd=(
    "$SPARK_HOME/bin/spark-submit"
    --conf "spark.driver.bindAddress=$SPARK_DRIVER_BIND_ADDRESS"
    --conf "spark.executorEnv.SPARK_DRIVER_POD_IP=$SPARK_DRIVER_BIND_ADDRESS"
    --deploy-mode client
    "$@"
  )
else
  require SPARK_EXECUTOR_MEMORY SPARK_DRIVER_URL SPARK_EXECUTOR_ID SPARK_EXECUTOR_CORES SPARK_APPLICATION_ID \
    SPARK_EXECUTOR_POD_IP SPARK_RESOURCE_PROFILE_ID SPARK_EXECUTOR_POD_NAME
  cmd=(
    "$JAVA_HOME/bin/java"
    "${java_opts[@]}"
    -Xms"$SPARK_EXECUTOR_MEMORY"
    -Xmx"$SPARK_EXECUTOR_MEMORY"
    -cp "$classpath"
    org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend
    --driver-url "$SPARK_DRIVER_URL"
    --executor-id "$SPARK_EXECUTOR_ID"
    --cores "$SPARK_EXECUTOR_CORES"
    --app-id "$SPARK_APPLICATION_ID"
    --hostname "$SPARK_EXECUTOR_POD_IP"
    --resourceProfileId "$SPARK_RESOURCE_PROFILE_ID"
    --podName "$SPARK_EXECUTOR_POD_NAME"
  )
fi
fake_passwd_entry
exec "$tini" -s -- "${cmd[@]}"
