#!/usr/bin/env bash
# Resolve Delta Lake's jars once with Maven into a folder that spark.jars points at, so that a
# session starts offline with no Ivy resolution. Jars that pyspark already ships (Spark's own
# Jackson, Hadoop client, Parquet, logging ...) are left out so Spark's versions stay the only ones.
# Usage: resolve_jars.sh <python> <output-dir>
set -euo pipefail
python=$1
out=$2
here=$(cd "$(dirname "$0")" && pwd)
spark_jars=$("$python" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "jars"))')
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$tmp" -Dmdep.useRepositoryLayout=false
artifact() { basename "$1" .jar | sed -E 's/-[0-9][0-9A-Za-z.+_-]*$//'; }
declare -A shipped
for jar in "$spark_jars"/*.jar; do shipped[$(artifact "$jar")]=1; done
mkdir -p "$out"
rm -f "$out"/*.jar
kept=0
for jar in "$tmp"/*.jar; do
    if [[ -z "${shipped[$(artifact "$jar")]:-}" ]]; then cp "$jar" "$out/"; kept=$((kept + 1)); fi
done
echo "resolved $kept Delta Lake jars into $out"
ls "$out" | grep -q '^delta-spark_' || { echo "delta-spark jar missing after resolution" >&2; exit 1; }
