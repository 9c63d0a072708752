"""The table catalog: logical table names -> Delta locations (or Unity Catalog names).

Every job reads and writes through it, so moving from a laptop lakehouse folder to a cluster's
object store or to Unity Catalog is a configuration change, not a code change.

Logical names are `layer.table` (for example `raw.impressions`, `truth.impressions`). Under a
lakehouse root they live at `<root>/<layer>/<table>`; with a Unity Catalog prefix
`catalog.schema` they become the managed table `catalog.schema.<layer>_<table>`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from delta import exceptions as delta_errors
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from core import faults, manifest
from core.paths import default_lakehouse

# Delta's commit conflicts (its optimistic concurrency control); the classes share no base in Python
COMMIT_CONFLICTS = (
    delta_errors.DeltaConcurrentModificationException,
    delta_errors.ConcurrentWriteException,
    delta_errors.MetadataChangedException,
    delta_errors.ProtocolChangedException,
    delta_errors.ConcurrentAppendException,
    delta_errors.ConcurrentDeleteReadException,
    delta_errors.ConcurrentDeleteDeleteException,
    delta_errors.ConcurrentTransactionException,
)
# commits that leave a table's rows as they were (maintenance), so a job's outputs stay "unchanged"
SAME_ROWS_OPERATIONS = ("VACUUM START", "VACUUM END", "OPTIMIZE")
_NAME = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")


class CatalogError(ValueError):
    pass


def is_remote(root: str) -> bool:
    """True for URIs such as s3://bucket/x, abfss://..., dbfs:/x (not a local folder)."""
    return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]+:/", root) is not None


