"""Delta plumbing shared by the embedding jobs: insert-or-update MERGE into an embeddings table
(created on first use) and the shared rejects table.

features.embedding_rejects: one row per input row that could not be embedded, with `source`
(scene, poi or user), `key` (`feature=value` or the id), `text`, `reason` (null value, empty
value, empty text) and `encoder_version`; partitioned by `source`. Each run rewrites the rows of
its (source, encoder version), so the table always describes the latest run.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from core import faults
from core.catalog import TableCatalog

REJECTS = "features.embedding_rejects"
REJECT_COLUMNS = ("source", "key", "text", "reason", "encoder_version")


def blank(column: Column) -> Column:
    """True for null or whitespace-only strings."""
    return column.isNull() | (F.trim(column) == "")


def merge_rows(
    spark: SparkSession,
    catalog: TableCatalog,
    name: str,
    rows: DataFrame,
    keys: tuple[str, ...],
    partition_by: list[str],
    update_when: str | None = None,
) -> tuple[int, int]:
    """MERGE `rows` into `name` on `keys` (insert new keys; update matched rows where `update_when`,
    a condition over t. and s., holds); creates the table on first use. Returns the new version
    and the rows inserted or updated."""
    if not catalog.exists(spark, name):
        version = catalog.write(rows, name, partition_by=partition_by)
        return version, int(catalog.last_commit_rows(spark, name) or 0)
    condition = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
    merge = catalog.delta(spark, name).alias("t").merge(rows.alias("s"), condition)
    if update_when:
        merge = merge.whenMatchedUpdateAll(condition=update_when)
    faults.before_commit()
    with catalog.committing(spark, name):
        merge.whenNotMatchedInsertAll().execute()
    faults.after_commit()
    commit = catalog.head(spark, name)
    changed = int(commit.metrics.get("numTargetRowsInserted", 0)) + int(
        commit.metrics.get("numTargetRowsUpdated", 0)
    )
    return commit.version, changed


def write_rejects(
    spark: SparkSession, catalog: TableCatalog, rejects: DataFrame, source: str, encoder_version: str
) -> tuple[int, int]:
    """Replace the rejects of (`source`, `encoder_version`) with `rejects` (REJECT_COLUMNS).
    Returns the table version and the rows written (from the Delta log, no scan)."""
    where = f"source = '{source}' AND encoder_version = '{encoder_version}'"
    version = catalog.write(
        rejects.select(*REJECT_COLUMNS), REJECTS, partition_by=["source"], replace_where=where
    )
    return version, int(catalog.last_commit_rows(spark, REJECTS) or 0)
