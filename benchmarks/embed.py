"""`larr bench embed`: texts per second of the scene-embedding UDF against the same encoder
called directly in one process (same texts, same batch size, same machine, same run), and the
dedup factor of feature-level embedding (impression rows covered per embedded value).

The texts are the scene dictionary's (`features.scene_dictionary` of the lakehouse; without one,
a scratch world of `world_size` impressions is generated, cleaned and its dictionary built), cycled
up to `texts`. The UDF is timed twice: cold (Python workers start and load the encoder) and warm
(workers reused, the encoder cached in them: the steady state of a long job). Both paths use all
cores: the direct call with torch's threads, the UDF with one task per core and `spark.task.cpus`
threads per task.
"""

from __future__ import annotations

import itertools
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from benchmarks.etl import _drop, _etl_steps, _scratch, _timed, _world_of_size
from core.catalog import TableCatalog
from core.paths import BASE_MODEL
from etl.synthetic import job as generate_job
from etl.text.slices import token_slices
from features.embeddings.encoder_runtime import resolve_encoder
from features.embeddings.udf import embedding_udf, length_sorted

DICTIONARY = "features.scene_dictionary"
TARGET_RATIO = 0.8


@dataclass(frozen=True)
class BenchEmbedConfig:
    encoder: str = ""  # "" = SmolLM2 (`backbone`) + a seeded 128-d projection: the real model's cost
    backbone: str = BASE_MODEL
    max_length: int = 64
    texts: int = 512  # texts embedded by each path
    batch_size: int = 32
    world_size: int = 200_000  # impressions of the scratch world when the lakehouse has no dictionary
    impressions_per_user: int = 100
    impressions_per_poi: int = 400
    keep_tables: bool = False

    def __post_init__(self) -> None:
        for name in ("max_length", "texts", "batch_size", "world_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def _dictionary_catalog(
    spark: SparkSession, catalog: TableCatalog, cfg: BenchEmbedConfig, log
) -> TableCatalog:
    """The lakehouse when it has a scene dictionary, else a scratch world with one."""
    if catalog.exists(spark, DICTIONARY):
        return catalog
    scratch = _scratch(catalog, f"embed_{cfg.world_size}")
    world = _world_of_size(cfg.world_size, cfg.impressions_per_user, cfg.impressions_per_poi)
    generate_job.write_world(spark, scratch, world, log=log)
    for name, step in _etl_steps():
        if name in ("etl clean", "features scene"):
            step(spark, scratch)
    return scratch


def _bench_encoder(cfg: BenchEmbedConfig, folder: Path) -> str:
    """`cfg.encoder`, or a local MLflow encoder model built from `cfg.backbone`."""
    if cfg.encoder:
        return cfg.encoder
    from training.embedding.encoder import EMBEDDING_DIM, TextEncoder
    from training.embedding.pyfunc import save_encoder_model
    from training.lm.backbone import add_special_tokens, load_backbone

    model, tokenizer = load_backbone(cfg.backbone)
    add_special_tokens(model, tokenizer, token_slices(generate_job.declared_schema()))  # the benched world's
    encoder = TextEncoder(model, dim=EMBEDDING_DIM, seed=0)
    save_encoder_model(encoder.backbone, tokenizer, encoder.projection, cfg.max_length, folder)
    return str(folder)


def bench_embed(spark: SparkSession, catalog: TableCatalog, cfg: BenchEmbedConfig, log=print) -> dict:
    source = _dictionary_catalog(spark, catalog, cfg, log)
    dictionary = source.read(spark, DICTIONARY)
    stats = dictionary.agg(F.count("*").alias("rows"), F.sum("impressions").alias("impressions")).first()
    values = [r["text"] for r in dictionary.where(F.col("text").isNotNull()).select("text").collect()]
    texts = list(itertools.islice(itertools.cycle(values), cfg.texts))
    cores = spark.sparkContext.defaultParallelism
    with tempfile.TemporaryDirectory(prefix="larr-bench-embed-") as tmp:
        ref, model = resolve_encoder(_bench_encoder(cfg, Path(tmp) / "encoder"))
        model.place("cpu")
        model.embed(texts[: cfg.batch_size], cfg.batch_size)  # warm-up
        direct_seconds = _timed(lambda: model.embed(texts, cfg.batch_size))

        udf = embedding_udf(ref, cfg.batch_size)
        frame = length_sorted(spark.createDataFrame([(t,) for t in texts], "text string"), "text", cores)

        def job() -> None:
            frame.select(udf(F.col("text")).alias("e")).write.format("noop").mode("overwrite").save()

        cold_seconds = _timed(job)
        warm_seconds = _timed(job)
    _drop(source, cfg.keep_tables or source is catalog)
    direct = len(texts) / direct_seconds
    warm = len(texts) / warm_seconds
    result = {
        "texts": len(texts),
        "distinct_texts": len(set(texts)),
        "batch_size": cfg.batch_size,
        "encoder": cfg.encoder or cfg.backbone,
        "encoder_version": ref.version,
        "direct_texts_per_s": round(direct, 2),
        "udf_texts_per_s": round(warm, 2),
        "udf_cold_texts_per_s": round(len(texts) / cold_seconds, 2),
        "ratio_to_direct": round(warm / direct, 3),
        "target_ratio": TARGET_RATIO,
        "meets_target": warm / direct >= TARGET_RATIO,
        "dictionary_rows": int(stats["rows"]),
        "impressions_covered": int(stats["impressions"] or 0),
        "dedup_factor": round((stats["impressions"] or 0) / stats["rows"], 1) if stats["rows"] else None,
        "dictionary_source": "lakehouse"
        if source is catalog
        else f"scratch world of {cfg.world_size} impressions",
        "cores": cores,
    }
    log(f"bench embed: {result}")
    return result
