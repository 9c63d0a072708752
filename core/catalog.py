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
from dataclasses import dataclass
from pathlib import Path

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from core.paths import default_lakehouse

_NAME = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")


class CatalogError(ValueError):
    pass


def is_remote(root: str) -> bool:
    """True for URIs such as s3://bucket/x, abfss://..., dbfs:/x (not a local folder)."""
    return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]+:/", root) is not None


@dataclass(frozen=True)
class TableCatalog:
    root: str
    unity_prefix: str | None = None  # "catalog.schema" to use Unity Catalog tables

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
        reader = spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.table(uc) if uc else reader.load(self.location(name))

    def version(self, spark: SparkSession, name: str) -> int | None:
        """Latest Delta version of a table, or None when it does not exist yet."""
        if not self.exists(spark, name):
            return None
        return int(self.delta(spark, name).history(1).select("version").first()[0])

    def last_commit_rows(self, spark: SparkSession, name: str) -> int | None:
        """Rows written by the table's latest commit (from the Delta log, no extra scan)."""
        metrics = self.delta(spark, name).history(1).select("operationMetrics").first()[0] or {}
        rows = metrics.get("numOutputRows")
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
        writer = df.write.format("delta").mode("overwrite")
        if replace_where:
            writer = writer.option("replaceWhere", replace_where)
        else:
            writer = writer.option("overwriteSchema", "true")
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        uc = self.unity_name(name)
        if uc:
            writer.saveAsTable(uc)
        else:
            writer.save(self.location(name))
        return self.version(df.sparkSession, name)
