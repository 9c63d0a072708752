"""features scene: clean.impressions, clean.pois -> features.scene_dictionary; one row per distinct
(scene feature, value); not partitioned.

The dictionary of the n = 10 real-time scene features: every distinct value of every feature,
its text wrapped in that feature's special tokens (etl.tokens), its id (the same hash as the
`scene_<feature>_id` columns of features.scene_values, so CTR samples carry only ids) and how
many impressions carry it. The scene-embedding job embeds `text` once per row; nothing here is
copied into per-impression samples. A null value has no text and gets no row.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from etl.core.catalog import TableCatalog
from etl.tokens import SCENE_FEATURES, scene_slice, wrap
from features.scene_values import id_column, value_column, with_scene_values

INPUTS = ("clean.impressions", "clean.pois")
OUTPUT = "features.scene_dictionary"
COLUMNS = ("feature", "value", "text", "scene_id", "impressions")


@dataclass(frozen=True)
class SceneConfig:
    """The job has no settings yet: the features and their values come from features.scene_values."""


def feature_text(feature: Column, value: Column) -> Column:
    """The value wrapped in its feature's special tokens, e.g. <scene_weather>rainy</scene_weather>."""
    return F.coalesce(*[F.when(feature == f, wrap(scene_slice(f), value)) for f in SCENE_FEATURES])


def transform(impressions: DataFrame, pois: DataFrame) -> DataFrame:
    scene = with_scene_values(impressions, pois)
    per_feature = F.array(
        *[
            F.struct(
                F.lit(f).alias("feature"),
                F.col(value_column(f)).alias("value"),
                F.col(id_column(f)).alias("scene_id"),
            )
            for f in SCENE_FEATURES
        ]
    )
    return (
        scene.select(F.inline(per_feature))
        .where(F.col("value").isNotNull())
        .groupBy("feature", "value", "scene_id")
        .agg(F.count("*").alias("impressions"))
        .select(
            "feature",
            "value",
            feature_text(F.col("feature"), F.col("value")).alias("text"),
            "scene_id",
            "impressions",
        )
    )


def run(spark: SparkSession, catalog: TableCatalog, cfg: SceneConfig, log=print) -> dict:
    input_versions = {name: catalog.version(spark, name) for name in INPUTS}
    impressions, pois = (catalog.read(spark, name, version=input_versions[name]) for name in INPUTS)
    version = catalog.write(transform(impressions, pois), OUTPUT)
    figures = summarize(catalog.read(spark, OUTPUT, version=version))
    log(f"features scene: wrote {OUTPUT}: {figures['values']} values (version {version})")
    return {**figures, "input_versions": input_versions, "output_versions": {OUTPUT: version}}


def summarize(dictionary: DataFrame) -> dict:
    """Distinct values per feature and in total."""
    counts = dict(dictionary.groupBy("feature").count().collect())
    return {
        "values": sum(counts.values()),
        **{f"{f}_values": int(counts.get(f, 0)) for f in SCENE_FEATURES},
    }
