"""embed texts: clean.users, clean.pois, clean.impressions, raw.dataset_schema -> features.poi_embeddings,
features.user_embeddings; one row per (id, encoder version); partitioned by encoder_version.

The same UDF as `embed scenes` over the comprehensive texts of stage 2 (for retrieval and the case
study: a scene text as a query over POI vectors):
- item: `etl.text.item_text.item_text(schema, "comprehensive")` (business + basic slices), every item.
- user: `etl.text.user_text.user_texts(...).comprehensive_text` (profile + actions) over the
  impressions before `history_end_date`, exactly as `etl pairs` builds it; users with a click.

After the MERGEs the job writes the compact per-side export (`export.py`: `_exports/text_vectors/
<encoder_version>.npz`, sides `poi` and `user`) that `larr train ctr --model larr_plus` reads.

Incremental by (id, encoder version, text hash): the sha256 of each text is stored; only ids
whose text is new or changed for this encoder version are embedded, then MERGEd on
(id, encoder_version): a changed text replaces the row, a new id is inserted, so the table holds
each id's latest text and vector. A null or blank text goes to features.embedding_rejects
(source `poi` or `user`, key = the id) and is not embedded.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field, replace

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from core.catalog import TableCatalog
from core.dataset_schema import DatasetSchema
from core.schema_table import SCHEMA_TABLE, read_schema
from core.splits import history_end
from etl.text.item_text import COMPREHENSIVE, item_text
from etl.text.pairs import history
from etl.text.user_text import user_texts
from features.embeddings import export, store
from features.embeddings.encoder_runtime import (
    EncoderRef,
    check_precision,
    executor_stage_dir,
    resolve_encoder,
)
from features.embeddings.udf import embedding_udf, length_sorted

INPUTS = ("clean.users", "clean.pois", "clean.impressions")
POI, USER = "poi", "user"
SIDES = (POI, USER)
OUTPUTS = {POI: "features.poi_embeddings", USER: "features.user_embeddings"}
ID_COLUMNS = {POI: "poi_id", USER: "user_id"}


@dataclass(frozen=True)
class EmbedTextsConfig:
    encoder: str = "latest:contrastive"  # or latest:contrastive/<ablation>, models:/<id>, a model folder
    sides: list[str] = field(default_factory=lambda: list(SIDES))  # which texts: poi, user
    history_end_date: str = (
        ""  # histories use dt < this; "" = the first test day (the schema's events.test_days)
    )
    last_orders: int = 5  # positives in a user's history text (as etl pairs)
    batch_size: int = 16  # texts per forward pass (these texts are long)
    precision: str = "auto"  # auto: bfloat16 on a task's GPU, float32 on CPU
    partitions: int = 0  # UDF tasks; 0 = the cluster's default parallelism
    export: bool = True  # write the per-side .npz export (`larr_plus` reads it) after the MERGEs
    export_dir: str = ""  # "" = <lakehouse>/_exports/text_vectors
    max_export_rows: int = 2_000_000  # per side: the driver holds the export (rows x encoder width)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.sides) - set(SIDES))
        if unknown or not self.sides:
            raise ValueError(f"sides must be a non-empty subset of {SIDES}, got {self.sides}")
        try:
            if self.history_end_date:
                dt.date.fromisoformat(self.history_end_date)
        except ValueError:
            raise ValueError(f"history_end_date must be YYYY-MM-DD, got {self.history_end_date!r}") from None
        for name in ("last_orders", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.partitions < 0:
            raise ValueError(f"partitions must be >= 0, got {self.partitions}")
        if self.max_export_rows < 1:
            raise ValueError(f"max_export_rows must be >= 1, got {self.max_export_rows}")
        check_precision(self.precision)


def poi_comprehensive(pois: DataFrame, schema: DatasetSchema) -> DataFrame:
    """poi_id, text."""
    return pois.select("poi_id", item_text(schema, COMPREHENSIVE).alias("text"))


def user_comprehensive(
    users: DataFrame, impressions: DataFrame, pois: DataFrame, schema: DatasetSchema, cfg: EmbedTextsConfig
) -> DataFrame:
    """user_id, text: the stage-2 user_poi anchor text."""
    past = history(impressions, cfg.history_end_date)
    texts = user_texts(users, past, pois, schema, cfg.last_orders)
    return texts.select("user_id", F.col("comprehensive_text").alias("text"))


def split_texts(texts: DataFrame, side: str, encoder_version: str) -> tuple[DataFrame, DataFrame]:
    """(id, text, text_hash rows to consider, rejects in the features.embedding_rejects shape)."""
    id_column = ID_COLUMNS[side]
    rejects = texts.where(store.blank(F.col("text"))).select(
        F.lit(side).alias("source"),
        F.col(id_column).cast("string").alias("key"),
        "text",
        F.lit("empty text").alias("reason"),
        F.lit(encoder_version).alias("encoder_version"),
    )
    valid = texts.where(~store.blank(F.col("text"))).withColumn("text_hash", F.sha2("text", 256))
    return valid, rejects


def pending(valid: DataFrame, existing: DataFrame | None, side: str) -> DataFrame:
    """Rows whose (id, text hash) has no vector for this version yet."""
    if existing is None:
        return valid
    keys = [ID_COLUMNS[side], "text_hash"]
    return valid.join(existing.select(*keys), keys, "left_anti")


def transform(
    todo: DataFrame, side: str, ref: EncoderRef, cfg: EmbedTextsConfig, partitions: int
) -> DataFrame:
    udf = embedding_udf(ref, cfg.batch_size, cfg.precision)
    embedded = length_sorted(todo, "text", partitions).withColumn("_e", udf(F.col("text")))
    return embedded.select(
        F.col(ID_COLUMNS[side]).cast("long").alias(ID_COLUMNS[side]),
        "text",
        "text_hash",
        F.col("_e.vector").alias("vector"),
        F.col("_e.truncated").alias("truncated"),
        F.lit(ref.uri).alias("encoder_uri"),
        F.lit(ref.version).alias("encoder_version"),
    )


def _embed_side(
    spark: SparkSession,
    catalog: TableCatalog,
    side: str,
    texts: DataFrame,
    ref: EncoderRef,
    cfg: EmbedTextsConfig,
) -> dict:
    output = OUTPUTS[side]
    before = catalog.version(spark, output)
    existing = (
        catalog.read(spark, output).where(F.col("encoder_version") == ref.version)
        if before is not None
        else None
    )
    valid, rejects = split_texts(texts, side, ref.version)
    todo = pending(valid, existing, side)
    valid_rows, todo_rows = valid.count(), todo.count()
    rejects_version, rejected = store.write_rejects(spark, catalog, rejects, side, ref.version)
    started = time.perf_counter()
    version, embedded = before, 0
    if todo_rows:
        rows = transform(todo, side, ref, cfg, cfg.partitions or spark.sparkContext.defaultParallelism)
        version, embedded = store.merge_rows(
            spark,
            catalog,
            output,
            rows,
            (ID_COLUMNS[side], "encoder_version"),
            ["encoder_version"],
            update_when="t.text_hash <> s.text_hash",
        )
    return {
        "embedded": embedded,
        "skipped_existing": valid_rows - todo_rows,
        "rejected": rejected,
        "seconds": time.perf_counter() - started,
        "version": version,
        "rejects_version": rejects_version,
    }


def run(spark: SparkSession, catalog: TableCatalog, cfg: EmbedTextsConfig, log=print) -> dict:
    import mlflow

    stage_dir = executor_stage_dir(spark.sparkContext.master, catalog.root)
    ref, _ = resolve_encoder(cfg.encoder, mlflow.get_tracking_uri(), stage_dir)  # fails before Spark work
    log(f"embed texts: encoder {ref.uri} version {ref.version}")
    input_versions = {name: catalog.version(spark, name) for name in (*INPUTS, SCHEMA_TABLE)}
    schema = read_schema(spark, catalog, input_versions[SCHEMA_TABLE])
    users, pois, impressions = (catalog.read(spark, name, version=input_versions[name]) for name in INPUTS)
    if USER in cfg.sides and not cfg.history_end_date:
        cfg = replace(cfg, history_end_date=history_end(cfg.history_end_date, impressions, schema))
    sources = {
        POI: lambda: poi_comprehensive(pois, schema),
        USER: lambda: user_comprehensive(users, impressions, pois, schema, cfg),
    }
    figures: dict = {"encoder_uri": ref.uri, "encoder_version": ref.version}
    output_versions: dict = {}
    seconds = embedded = skipped = 0
    for side in cfg.sides:
        result = _embed_side(spark, catalog, side, sources[side](), ref, cfg)
        for key in ("embedded", "skipped_existing", "rejected"):
            figures[f"{side}_{key}"] = result[key]
        output_versions[OUTPUTS[side]] = result["version"]
        output_versions[store.REJECTS] = result["rejects_version"]
        embedded, skipped, seconds = (
            embedded + result["embedded"],
            skipped + result["skipped_existing"],
            seconds + result["seconds"],
        )
        log(
            f"embed texts: {side}: {result['embedded']} embedded, {result['skipped_existing']} unchanged, "
            f"{result['rejected']} rejected -> {OUTPUTS[side]} (version {result['version']})"
        )
    figures.update(
        embedded=embedded,
        skipped_existing=skipped,
        texts_per_s=round(embedded / seconds, 2) if embedded else 0.0,
    )
    if cfg.export:  # every side this encoder has vectors of, also those embedded by an earlier run
        sides = {side: catalog.version(spark, OUTPUTS[side]) for side in SIDES}
        sides = {side: output_versions.get(OUTPUTS[side], v) for side, v in sides.items() if v is not None}
        path = export.export_text_vectors(spark, catalog, ref, sides, cfg.max_export_rows, cfg.export_dir)
        figures["export_path"] = path
        export.log_export(path, "text_vectors")
        log(f"embed texts: export of {', '.join(sorted(sides))} vectors -> {path}")
    return {**figures, "input_versions": input_versions, "output_versions": output_versions}
