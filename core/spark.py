"""The one place a SparkSession is made.

Locally it builds `local[*]` with Delta Lake's SQL extension and catalog, pointing `spark.jars`
at the jars that `make setup` resolved once with Maven (no Ivy resolution at start-up, so a
session starts offline). On Databricks it returns the session it is given. Under spark-submit
the submit options own master, jars and Delta settings; what the user left unset gets a sane
default (the application name `larr-<command>` instead of the entry file's name, Delta's
extension and catalog, UTC, shuffle partitions = 2 x the cluster's cores, log level WARN), and before any work it checks, one clear
line each, that the master answers and that the executors' Python can import the project.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from pyspark.sql import SparkSession

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JARS_DIR = REPO_ROOT / ".jars"

SUBMIT_ENTRY = "spark_submit.py"  # spark-submit names an application after its entry file
# what executors must import: the project (a wheel on --py-files, or installed) and the UDFs' needs
EXECUTOR_MODULES = ("core", "etl", "features", "training", "jobs", "pandas", "pyarrow")

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


# what every job assumes, set under spark-submit unless the user set it (the jars come from --jars)
SUBMIT_DEFAULTS = {
    **DELTA_CONFS,
    "spark.sql.session.timeZone": "UTC",  # day boundaries and hours are UTC everywhere
    "spark.sql.legacy.javaCharsets": "true",  # CSV exports in cp1252, GBK, ...
}


class SparkEnvError(RuntimeError):
    """The cluster cannot run the job: master unreachable, executors without the project."""


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


def check_master_reachable(master: str, timeout_s: float = 5.0) -> None:
    """A standalone master (`spark://host:port[,host:port]`) must accept a connection, else one
    line now instead of Spark's minute of retries and a stack trace."""
    if not master.startswith("spark://"):
        return
    reasons = []
    for address in master.removeprefix("spark://").split(","):
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=timeout_s):
                return
        except (OSError, ValueError) as err:
            reasons.append(f"{address}: {err.strerror if isinstance(err, OSError) and err.strerror else err}")
    raise SparkEnvError(
        f"Spark master {master} is unreachable ({'; '.join(reasons)}): start it (make cluster-up) "
        "or pass the master's URL to --master"
    )


def _executor_probe(_rows):
    import importlib

    for name in EXECUTOR_MODULES:
        importlib.import_module(name)
    yield sys.version_info[:2]


def check_executors(spark: SparkSession) -> None:
    """One small task per core: the executors' Python imports the project and its UDF packages."""
    context = spark.sparkContext
    slices = max(1, context.defaultParallelism)
    level = spark.conf.get("spark.log.level", None) or "WARN"
    context.setLogLevel("ERROR")  # a failed probe's worker traceback is summarised below, not logged
    try:
        context.parallelize(range(slices), slices).mapPartitions(_executor_probe).collect()
    except Exception as err:  # noqa: BLE001 - a Py4J error wrapping the worker's traceback
        text = str(err)
        marker = "ModuleNotFoundError: "
        if marker in text:
            missing = text[text.index(marker) + len(marker) :].splitlines()[0]
            reason = f"{missing} (ModuleNotFoundError)"
        else:
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            reason = lines[0] if lines else type(err).__name__
        raise SparkEnvError(
            f"executors of {context.master} cannot run the project's Python: {reason}; ship the wheel "
            "with --py-files and give executors a Python with the pinned packages "
            "(PYSPARK_PYTHON, or --archives with a packed venv)"
        ) from None
    finally:
        context.setLogLevel(level)


def _submitted_session(app_name: str) -> SparkSession:
    """The session of a spark-submit application, with defaults for what the user left unset."""
    from pyspark import SparkConf, SparkContext

    SparkContext._ensure_initialized()  # connects to spark-submit's JVM, so SparkConf sees its options
    submitted = SparkConf()
    check_master_reachable(submitted.get("spark.master", ""))
    builder = SparkSession.builder
    if submitted.get("spark.app.name", SUBMIT_ENTRY) == SUBMIT_ENTRY:
        builder = builder.appName(app_name)
    for key, value in SUBMIT_DEFAULTS.items():
        if not submitted.contains(key):
            builder = builder.config(key, value)
    spark = builder.getOrCreate()
    context = spark.sparkContext
    if not submitted.contains("spark.sql.shuffle.partitions"):
        spark.conf.set("spark.sql.shuffle.partitions", str(2 * max(1, context.defaultParallelism)))
    if not submitted.contains("spark.log.level"):
        context.setLogLevel("WARN")
    if not context.master.startswith("local"):
        check_executors(spark)
    return spark


def get_spark(settings: SparkSettings | None = None, app_name: str | None = None) -> SparkSession:
    """Return the active managed session, or build a local Delta-enabled one. `app_name`
    (`larr-<command>`) names the application unless the user named it."""
    if "DATABRICKS_RUNTIME_VERSION" in os.environ:
        return SparkSession.builder.getOrCreate()
    if is_managed_runtime():
        return _submitted_session(app_name or "larr")
    settings = settings or SparkSettings()
    if app_name:
        settings = replace(settings, app_name=app_name)
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