@dataclass(frozen=True)
class TableHead:
    """A table's latest commit: its version, the `larr` run that made it (None: made outside one)
    and Delta's operation metrics (rows written, rows merged, ...)."""

    version: int
    writer: manifest.RunTag | None
    metrics: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class TableCatalog:
    root: str
    unity_prefix: str | None = None  # "catalog.schema" to use Unity Catalog tables
    # the versions this process resolved for reading (a run records them as its inputs)
    reads: dict[str, int] = field(default_factory=dict, compare=False, hash=False, repr=False)
    # runs known to have completed (a completed run stays completed, so the cache never goes stale)
    _completed: set[str] = field(default_factory=set, compare=False, hash=False, repr=False)
    # commits read from Delta's history, by (location, version): a commit never changes, so a
    # table whose latest version is already here needs no history query (each costs a Spark job)
    _commits: dict[tuple[str, int], TableHead] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )

    @classmethod
    def resolve(cls, lakehouse: str | None = None, unity_prefix: str | None = None) -> TableCatalog:
        """Root from the argument, else $LARR_LAKEHOUSE, else the checkout's lakehouse/ (core/paths.py)."""
        root = lakehouse or default_lakehouse()
        if not is_remote(root):
            root = str(Path(root).expanduser().resolve())
        prefix = unity_prefix or os.environ.get("LARR_UNITY_CATALOG") or None
        if prefix and prefix.count(".") != 1:
            raise CatalogError(f"unity catalog prefix must be 'catalog.schema', got {prefix!r}")
        return cls(root=root, unity_prefix=prefix)

    def check_writable(self) -> None:
        """Fail early, naming the path, when a local lakehouse root cannot be written."""
        if is_remote(self.root):
            return
        path = Path(self.root)
        blocking = next((p for p in (path, *path.parents) if p.exists()), None)
        if blocking is not None and not blocking.is_dir():
            raise CatalogError(f"lakehouse {self.root} cannot be a folder: {blocking} is a file")
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / ".write-probe"
            probe.write_text("ok")
            probe.unlink()
        except OSError as err:
            raise CatalogError(f"lakehouse {self.root} is not writable: {err.strerror}") from None

    # -- naming -------------------------------------------------------------------------------
    @staticmethod
    def _check(name: str) -> tuple[str, str]:
        if not _NAME.match(name):
            raise CatalogError(f"table name must be 'layer.table' in lower snake case, got {name!r}")
        layer, table = name.split(".")
        return layer, table

    def location(self, name: str) -> str:
        layer, table = self._check(name)
        return f"{self.root.rstrip('/')}/{layer}/{table}"

    def unity_name(self, name: str) -> str | None:
        layer, table = self._check(name)
        return f"{self.unity_prefix}.{layer}_{table}" if self.unity_prefix else None

    # -- access -------------------------------------------------------------------------------
    def exists(self, spark: SparkSession, name: str) -> bool:
        uc = self.unity_name(name)
        if uc:
            return spark.catalog.tableExists(uc)
        return DeltaTable.isDeltaTable(spark, self.location(name))

    def delta(self, spark: SparkSession, name: str) -> DeltaTable:
        uc = self.unity_name(name)
        return DeltaTable.forName(spark, uc) if uc else DeltaTable.forPath(spark, self.location(name))

    def read(self, spark: SparkSession, name: str, version: int | None = None) -> DataFrame:
        if not self.exists(spark, name):
            raise CatalogError(
                f"table {name} does not exist at {self.unity_name(name) or self.location(name)}"
            )
        uc = self.unity_name(name)
        if version is None:
            version = self.version(spark, name)
        reader = spark.read.format("delta").option("versionAsOf", version)
        return reader.table(uc) if uc else reader.load(self.location(name))

    def head(self, spark: SparkSession, name: str) -> TableHead | None:
        """The latest commit of a table, or None when it does not exist yet.

        The latest version comes from Delta's log snapshot (milliseconds, no Spark job); the
        commit's facts from the history only the first time this catalog sees that version."""
        if not self.exists(spark, name):
            return None
        location = self.location(name)
        version = self._snapshot_version(spark, name)
        if version is not None and (location, version) in self._commits:
            return self._commits[(location, version)]
        row = self.delta(spark, name).history(1).select("version", "userMetadata", "operationMetrics").first()
        commit = TableHead(
            version=int(row["version"]),
            writer=manifest.RunTag.parse(row["userMetadata"]),
            metrics=dict(row["operationMetrics"] or {}),
        )
        self._commits[(location, commit.version)] = commit
        return commit

    def _snapshot_version(self, spark: SparkSession, name: str) -> int | None:
        """The latest version by Delta's own log snapshot, through the JVM; None where there is no
        JVM to ask (Spark Connect), for Unity Catalog names, or if this Delta's API differs (the
        caller then reads the history, as it would without this shortcut)."""
        jvm = getattr(spark, "_jvm", None)
        if jvm is None or self.unity_name(name):
            return None
        try:
            log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, self.location(name))
            empty = jvm.scala.Option.empty()
            return int(log.update(False, empty, empty).version())
        except Exception:  # noqa: BLE001 - any failure of the shortcut falls back to the history
            return None

    def data_changed_since(self, spark: SparkSession, name: str, version: int) -> bool:
        """True when a commit after `version` changed the table's rows (VACUUM and OPTIMIZE commit
        too, but the rows stay the same); also when the table is gone or `version` is unknown."""
        head = self.head(spark, name)
        if head is None or head.version < version:
            return True
        if head.version == version:
            return False
        later = self.delta(spark, name).history(head.version - version).where(F.col("version") > version)
        return not later.where(~F.col("operation").isin(*SAME_ROWS_OPERATIONS)).isEmpty()

    def latest_version(self, spark: SparkSession, name: str) -> int | None:
        head = self.head(spark, name)
        return None if head is None else head.version

    def version(self, spark: SparkSession, name: str) -> int | None:
        """The version readers use, or None when the table does not exist yet.

        The latest, unless it was committed by a `larr` run that has not completed (killed between
        its table commits, failed, or still running elsewhere): then the version published by the
        last completed run, so a layer is always read as one consistent set (core/manifest.py).
        This process's own run reads what it has just written.
        """
        head = self.head(spark, name)
        if head is None:
            return None
        version = head.version
        if head.writer is not None and not self._is_completed(spark, head.writer):
            version = manifest.published_version(spark, self, name)
            if version is None:
                raise CatalogError(
                    f"table {name} was last written by `larr {head.writer.job}` run {head.writer.run_id}, "
                    f"which did not complete, and no completed run wrote it before: run "
                    f"`larr {head.writer.job}` again"
                )
        self.reads[name] = version
        return version

    def consistent_version(self, spark: SparkSession, name: str) -> int | None:
        """The newest version not committed by a `larr` run that did not complete (None: there is none)."""
        limit = 16
        while True:  # newest first; a killed run leaves a few commits, so one short read usually does
            rows = self.delta(spark, name).history(limit).select("version", "userMetadata").collect()
            for row in rows:
                writer = manifest.RunTag.parse(row["userMetadata"])
                if writer is None or self._is_completed(spark, writer):
                    return int(row["version"])
            if len(rows) < limit:
                return None
            limit *= 8

    def roll_back_unfinished(self, spark: SparkSession, name: str) -> tuple[TableHead, int | None] | None:
        """Undo the commits that runs which did not complete left on top of a table: Delta RESTORE to
        its newest consistent version, or a DELETE of every row when it has none. Returns the head it
        found and the version restored (None: emptied), or None when there was nothing to undo.

        Only for a caller that holds the table's lock (core/locks.py): a run that has not completed
        may be one still running, and this would undo its work."""
        head = self.head(spark, name)
        if head is None or head.writer is None or self._is_completed(spark, head.writer):
            return None
        target = self.consistent_version(spark, name)
        with self.committing(spark, name):
            if target is None:
                self.delta(spark, name).delete()
            else:
                self.delta(spark, name).restoreToVersion(target)
        return head, target

    def _is_completed(self, spark: SparkSession, writer: manifest.RunTag) -> bool:
        if writer.run_id in self._completed or writer == manifest.current_tag(spark):
            return True
        if manifest.is_completed(spark, self, writer.run_id):
            self._completed.add(writer.run_id)
            return True
        return False

    def last_commit_rows(self, spark: SparkSession, name: str) -> int | None:
        """Rows written by the table's latest commit (from the Delta log, no extra scan)."""
        commit = self.head(spark, name)
        rows = None if commit is None else commit.metrics.get("numOutputRows")
        return int(rows) if rows is not None else None

    def write(
        self,
        df: DataFrame,
        name: str,
        *,
        partition_by: list[str] | None = None,
        replace_where: str | None = None,
    ) -> int:
        """Overwrite a table (or, with `replace_where`, only the matching partitions).

        Delta commits atomically: a write that fails leaves the previous version readable.
        Returns the new table version.
        """
        faults.before_commit()
        writer = df.write.format("delta").mode("overwrite")
        if replace_where:
            writer = writer.option("replaceWhere", replace_where)
        else:
            writer = writer.option("overwriteSchema", "true")
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        uc = self.unity_name(name)
        with self.committing(df.sparkSession, name):
            if uc:
                writer.saveAsTable(uc)
            else:
                writer.save(self.location(name))
        faults.after_commit()
        return self.latest_version(df.sparkSession, name)

    @contextmanager
    def committing(self, spark: SparkSession, name: str) -> Iterator[None]:
        """A commit to `name` that lost a race with another writer (Delta's optimistic concurrency
        control refused it; nothing of it is visible) becomes one line naming the other writer."""
        try:
            yield
        except COMMIT_CONFLICTS as err:
            head = self.head(spark, name)
            other = (
                f"`larr {head.writer.job}` run {head.writer.run_id}"
                if head is not None and head.writer is not None
                else "a writer outside larr"
            )
            raise CatalogError(
                f"table {name}: {other} committed to it while this run was writing ({type(err).__name__}); "
                f"nothing of this run was committed to {name}: run the command again once the other "
                "run has finished"
            ) from None
