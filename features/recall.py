"""recall: a free-text scene -> the top-k items by cosine similarity (the paper's case study).

The scene ("a user visiting Guangzhou on vacation") is embedded on the driver with the frozen
stage-2 encoder and scored against features.poi_embeddings (written by `larr embed texts`) rows
of the SAME encoder version: Spark computes the cosine per item with array expressions over the
query vector (a literal in the plan, so every task holds it), keeps the top k and joins
clean.pois for each item's title (its first declared text slice) and its categorical fields
(the dataset schema's `items.categorical`). Nothing is collected but the k winners.

How the text reaches the encoder: the encoder pools the hidden state at the last token, which
in training was always a slice's closing special token, so the free text is wrapped in one
slice's tokens (`wrap: true`, default). The default slice is the user environment slice
(`user_actions.environment`, `user_env` in the synthetic world), the user-side slice that holds
"the environments (scenes) of those orders": the closest in content to a free-text scene, and a
slice the encoder was fine-tuned on as part of the user side of the user-item pairs. The stage-3
scene slices (`scene_city`, ...) hold a single feature value and their tokens occur in no
stage-1/2 text; `slice: scene_city` (or any slice of the dataset) is there to compare. Slice
tokens the user typed are removed first, so they cannot open or close a slice.

`in_scene` counts the listed items with a categorical value the scene names as a whole word
(case-insensitive): "visiting Guangzhou" and city = Guangzhou.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from core.catalog import TableCatalog
from core.dataset_schema import DatasetSchema
from core.schema_table import SCHEMA_TABLE, read_schema
from etl.text.slice_text import slice_value
from etl.text.slices import token_slices
from etl.tokens import UnknownSliceError, get_slice, strip_tokens, wrap_text
from features.embeddings.encoder_runtime import resolve_encoder

POI_EMBEDDINGS = "features.poi_embeddings"
POIS = "clean.pois"


class RecallError(ValueError):
    pass


@dataclass(frozen=True)
class RecallConfig:
    scene: str = ""  # free text, e.g. "a user visiting Guangzhou on vacation" (--scene TEXT)
    encoder: str = "latest:contrastive"  # or latest:contrastive/<ablation>, models:/<id>, a model folder
    top_k: int = 10  # POIs to list
    wrap: bool = True  # wrap the text in `slice`'s special tokens (pooling then reads its closing token)
    slice: str = ""  # the dataset's slice the text goes in when wrap is true; "" = its user environment slice

    def __post_init__(self) -> None:
        if not strip_tokens(self.scene).strip():
            raise ValueError(
                f'scene: give a scene text (--scene "a user visiting Guangzhou on vacation"), got {self.scene!r}'
            )
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.slice:
            try:
                get_slice(self.slice)
            except UnknownSliceError as err:
                raise ValueError(f"slice: {err}") from None


def default_slice(schema: DatasetSchema) -> str:
    """The user environment slice, else the first user-side slice, else the first item slice."""
    actions = schema.user_actions
    candidates = [s.name for s in (actions.environment, *actions.slices()) if s is not None]
    candidates += [s.name for s in (*schema.users.text, *schema.items.text)]
    if not candidates:
        raise RecallError(f"dataset schema {schema.name!r} declares no text slice to wrap the scene in")
    return candidates[0]


def check_slice(schema: DatasetSchema, slice_name: str) -> None:
    known = token_slices(schema)
    if slice_name not in known:
        raise RecallError(
            f"slice: {slice_name} is not a slice of dataset {schema.name!r} (has: {', '.join(known)})"
        )


def scene_query(scene: str, wrap: bool, slice_name: str) -> str:
    """The text the encoder sees: the stripped scene, wrapped in `slice_name` when `wrap`."""
    scene = strip_tokens(scene).strip()
    return wrap_text(slice_name, scene) if wrap else scene


def query_text(cfg: RecallConfig) -> str:
    return scene_query(cfg.scene, cfg.wrap, cfg.slice)


def named_values(scene: str, values: dict[str, str | None]) -> list[str]:
    """The `values` (field -> value) the scene names as whole words, case-insensitive."""

    def named(word: str) -> bool:
        return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", scene, re.IGNORECASE) is not None

    return [f"{field}={value}" for field, value in values.items() if value and named(str(value))]


def _sum(values: Column) -> Column:
    return F.aggregate(values, F.lit(0.0), lambda acc, x: acc + x)


def _norm(vector: Column) -> Column:
    return F.sqrt(_sum(F.transform(vector, lambda a: a * a)))


def cosine_between(vector: Column, other: Column) -> Column:
    """Cosine between two array<float> columns of one width (norms divided out, so it holds
    whether or not the stored vectors are L2-normalised)."""
    return _sum(F.zip_with(vector, other, lambda a, b: a * b)) / (_norm(vector) * _norm(other))


def cosine(vector: Column, query: np.ndarray) -> Column:
    """Cosine between an array<float> column and a fixed query vector (a literal in the plan)."""
    q = F.array(*[F.lit(float(x)) for x in query])
    dot = _sum(F.zip_with(vector, q, lambda a, b: a * b))
    return dot / (_norm(vector) * F.lit(float(np.linalg.norm(query))))


def item_title(schema: DatasetSchema) -> Column:
    """The item's first declared text slice (unwrapped), null when it has none."""
    return slice_value(schema.items.text[0]) if schema.items.text else F.lit(None).cast("string")


