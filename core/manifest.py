"""The run manifest: which table versions each completed job run published, and what it read.

A job that writes several tables commits them one by one (Delta commits one table at a time), then
appends its rows here, last. Every table commit made inside a `larr` run carries the run's tag in
Delta's commit `userMetadata` (`larr:<job>:<run id>`, a session setting), so a reader can tell a
table version written by a run that never reached its manifest commit (killed, failed) and read the
version the last completed run published instead (core/catalog.py `TableCatalog.version`).

The manifest is itself a Delta table, `meta.runs`, written by blind appends (concurrent runs do not
conflict): one row per (run, output table) with the run's input versions and config hash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, is_dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from core import faults

if TYPE_CHECKING:
    from core.catalog import TableCatalog

MANIFEST = "meta.runs"
# Delta writes this session setting into every commit's userMetadata (Delta's own mechanism)
RUN_TAG_CONF = "spark.databricks.delta.commitInfo.userMetadata"
TAG_PREFIX = "larr"


@dataclass(frozen=True)
class RunTag:
    """The writer of a table commit: a `larr` job and its run id (the MLflow run id)."""

    job: str
    run_id: str

    def render(self) -> str:
        return f"{TAG_PREFIX}:{self.job}:{self.run_id}"

    @classmethod
    def parse(cls, text: str | None) -> RunTag | None:
        """None for a commit made outside a `larr` run (a notebook, a test, another tool)."""
        parts = (text or "").split(":")
        if len(parts) != 3 or parts[0] != TAG_PREFIX or not parts[2]:
            return None
        return cls(job=parts[1], run_id=parts[2])


def current_tag(spark: SparkSession) -> RunTag | None:
    return RunTag.parse(spark.conf.get(RUN_TAG_CONF, None))


def set_tag(spark: SparkSession, tag: RunTag | None) -> None:
    if tag is None:
        spark.conf.unset(RUN_TAG_CONF)
    else:
        spark.conf.set(RUN_TAG_CONF, tag.render())


# The project's packages: their sources are the code a job's outputs depend on.
CODE_PACKAGES = ("core", "etl", "features", "training", "jobs")


def source_digest(root: Path, packages: tuple[str, ...] = CODE_PACKAGES) -> str:
    """sha256 over the .py and .yaml files of `packages` under `root` (relative path and content,
    in path order): a checkout's edits change it, not only a release's version number."""
    digest = hashlib.sha256()
    for package in packages:
        for path in sorted((root / package).rglob("*")):
            if path.suffix in (".py", ".yaml") and path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@cache
def code_revision() -> str:
    """The package version and the digest of the sources this process runs (once per process;
    from a checkout or an installed wheel alike)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = version("larr-platform")
    except PackageNotFoundError:
        package = "unknown"
    root = Path(__file__).resolve().parent.parent
    if root.is_file():  # imported from an archive (spark-submit --py-files larr.zip): its bytes
        return f"{package}+{hashlib.sha256(root.read_bytes()).hexdigest()[:16]}"
    return f"{package}+{source_digest(root)}"


def config_hash(config: Any) -> str:
    """A stable hash of a typed config and of the code (new code may change the outputs: a re-run
    after any source change re-computes)."""
    data = asdict(config) if is_dataclass(config) else config
    text = json.dumps({"config": data, "code": code_revision()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunRecord:
    """A completed run as the manifest holds it."""

    job: str
    run_id: str
    committed_at: datetime
    config_hash: str
    outputs: dict[str, int]
    inputs: dict[str, int]


def read_all(spark: SparkSession, catalog: TableCatalog) -> DataFrame | None:
    """The whole manifest at its latest version (it is the source of truth, not subject to itself)."""
    if not catalog.exists(spark, MANIFEST):
        return None
    uc = catalog.unity_name(MANIFEST)
    return spark.read.table(uc) if uc else spark.read.format("delta").load(catalog.location(MANIFEST))


def commit(
    spark: SparkSession,
    catalog: TableCatalog,
    tag: RunTag,
    outputs: dict[str, int],
    inputs: dict[str, int],
    config_digest: str,
) -> None:
    """Publish a run's output versions: the one commit that makes them what readers read."""
    if not outputs:
        return
    now = datetime.now(UTC).replace(tzinfo=None)
    inputs_json = json.dumps(dict(sorted(inputs.items())))
    rows = [
        (tag.job, tag.run_id, t, int(v), now, config_digest, inputs_json) for t, v in sorted(outputs.items())
    ]
    frame = spark.createDataFrame(
        rows,
        "job string, run_id string, table string, version long, committed_at timestamp, "
        "config_hash string, input_versions string",
    )
    faults.before_commit()
    writer = frame.write.format("delta").mode("append")
    uc = catalog.unity_name(MANIFEST)
    writer.saveAsTable(uc) if uc else writer.save(catalog.location(MANIFEST))
    faults.after_commit()


def is_completed(spark: SparkSession, catalog: TableCatalog, run_id: str) -> bool:
    manifest = read_all(spark, catalog)
    return manifest is not None and not manifest.filter(F.col("run_id") == run_id).limit(1).isEmpty()


def published_version(spark: SparkSession, catalog: TableCatalog, table: str) -> int | None:
    """The version of `table` that the newest completed run published, or None."""
    manifest = read_all(spark, catalog)
    if manifest is None:
        return None
    row = (
        manifest.filter(F.col("table") == table)
        .orderBy(F.col("committed_at").desc(), F.col("version").desc())
        .select("version")
        .first()
    )
    return None if row is None else int(row["version"])


def last_run(spark: SparkSession, catalog: TableCatalog, job: str) -> RunRecord | None:
    """The newest completed run of `job` (a handful of rows: one per output table)."""
    manifest = read_all(spark, catalog)
    if manifest is None:
        return None
    newest = (
        manifest.filter(F.col("job") == job).orderBy(F.col("committed_at").desc()).select("run_id").first()
    )
    if newest is None:
        return None
    rows = manifest.filter(F.col("run_id") == newest["run_id"]).collect()
    return RunRecord(
        job=job,
        run_id=newest["run_id"],
        committed_at=rows[0]["committed_at"],
        config_hash=rows[0]["config_hash"],
        outputs={r["table"]: int(r["version"]) for r in rows},
        inputs=json.loads(rows[0]["input_versions"]),
    )


def still_current(spark: SparkSession, catalog: TableCatalog, record: RunRecord) -> bool:
    """Whether a completed run's outputs are what readers see now: no commit changed the rows of an
    output since, and every input it read is still at the version it read."""
    if any(catalog.data_changed_since(spark, t, v) for t, v in record.outputs.items()):
        return False  # a table was written since (by hand, or by a run that did not complete)
    return all(catalog.version(spark, t) == v for t, v in record.inputs.items())
