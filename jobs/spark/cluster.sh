#!/usr/bin/env bash
# A Spark standalone cluster on this machine: one master and two workers started from the venv's
# own pyspark (`spark-class`; the pip package ships no start-master.sh), stopped by their pids.
#
#   jobs/spark/cluster.sh up       start (idempotent: a dead worker is started again)
#   jobs/spark/cluster.sh down     stop every process it started
#   jobs/spark/cluster.sh status   the master's view as JSON (workers, applications)
#   jobs/spark/cluster.sh env      the exports spark-submit needs (eval "$(jobs/spark/cluster.sh env)")
#
# Everything lives under $LARR_CLUSTER_DIR (default .spark-cluster/): pids, logs, the workers'
# work folders (each executor's stdout/stderr), the event logs of every application, and the
# conf folder spark-submit reads through SPARK_CONF_DIR (spark-defaults.conf: the jars of .jars/,
# the venv's Python on driver and executors, event logs on; log4j2.properties: WARN).
# Settings: LARR_SPARK_MASTER_PORT (7077), LARR_SPARK_UI_PORT (8080, the workers take the next
# ones), LARR_SPARK_WORKERS (2), LARR_SPARK_WORKER_CORES (1), LARR_SPARK_WORKER_MEMORY (2g).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${LARR_PYTHON:-$ROOT/.venv/bin/python}"
DIR="$(mkdir -p "${LARR_CLUSTER_DIR:-$ROOT/.spark-cluster}" && cd "${LARR_CLUSTER_DIR:-$ROOT/.spark-cluster}" && pwd)"
HOST=127.0.0.1
PORT="${LARR_SPARK_MASTER_PORT:-7077}"
UI_PORT="${LARR_SPARK_UI_PORT:-8080}"
WORKERS="${LARR_SPARK_WORKERS:-2}"
CORES="${LARR_SPARK_WORKER_CORES:-1}"
MEMORY="${LARR_SPARK_WORKER_MEMORY:-2g}"
MASTER="spark://$HOST:$PORT"

die() { echo "cluster.sh: $*" >&2; exit 1; }

spark_home() {
  [ -x "$PY" ] || die "no Python at $PY: run make setup (or set LARR_PYTHON)"
  "$PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))'
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

master_json() { "$PY" - "$UI_PORT" <<'EOF'
import json, sys, urllib.request
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/json/", timeout=2) as response:
        print(json.dumps(json.load(response)))
except OSError:
    sys.exit(1)
EOF
}

alive_workers() {
  master_json 2>/dev/null | "$PY" -c \
    'import json,sys; print(sum(w["state"] == "ALIVE" for w in json.load(sys.stdin)["workers"]))' \
    2>/dev/null || echo 0
}

enough_workers() { [ "$(alive_workers)" -ge "$WORKERS" ]; }

write_conf() {
  local jars
  jars="$(ls "$ROOT"/.jars/*.jar 2>/dev/null | paste -sd, -)"
  [ -n "$jars" ] || die "no jars in $ROOT/.jars: run make setup"
  mkdir -p "$DIR/conf" "$DIR/events" "$DIR/logs"
  cat > "$DIR/conf/spark-defaults.conf" <<EOF
# written by jobs/spark/cluster.sh up; spark-submit reads it through SPARK_CONF_DIR
spark.master                      $MASTER
spark.jars                        $jars
spark.pyspark.python              $PY
spark.pyspark.driver.python       $PY
spark.eventLog.enabled            true
spark.eventLog.dir                file://$DIR/events
spark.eventLog.compress           false
spark.eventLog.rolling.enabled    false
spark.cores.max                   $((WORKERS * CORES))
spark.scheduler.minRegisteredResourcesRatio 1.0
spark.executor.memory             1g
# a small cluster: Delta's log replay in 2 tasks, not 50
spark.databricks.delta.snapshotPartitions 2
EOF
  cat > "$DIR/conf/log4j2.properties" <<'EOF'
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex
EOF
}

wait_for() {  # wait_for <seconds> <command...>
  local deadline=$(( $(date +%s) + $1 )); shift
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}

up() {
  local home; home="$(spark_home)"
  write_conf
  export SPARK_HOME="$home" SPARK_CONF_DIR="$DIR/conf" SPARK_LOG_DIR="$DIR/logs"
  if ! alive "$DIR/master.pid"; then
    nohup "$home/bin/spark-class" org.apache.spark.deploy.master.Master \
      --host "$HOST" --port "$PORT" --webui-port "$UI_PORT" >"$DIR/logs/master.log" 2>&1 &
    echo $! > "$DIR/master.pid"
    wait_for 60 master_json >/dev/null || die "master did not start: see $DIR/logs/master.log"
  fi
  for i in $(seq 1 "$WORKERS"); do
    alive "$DIR/worker-$i.pid" && continue
    mkdir -p "$DIR/work/worker-$i"
    nohup "$home/bin/spark-class" org.apache.spark.deploy.worker.Worker \
      --host "$HOST" --cores "$CORES" --memory "$MEMORY" --webui-port $((UI_PORT + i)) \
      --work-dir "$DIR/work/worker-$i" "$MASTER" >"$DIR/logs/worker-$i.log" 2>&1 &
    echo $! > "$DIR/worker-$i.pid"
  done
  wait_for 60 enough_workers \
    || die "only $(alive_workers) of $WORKERS workers registered: see $DIR/logs/"
  echo "cluster up: $MASTER, $WORKERS workers x $CORES core(s), UI http://$HOST:$UI_PORT, event logs $DIR/events"
}

down() {
  local stopped=0
  for pidfile in "$DIR"/worker-*.pid "$DIR/master.pid"; do
    [ -f "$pidfile" ] || continue
    if alive "$pidfile"; then
      local pid; pid="$(cat "$pidfile")"
      pkill -TERM -P "$pid" 2>/dev/null || true  # a worker's executors
      kill "$pid" 2>/dev/null || true
      wait_for 20 bash -c "! kill -0 $pid 2>/dev/null" || kill -9 "$pid" 2>/dev/null || true
      stopped=$((stopped + 1))
    fi
    rm -f "$pidfile"
  done
  echo "cluster down: stopped $stopped process(es)"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) master_json || die "no master answers on http://$HOST:$UI_PORT" ;;
  env)
    echo "export SPARK_HOME=$(spark_home)"
    echo "export SPARK_CONF_DIR=$DIR/conf"
    echo "export PYSPARK_PYTHON=$PY PYSPARK_DRIVER_PYTHON=$PY"
    ;;
  *) die "usage: jobs/spark/cluster.sh up|down|status|env" ;;
esac