def top_pois(
    vectors: DataFrame, pois: DataFrame, schema: DatasetSchema, query: np.ndarray, top_k: int
) -> DataFrame:
    """poi_id, title, the categorical fields, cosine of the `top_k` items most similar to `query`,
    best first (ties by poi_id); an item missing from `pois` keeps its place with null fields."""
    scored = vectors.select("poi_id", cosine(F.col("vector"), query).alias("cosine"))
    best = scored.orderBy(F.col("cosine").desc(), F.col("poi_id")).limit(top_k)
    fields = [F.col(name).cast("string").alias(name) for name in schema.items.categorical]
    details = pois.select("poi_id", item_title(schema).alias("_title"), *fields)
    ranked = best.join(details, "poi_id", "left")
    # an item without a title, or missing from `pois`: its id
    title = F.coalesce(F.col("_title"), F.concat(F.lit("item "), F.col("poi_id").cast("string")))
    return ranked.withColumn("title", title).drop("_title").orderBy(F.col("cosine").desc(), F.col("poi_id"))


def poi_vectors(
    spark: SparkSession, catalog: TableCatalog, encoder_version: str, encoder_uri: str
) -> tuple[DataFrame, int]:
    """The POI vectors of one encoder version (at the table's current version) and that version;
    a RecallError says how to write them when absent."""
    hint = f"run `larr embed texts --set encoder={encoder_uri} --set sides=[poi]` first"
    if not catalog.exists(spark, POI_EMBEDDINGS):
        raise RecallError(f"{POI_EMBEDDINGS} does not exist: {hint}")
    version = catalog.version(spark, POI_EMBEDDINGS)
    vectors = catalog.read(spark, POI_EMBEDDINGS, version=version)
    vectors = vectors.where(F.col("encoder_version") == encoder_version)
    if vectors.isEmpty():
        raise RecallError(f"{POI_EMBEDDINGS} has no rows for encoder version {encoder_version}: {hint}")
    return vectors, version


def run(spark: SparkSession, catalog: TableCatalog, cfg: RecallConfig, log=print) -> dict:
    import mlflow

    ref, model = resolve_encoder(cfg.encoder, mlflow.get_tracking_uri())  # fails before any Spark work
    schema_version = catalog.version(spark, SCHEMA_TABLE)
    schema = read_schema(spark, catalog, schema_version)
    cfg = replace(cfg, slice=cfg.slice or default_slice(schema))
    check_slice(schema, cfg.slice)
    vectors, vectors_version = poi_vectors(spark, catalog, ref.version, ref.uri)
    pois_version = catalog.version(spark, POIS)
    text = query_text(cfg)
    embedded, truncated = model.embed([text], batch_size=1)
    if truncated[0]:
        log(f"recall: the scene is longer than the encoder's {ref.max_length} tokens; its middle was cut")
    log(f"recall: {text!r} with encoder {ref.uri} (version {ref.version})")
    pois = catalog.read(spark, POIS, version=pois_version)
    rows = top_pois(vectors, pois, schema, embedded[0], cfg.top_k).collect()  # k rows
    top = []
    for rank, r in enumerate(rows, start=1):
        fields = {name: r[name] for name in schema.items.categorical}
        top.append(
            {
                "rank": rank,
                "poi_id": int(r["poi_id"]),
                "title": r["title"],
                "fields": fields,
                "cosine": round(float(r["cosine"]), 4),
                "in_scene": named_values(cfg.scene, fields),
            }
        )
        described = "; ".join(str(v) for v in fields.values() if v is not None)
        log(f"{rank}. {r['title']}" + (f" ({described})" if described else "") + f" {r['cosine']:.3f}")
    in_scene = sum(bool(r["in_scene"]) for r in top)
    named = sorted({v for r in top for v in r["in_scene"]})
    if named:
        log(f"recall: {in_scene} of {len(top)} have a value the scene names ({', '.join(named)})")
    return {
        "scene": cfg.scene,
        "slice": cfg.slice,
        "query_text": text,
        "encoder_uri": ref.uri,
        "encoder_version": ref.version,
        "top": top,
        "in_scene": in_scene,
        "scene_values": named,
        "input_versions": {POI_EMBEDDINGS: vectors_version, POIS: pois_version, SCHEMA_TABLE: schema_version},
    }
