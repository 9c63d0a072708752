"""embed scenes: features.scene_dictionary -> features.scene_embeddings; one row per (feature, value,
encoder version); partitioned by encoder_version.

Stage 3, offline: the frozen stage-2 encoder embeds every distinct scene value once. The text is
the value wrapped in its feature's special tokens (`<scene_weather>rainy</scene_weather>`), so its
vector is the last-layer hidden state at that feature's closing token, through the stage-2
projection (128 floats, unit length); see `encoder_runtime`.

Incremental: only dictionary rows whose (feature, value) has no vector for this encoder version
yet are embedded (a left anti join in Spark), then MERGEd on (feature, value, encoder_version);
a re-run embeds nothing and writes no new version. Rows with a null or blank value or text are not
embedded: they go to features.embedding_rejects (source `scene`) with a reason. A text longer
than the encoder's `max_length` loses its middle (the opening and closing tokens stay) and is
flagged `truncated`. After the MERGE the job writes the compact per-feature export that CTR
training and scoring load (`export.py`, `vectors.py`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from core.catalog import TableCatalog
from features.embeddings import export, store
from features.embeddings.encoder_runtime import (
    EncoderRef,
    check_precision,
    executor_stage_dir,
    resolve_encoder,
)
from features.embeddings.udf import embedding_udf, length_sorted

INPUT = "features.scene_dictionary"
OUTPUT = "features.scene_embeddings"
KEYS = ("feature", "value", "encoder_version")
COLUMNS = ("feature", "value", "text", "scene_id", "vector", "truncated", "encoder_uri", "encoder_version")
SOURCE = "scene"


@dataclass(frozen=True)
class EmbedScenesConfig:
    encoder: str = "latest:contrastive"  # or latest:contrastive/<ablation>, models:/<id>, a model folder
    batch_size: int = 32  # texts per forward pass
    precision: str = "auto"  # auto: bfloat16 on a task's GPU, float32 on CPU; or float32 / bfloat16 / float16
    partitions: int = 0  # UDF tasks; 0 = the cluster's default parallelism
    export: bool = True  # write the per-feature .npz export after the MERGE
    export_dir: str = ""  # "" = <lakehouse>/_exports/scene_vectors

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.partitions < 0:
            raise ValueError(f"partitions must be >= 0, got {self.partitions}")
        check_precision(self.precision)


def reject_reason() -> F.Column:
    """Why a dictionary row cannot be embedded (null when it can)."""
    return (
        F.when(F.col("value").isNull(), "null value")
        .when(F.trim("value") == "", "empty value")
        .when(store.blank(F.col("text")), "empty text")
    )


def split_dictionary(dictionary: DataFrame, encoder_version: str) -> tuple[DataFrame, DataFrame]:
    """(rows to embed, rejects in the features.embedding_rejects shape)."""
    reasoned = dictionary.withColumn("_reason", reject_reason())
    rejects = reasoned.where(F.col("_reason").isNotNull()).select(
        F.lit(SOURCE).alias("source"),
        F.concat_ws("=", "feature", F.coalesce("value", F.lit("<null>"))).alias("key"),
        "text",
        F.col("_reason").alias("reason"),
        F.lit(encoder_version).alias("encoder_version"),
    )
    return reasoned.where(F.col("_reason").isNull()).drop("_reason"), rejects


def pending(valid: DataFrame, existing: DataFrame | None) -> DataFrame:
    """Rows whose (feature, value) has no vector yet (`existing`: this version's stored rows)."""
    if existing is None:
        return valid
    return valid.join(existing.select("feature", "value"), ["feature", "value"], "left_anti")


def transform(todo: DataFrame, ref: EncoderRef, cfg: EmbedScenesConfig, partitions: int) -> DataFrame:
    """Dictionary rows -> scene_embeddings rows (the UDF runs here, lazily)."""
    udf = embedding_udf(ref, cfg.batch_size, cfg.precision)
    embedded = length_sorted(todo, "text", partitions).withColumn("_e", udf(F.col("text")))
    return embedded.select(
        "feature",
        "value",
        "text",
        "scene_id",
        F.col("_e.vector").alias("vector"),
        F.col("_e.truncated").alias("truncated"),
        F.lit(ref.uri).alias("encoder_uri"),
        F.lit(ref.version).alias("encoder_version"),
    )


def run(spark: SparkSession, catalog: TableCatalog, cfg: EmbedScenesConfig, log=print) -> dict:
    stage_dir = executor_stage_dir(spark.sparkContext.master, catalog.root)
    ref, _ = resolve_encoder(cfg.encoder, _tracking_uri(), stage_dir)  # one that does not load fails here
    log(f"embed scenes: encoder {ref.uri} version {ref.version} (dim {ref.dim}, max_length {ref.max_length})")
    input_version = catalog.version(spark, INPUT)
    dictionary = catalog.read(spark, INPUT, version=input_version)
    output_before = catalog.version(spark, OUTPUT)
    existing = (
        catalog.read(spark, OUTPUT).where(F.col("encoder_version") == ref.version)
        if output_before is not None
        else None
    )
    valid, rejects = split_dictionary(dictionary, ref.version)
    todo = pending(valid, existing)
    valid_rows, todo_rows = valid.count(), todo.count()
    rejects_version, rejected = store.write_rejects(spark, catalog, rejects, SOURCE, ref.version)
    partitions = cfg.partitions or spark.sparkContext.defaultParallelism
    started = time.perf_counter()
    embedded, output_version = 0, output_before
    if todo_rows:
        rows = transform(todo, ref, cfg, partitions)
        output_version, embedded = store.merge_rows(spark, catalog, OUTPUT, rows, KEYS, ["encoder_version"])
    seconds = time.perf_counter() - started
    stored = catalog.read(spark, OUTPUT, version=output_version).where(
        F.col("encoder_version") == ref.version
    )
    totals = stored.agg(F.count("*").alias("n"), F.sum(F.col("truncated").cast("int")).alias("t")).first()
    figures = {
        "embedded": embedded,
        "skipped_existing": valid_rows - todo_rows,
        "rejected": rejected,
        "truncated": int(totals["t"] or 0),
        "vectors": int(totals["n"]),
        "texts_per_s": round(embedded / seconds, 2) if embedded else 0.0,
        "encoder_uri": ref.uri,
        "encoder_version": ref.version,
        "dim": ref.dim,
    }
    if cfg.export:
        path = export.export_scene_vectors(spark, catalog, ref, output_version, cfg.export_dir)
        figures["export_path"] = path
        export.log_export(path)
    log(
        f"embed scenes: {figures['embedded']} embedded, {figures['skipped_existing']} already there, "
        f"{figures['rejected']} rejected, {figures['truncated']} truncated -> {OUTPUT} (version {output_version})"
    )
    return {
        **figures,
        "input_versions": {INPUT: input_version},
        "output_versions": {OUTPUT: output_version, store.REJECTS: rejects_version},
    }


def _tracking_uri() -> str | None:
    """The driver's MLflow store, handed to workers that load an MLflow URI."""
    import mlflow

    return mlflow.get_tracking_uri()
