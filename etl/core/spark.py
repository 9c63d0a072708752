"""The one place a SparkSession is made.

Locally it builds `local[*]` with Delta Lake's SQL extension and catalog, pointing `spark.jars`
at the jars that `make setup` resolved once with Maven (no Ivy resolution at start-up, so a
session starts offline). Under spark-submit or on Databricks it returns the session it is
given and forces no local settings: the cluster owns those.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pyspark.sql import SparkSession

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_JARS_DIR = REPO_ROOT / ".jars"

DELTA_CONFS = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


@dataclass(frozen=True)
class SparkSettings:
    """Settings for a local session; ignored when the session is managed by a cluster."""

    master: str = "local[*]"
    app_name: str = "larr"
    shuffle_partitions: int = 8
    driver_memory: str = "6g"
    extra_confs: dict[str, str] = field(default_factory=dict)


def is_managed_runtime() -> bool:
    """True under spark-submit (it starts Python with a gateway) or on Databricks."""
    return "PYSPARK_GATEWAY_PORT" in os.environ or "DATABRICKS_RUNTIME_VERSION" in os.environ


def delta_jars(jars_dir: Path | None = None) -> list[Path]:
    jars_dir = Path(os.environ.get("LARR_JARS_DIR", jars_dir or DEFAULT_JARS_DIR))
    jars = sorted(jars_dir.glob("*.jar"))
    if not any(j.name.startswith("delta-spark_") for j in jars):
        raise RuntimeError(
            f"Delta Lake jars not found in {jars_dir}: run `make setup` (or set LARR_JARS_DIR)"
        )
    return jars


def get_spark(settings: SparkSettings | None = None) -> SparkSession:
    """Return the active managed session, or build a local Delta-enabled one."""
    if is_managed_runtime():
        return SparkSession.builder.getOrCreate()
    settings = settings or SparkSettings()
    # Python workers (pandas UDFs) run this interpreter, not whatever `python3` is on the PATH
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(settings.master)
        .appName(settings.app_name)
        .config("spark.jars", ",".join(str(j) for j in delta_jars()))
        .config("spark.driver.memory", settings.driver_memory)
        .config("spark.sql.shuffle.partitions", str(settings.shuffle_partitions))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.databricks.delta.snapshotPartitions", "2")
        .config("spark.sql.adaptive.enabled", "true")
        # Arrow moves pandas UDF batches; keep batches modest on a small machine.
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "2048")
        .config("spark.driver.extraJavaOptions", "-Dderby.system.home=/tmp/larr-derby")
        # exports in cp1252, GBK, ... are common: let CSV sources use any JDK charset (Spark 4 default: 7)
        .config("spark.sql.legacy.javaCharsets", "true")
    )
    for key, value in {**DELTA_CONFS, **settings.extra_confs}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark
