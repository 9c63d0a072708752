"""`larr etl vacuum`: Delta's VACUUM over every table the runs have written, under its retention.

A killed job can leave data files that no committed version references (it wrote them but never
committed). They are harmless, since readers only see committed files, and VACUUM removes them
once they are older than the retention (Delta's default, 7 days, which also keeps time travel
to the last week's versions working). Files are never deleted by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from core import locks, manifest
from core.catalog import TableCatalog, is_remote
from core.rollback import roll_back_unfinished

MIN_RETAIN_HOURS = 168  # Delta refuses less without disabling its own safety check; we keep it on


@dataclass(frozen=True)
class VacuumConfig:
    retain_hours: int = MIN_RETAIN_HOURS  # data files unreferenced for longer than this are removed
    tables: tuple[str, ...] = ()  # `layer.table` names; empty: every table in the run manifest

    def __post_init__(self) -> None:
        if self.retain_hours < MIN_RETAIN_HOURS:
            raise ValueError(
                f"retain_hours must be at least {MIN_RETAIN_HOURS} (Delta's safety limit: a shorter "
                f"retention can delete files a running job or a time-travel read still needs), got {self.retain_hours}"
            )


def tables(spark: SparkSession, catalog: TableCatalog, chosen: tuple[str, ...] = ()) -> list[str]:
    """`chosen`, else the tables `larr` runs published (from the run manifest) and the manifest."""
    if chosen:
        return list(chosen)
    runs = manifest.read_all(spark, catalog)
    if runs is None:
        return []
    names = runs.select("table").distinct().orderBy("table")
    return [row["table"] for row in names.collect()] + [manifest.MANIFEST]  # one row per table


def _target(catalog: TableCatalog, name: str) -> str:
    return catalog.unity_name(name) or f"delta.`{catalog.location(name)}`"


# VACUUM lists a table's files in this many tasks; Spark's default (10,000) makes 10,000 tiny tasks
# per listing even for a small table, so it follows the cluster's cores instead
LISTING_PARALLELISM = "spark.sql.sources.parallelPartitionDiscovery.parallelism"


def run(spark: SparkSession, catalog: TableCatalog, cfg: VacuumConfig, log=print) -> dict:
    previous = spark.conf.get(LISTING_PARALLELISM, None)
    spark.conf.set(LISTING_PARALLELISM, str(2 * spark.sparkContext.defaultParallelism))
    try:
        deleted = _vacuum_all(spark, catalog, cfg, log)
    finally:
        spark.conf.unset(LISTING_PARALLELISM) if previous is None else spark.conf.set(
            LISTING_PARALLELISM, previous
        )
    return {"tables": len(deleted), "files_deleted": sum(deleted.values()), "files_deleted_by_table": deleted}


def _vacuum_all(spark: SparkSession, catalog: TableCatalog, cfg: VacuumConfig, log) -> dict[str, int]:
    listed = tables(spark, catalog, cfg.tables)
    names = [n for n in listed if catalog.exists(spark, n)]
    for name in sorted(set(listed) - set(names)):
        log(f"vacuum: {name}: no such table, skipped")
    if is_remote(catalog.root):  # no locks there: a run that did not complete may still be running
        return _vacuum(spark, catalog, cfg, names, log)
    with locks.writing(catalog.root, "etl vacuum", names):
        # a killed run's commits on top would leave the published version's files unreferenced by the
        # latest one, and VACUUM would delete them after the retention: undo those commits first
        roll_back_unfinished(spark, catalog, [n for n in names if n != manifest.MANIFEST], log)
        return _vacuum(spark, catalog, cfg, names, log)


def _vacuum(
    spark: SparkSession, catalog: TableCatalog, cfg: VacuumConfig, names: list[str], log
) -> dict[str, int]:
    deleted: dict[str, int] = {}
    for name in names:
        target = _target(catalog, name)
        # the dry run lists what the real one will delete (paths only: a count, nothing collected)
        doomed = (
            spark.sql(f"VACUUM {target} RETAIN {cfg.retain_hours} HOURS DRY RUN").agg(F.count("*")).first()[0]
        )
        spark.sql(f"VACUUM {target} RETAIN {cfg.retain_hours} HOURS")
        deleted[name] = int(doomed)
        log(f"vacuum: {name}: {doomed} unreferenced files older than {cfg.retain_hours} h removed")
    return deleted
