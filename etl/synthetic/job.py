"""generate: (nothing) -> raw.users, raw.pois, raw.impressions + truth.users, truth.pois, truth.impressions.

Grain: raw/truth.impressions have one row per shown (request, position), partitioned by `dt`;
users and POIs one row per entity. The truth tables hold what no feature table may contain
(latent factors, dish attributes, true click and order probabilities) for evaluation only.
Deterministic for a seed whatever the partitioning; the driver holds no data.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from importlib import resources

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from core.catalog import TableCatalog
from core.dataset_schema import DatasetSchema, load_schema_file
from core.metrics import binned_auc
from core.schema_table import SCHEMA_TABLE, write_schema
from etl.synthetic.config import GenerateConfig
from etl.synthetic.dirty import corrupt_impressions, malformed_pois, malformed_users
from etl.synthetic.entities import build_pois, build_users
from etl.synthetic.impressions import build_requests, expand_to_lists, raw_and_truth, score

TABLES = ("raw.users", "raw.pois", "raw.impressions", "truth.users", "truth.pois", "truth.impressions")
SCHEMA_FILE = resources.files("etl.synthetic") / "schema.yaml"  # a resource: zips on --py-files too


@dataclass(frozen=True)
class World:
    users: DataFrame
    pois: DataFrame
    users_truth: DataFrame
    pois_truth: DataFrame
    scored_impressions: DataFrame  # every impression with its hidden probabilities and labels


def transform(spark: SparkSession, cfg: GenerateConfig) -> World:
    """Build every table of the world as lazy DataFrames (pure: nothing is read or written)."""
    world = cfg.world
    users, users_hidden = build_users(spark, world)
    pois, pois_hidden = build_pois(spark, world)
    requests = build_requests(spark, world, users_hidden)
    return World(
        users=malformed_users(users, world.users, cfg.dirty.fraction),
        pois=malformed_pois(pois, world.pois, cfg.dirty.fraction),
        users_truth=users_hidden,
        pois_truth=pois_hidden,
        scored_impressions=score(expand_to_lists(requests, world), pois_hidden, world),
    )


def impression_tables(scored: DataFrame, cfg: GenerateConfig) -> tuple[DataFrame, DataFrame]:
    """The raw impression log (with the dirty rows) and the truth table, from scored impressions."""
    raw, truth = raw_and_truth(scored)
    return corrupt_impressions(raw, cfg.world.seed, cfg.dirty.fraction), truth


def declared_schema() -> DatasetSchema:
    """The dataset schema the world conforms to, as declared in schema.yaml."""
    return load_schema_file(SCHEMA_FILE)


def world_schema(cfg: GenerateConfig) -> DatasetSchema:
    """The declared schema with the test days of `cfg`."""
    schema = declared_schema()
    return replace(schema, events=replace(schema.events, test_days=cfg.world.days - cfg.test_day + 1))


def test_date(cfg: GenerateConfig) -> dt.date:
    return dt.date.fromisoformat(cfg.world.start_date) + dt.timedelta(days=cfg.test_day - 1)


def run(spark: SparkSession, catalog: TableCatalog, cfg: GenerateConfig, log=print) -> dict:
    """Write the world to the catalog and return the job's key figures."""
    versions = write_world(spark, catalog, cfg, log)
    return summarize(spark, catalog, cfg, versions)


def write_world(spark: SparkSession, catalog: TableCatalog, cfg: GenerateConfig, log=print) -> dict[str, int]:
    """Overwrite every table of the world; returns the new Delta version of each."""
    world = transform(spark, cfg)
    versions = {SCHEMA_TABLE: write_schema(spark, catalog, world_schema(cfg))}
    log(
        f"generate: wrote {SCHEMA_TABLE}: dataset {world_schema(cfg).name!r} (version {versions[SCHEMA_TABLE]})"
    )
    for name, df, partitions in (
        ("raw.users", world.users, None),
        ("raw.pois", world.pois, None),
        ("truth.users", world.users_truth, None),
        ("truth.pois", world.pois_truth, None),
    ):
        versions[name] = catalog.write(df, name, partition_by=partitions)
        _log_write(log, spark, catalog, name, versions[name])
    # each impression table scores the impressions again (each write reads only its columns):
    # with the users joined per request that costs less than caching every scored row and
    # reading it back (16M impressions: the cache spilled and cost more than the second scoring)
    raw, truth = impression_tables(world.scored_impressions, cfg)
    versions["truth.impressions"] = catalog.write(truth, "truth.impressions", partition_by=["dt"])
    _log_write(log, spark, catalog, "truth.impressions", versions["truth.impressions"])
    versions["raw.impressions"] = catalog.write(raw, "raw.impressions", partition_by=["dt"])
    _log_write(log, spark, catalog, "raw.impressions", versions["raw.impressions"])
    return versions


def _log_write(log, spark: SparkSession, catalog: TableCatalog, name: str, version: int) -> None:
    log(f"generate: wrote {name}: {catalog.last_commit_rows(spark, name)} rows (version {version})")


def summarize(spark: SparkSession, catalog: TableCatalog, cfg: GenerateConfig, versions: dict) -> dict:
    impressions = catalog.read(spark, "raw.impressions")
    totals = impressions.agg(
        F.count("*").alias("rows"),
        F.avg("clicked").alias("ctr"),
        (F.sum("ordered") / F.sum("clicked")).alias("cvr"),
    ).first()
    test_truth = catalog.read(spark, "truth.impressions").where(F.col("dt") == F.lit(test_date(cfg)))
    return {
        "impressions": int(totals["rows"]),
        "users": catalog.read(spark, "raw.users").count(),
        "pois": catalog.read(spark, "raw.pois").count(),
        "ctr": round(float(totals["ctr"]), 5),
        "cvr": round(float(totals["cvr"]), 5),
        "bayes_auc_ctr_test": round(binned_auc(test_truth, "p_click", "clicked"), 5),
        "bayes_auc_ctcvr_test": round(binned_auc(test_truth, "p_ctcvr", "ordered"), 5),
        "table_versions": versions,
    }
