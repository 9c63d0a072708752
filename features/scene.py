"""features scene: clean.impressions, clean.pois, raw.dataset_schema -> features.scene_dictionary;
one row per distinct (scene feature, value); not partitioned.

The dictionary of the dataset schema's declared real-time scene features: every distinct value
of every feature, its text (the feature's template filled in, wrapped in that feature's special
tokens from etl.tokens), its id (the same hash as the `scene_<feature>_id` columns of
features.scene_values, so CTR samples carry only ids) and how many impressions carry it. The
scene-embedding job embeds `text` once per row; nothing here is copied into per-impression
samples. A null value has no text and gets no row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from core.catalog import TableCatalog
from core.dataset_schema import SceneFeature
from core.schema_table import SCHEMA_TABLE, read_schema
from etl.tokens import scene_slice, wrap
from features.scene_values import id_column, value_column, with_scene_values

INPUTS = ("clean.impressions", "clean.pois")
OUTPUT = "features.scene_dictionary"
COLUMNS = ("feature", "value", "text", "scene_id", "impressions")


@dataclass(frozen=True)
class SceneConfig:
    """The job has no settings: the features come from the lakehouse's dataset schema."""


def templated(template: str, value: Column) -> Column:
    """Spark: the template with `{value}` filled in (null stays null)."""
    pieces = [piece.replace("{{", "{").replace("}}", "}") for piece in template.split("{value}")]
    parts = [F.lit(pieces[0])]
    for piece in pieces[1:]:
        parts += [value, F.lit(piece)]
    return value if pieces == ["", ""] else F.when(value.isNotNull(), F.concat(*parts))


def feature_text(features: Sequence[SceneFeature], feature: Column, value: Column) -> Column:
    """The value in its feature's template, wrapped in the feature's special tokens, e.g.
    <scene_weather>weather: rainy</scene_weather>."""
    return F.coalesce(
        *[
            F.when(feature == f.name, wrap(scene_slice(f.name), templated(f.template, value)))
            for f in features
        ]
    )


def transform(impressions: DataFrame, pois: DataFrame, features: Sequence[SceneFeature]) -> DataFrame:
    scene = with_scene_values(impressions, pois, features)
    per_feature = F.array(
        *[
            F.struct(
                F.lit(f.name).alias("feature"),
                F.col(value_column(f.name)).alias("value"),
                F.col(id_column(f.name)).alias("scene_id"),
            )
            for f in features
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
            feature_text(features, F.col("feature"), F.col("value")).alias("text"),
            "scene_id",
            "impressions",
        )
    )


def run(spark: SparkSession, catalog: TableCatalog, cfg: SceneConfig, log=print) -> dict:
    input_versions = {name: catalog.version(spark, name) for name in (*INPUTS, SCHEMA_TABLE)}
    schema = read_schema(spark, catalog, input_versions[SCHEMA_TABLE])
    impressions, pois = (catalog.read(spark, name, version=input_versions[name]) for name in INPUTS)
    version = catalog.write(transform(impressions, pois, schema.scene_features), OUTPUT)
    figures = summarize(catalog.read(spark, OUTPUT, version=version), schema.scene_names)
    log(f"features scene: wrote {OUTPUT}: {figures['values']} values (version {version})")
    return {**figures, "input_versions": input_versions, "output_versions": {OUTPUT: version}}


def summarize(dictionary: DataFrame, feature_names: Sequence[str]) -> dict:
    """Distinct values per feature and in total."""
    counts = dict(dictionary.groupBy("feature").count().collect())
    return {
        "values": sum(counts.values()),
        **{f"{f}_values": int(counts.get(f, 0)) for f in feature_names},
    }
