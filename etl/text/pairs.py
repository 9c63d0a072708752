"""etl pairs: clean.users, clean.pois, clean.impressions, raw.dataset_schema -> pairs.contrastive;
one row per (pair_type, anchor, positive); partitioned by pair_type.

Stage 2 (contrastive fine-tuning) pairs, the paper's three types and one beyond it, their texts
from the dataset schema (etl/text/item_text.py, etl/text/user_text.py):
- user_user: a = the user's profile text, b = the user's action text (the items of recent
  positives, the scenes of those positives, statistics over clicks and conversions); users with
  a click and both texts.
- poi_poi: a = the item's business text (the synthetic world: name, location, cuisine, menu),
  b = its basic text (introduction, tags); items with both.
- user_poi: a = the user's comprehensive text (profile + actions), b = the item's comprehensive
  text (business + basic); one row per (user, item) the user converted on (clicked, in a log
  without conversions), at most `max_pairs_per_user` per user and then `max_pairs_per_poi` per
  item, chosen by a hash rank.
- scene_poi (beyond the paper; trained only with `weight_scene_poi` > 0): a = the environment of
  ONE order (the user environment slice of that event alone: "Friday, 19:00, Chengdu, home,
  rainy, 12°C, away from home"), b = the ordered item's comprehensive text; anchor = the event,
  at most `max_pairs_per_poi` per item by a hash rank of the event. The scene side of the
  contrastive pairs: what a typed scene (`larr recall`, `larr casestudy`) asks the encoder, and
  what the user_poi pairs blur (all of a user's environments against each of their items).
  Needs the schema's `user_actions.environment`; none without it.
A pair with an empty side is left out; the figures count the users without profile text and the
items without business / basic text (`MISSING_TEXTS`).
Point in time: only impressions with dt < `history_end_date` are read. The held-out split is a
hash of the user (user_user, user_poi and scene_poi: a held-out user's scenes are held out too)
or of the item (poi_poi).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from core.catalog import TableCatalog
from core.dataset_schema import DatasetSchema
from core.schema_table import SCHEMA_TABLE, read_schema
from core.splits import history_end
from etl.text.item_text import COMPREHENSIVE, item_text
from etl.text.slice_text import slice_value
from etl.text.slices import BASIC, BUSINESS
from etl.text.split import SPLITS, check_fraction, heldout_split
from etl.text.user_text import environment_columns, profile_text, user_texts
from etl.tokens import wrap

INPUTS = ("clean.users", "clean.pois", "clean.impressions")
OUTPUT = "pairs.contrastive"
USER_USER, POI_POI, USER_POI, SCENE_POI = "user_user", "poi_poi", "user_poi", "scene_poi"
PAIR_TYPES = (USER_USER, POI_POI, USER_POI, SCENE_POI)
MISSING_TEXTS = ("users_without_profile_text", "items_without_business_text", "items_without_basic_text")
COLUMNS = ("pair_type", "anchor_id", "positive_id", "text_a", "text_b", "split")


@dataclass(frozen=True)
class PairsConfig:
    history_end_date: str = (
        ""  # histories use dt < this; "" = the first test day (the schema's events.test_days)
    )
    last_orders: int = 5  # positives (conversions, else clicks) in a user's history text
    max_pairs_per_user: int = 20  # user_poi pairs per user
    max_pairs_per_poi: int = 50  # user_poi pairs per POI
    heldout_fraction: float = 0.05
    seed: int = 17  # keys the held-out split and the capping rank

    def __post_init__(self) -> None:
        try:
            if self.history_end_date:
                dt.date.fromisoformat(self.history_end_date)
        except ValueError:
            raise ValueError(
                f"history_end_date must be a date YYYY-MM-DD, got {self.history_end_date!r}"
            ) from None
        for name in ("last_orders", "max_pairs_per_user", "max_pairs_per_poi"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        check_fraction("heldout_fraction", self.heldout_fraction)


def history(impressions: DataFrame, history_end_date: str) -> DataFrame:
    """Impressions of the days strictly before `history_end_date`."""
    return impressions.where(F.col("dt") < F.lit(history_end_date).cast("date"))


def capped_orders(orders: DataFrame, max_per_user: int, max_per_poi: int, seed: int) -> DataFrame:
    """Distinct (user_id, poi_id) ordered pairs, at most `max_per_user` per user, then at most
    `max_per_poi` per POI, ranked by a hash of (seed, user, POI): heavy users cannot dominate."""
    rank_key = F.xxhash64(F.lit(seed), F.lit("pair_cap"), "user_id", "poi_id")
    pairs = orders.select("user_id", "poi_id").distinct().withColumn("_key", rank_key)
    per_user = Window.partitionBy("user_id").orderBy("_key", "poi_id")
    per_poi = Window.partitionBy("poi_id").orderBy("_key", "user_id")
    return (
        pairs.withColumn("_rank", F.row_number().over(per_user))
        .where(F.col("_rank") <= max_per_user)
        .withColumn("_rank", F.row_number().over(per_poi))
        .where(F.col("_rank") <= max_per_poi)
        .select("user_id", "poi_id")
    )


def scene_pairs(
    orders: DataFrame, poi_texts: DataFrame, schema: DatasetSchema, cfg: PairsConfig, split: Column
) -> DataFrame | None:
    """scene_poi pairs (module docstring), or None when the schema declares no environment slice."""
    spec = schema.user_actions.environment
    if spec is None:
        return None
    scene = wrap(spec.name, slice_value(spec, environment_columns(schema, spec)))
    rank_key = F.xxhash64(F.lit(cfg.seed), F.lit("scene_cap"), "event_id")
    per_poi = Window.partitionBy("poi_id").orderBy("_key", "event_id")
    capped = (
        orders.withColumn("_key", rank_key)
        .withColumn("_rank", F.row_number().over(per_poi))
        .where(F.col("_rank") <= cfg.max_pairs_per_poi)
    )
    return (
        capped.select("event_id", "user_id", "poi_id", scene.alias("text_a"))
        .join(poi_texts.select("poi_id", F.col("comprehensive").alias("text_b")), "poi_id")
        .select(
            F.lit(SCENE_POI).alias("pair_type"),
            F.col("event_id").alias("anchor_id"),
            F.col("poi_id").alias("positive_id"),
            "text_a",
            "text_b",
            split.alias("split"),
        )
    )


def missing_texts(users: DataFrame, pois: DataFrame, schema: DatasetSchema) -> dict[str, int]:
    """Users without profile text, items without business / basic text (one scan of each table)."""
    user_counts = users.agg(F.count(F.when(profile_text(schema) == "", 1))).first()
    item_counts = pois.agg(
        F.count(F.when(item_text(schema, BUSINESS) == "", 1)),
        F.count(F.when(item_text(schema, BASIC) == "", 1)),
    ).first()
    return dict(
        zip(MISSING_TEXTS, (int(user_counts[0]), int(item_counts[0]), int(item_counts[1])), strict=True)
    )


def transform(
    users: DataFrame, pois: DataFrame, impressions: DataFrame, schema: DatasetSchema, cfg: PairsConfig
) -> DataFrame:
    """Every pair whose two texts are non-empty."""
    past = history(impressions, cfg.history_end_date)
    texts = user_texts(users, past, pois, schema, cfg.last_orders)
    poi_texts = pois.select(
        "poi_id",
        item_text(schema, BUSINESS).alias("business"),
        item_text(schema, BASIC).alias("basic"),
        item_text(schema, COMPREHENSIVE).alias("comprehensive"),
    )
    user_split = heldout_split(cfg.seed, cfg.heldout_fraction, "user", "anchor_id")
    scene_split = heldout_split(cfg.seed, cfg.heldout_fraction, "user", "user_id")  # the user's split
    user_user = texts.select(
        F.lit(USER_USER).alias("pair_type"),
        F.col("user_id").alias("anchor_id"),
        F.col("user_id").alias("positive_id"),
        F.col("profile_text").alias("text_a"),
        F.col("action_text").alias("text_b"),
    ).withColumn("split", user_split)
    poi_poi = poi_texts.select(
        F.lit(POI_POI).alias("pair_type"),
        F.col("poi_id").alias("anchor_id"),
        F.col("poi_id").alias("positive_id"),
        F.col("business").alias("text_a"),
        F.col("basic").alias("text_b"),
    ).withColumn("split", heldout_split(cfg.seed, cfg.heldout_fraction, "poi", "anchor_id"))
    orders = past.where(F.col("ordered") == 1)
    user_poi = (
        capped_orders(orders, cfg.max_pairs_per_user, cfg.max_pairs_per_poi, cfg.seed)
        .join(texts.select("user_id", "comprehensive_text"), "user_id")
        .join(poi_texts.select("poi_id", "comprehensive"), "poi_id")
        .select(
            F.lit(USER_POI).alias("pair_type"),
            F.col("user_id").alias("anchor_id"),
            F.col("poi_id").alias("positive_id"),
            F.col("comprehensive_text").alias("text_a"),
            F.col("comprehensive").alias("text_b"),
        )
        .withColumn("split", user_split)
    )
    every = user_user.unionByName(poi_poi).unionByName(user_poi)
    scene_poi = scene_pairs(orders, poi_texts, schema, cfg, scene_split)
    if scene_poi is not None:
        every = every.unionByName(scene_poi)
    return every.where((F.col("text_a") != "") & (F.col("text_b") != "")).select(
        F.col("pair_type"),
        F.col("anchor_id").cast("long"),
        F.col("positive_id").cast("long"),
        "text_a",
        "text_b",
        "split",
    )


def run(spark: SparkSession, catalog: TableCatalog, cfg: PairsConfig, log=print) -> dict:
    input_versions = {name: catalog.version(spark, name) for name in (*INPUTS, SCHEMA_TABLE)}
    schema = read_schema(spark, catalog, input_versions[SCHEMA_TABLE])
    users, pois, impressions = (catalog.read(spark, name, version=input_versions[name]) for name in INPUTS)
    if not cfg.history_end_date:
        cfg = replace(cfg, history_end_date=history_end(cfg.history_end_date, impressions, schema))
    version = catalog.write(
        transform(users, pois, impressions, schema, cfg), OUTPUT, partition_by=["pair_type"]
    )
    figures = {
        **summarize(catalog.read(spark, OUTPUT, version=version)),
        **missing_texts(users, pois, schema),
    }
    log(
        f"etl pairs: wrote {OUTPUT}: {figures['rows']} rows (version {version}): "
        + ", ".join(f"{t} {figures[f'{t}_rows']}" for t in PAIR_TYPES)
        + "; without text (their pairs left out): "
        + ", ".join(f"{name} {figures[name]}" for name in MISSING_TEXTS)
    )
    return {
        **figures,
        "history_end_date": cfg.history_end_date,
        "input_versions": input_versions,
        "output_versions": {OUTPUT: version},
    }


def summarize(pairs: DataFrame) -> dict:
    """Rows per pair type and split."""
    counts = {
        (r["pair_type"], r["split"]): int(r["rows"])
        for r in pairs.groupBy("pair_type", "split").agg(F.count("*").alias("rows")).collect()
    }
    figures: dict = {"rows": sum(counts.values())}
    for pair_type in PAIR_TYPES:
        figures[f"{pair_type}_rows"] = sum(n for (t, _), n in counts.items() if t == pair_type)
        for split in SPLITS:
            figures[f"{pair_type}_{split}_rows"] = counts.get((pair_type, split), 0)
    return figures
