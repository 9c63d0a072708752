"""recall: a free-text scene -> the top-k POIs by cosine similarity (the paper's case study).

The scene ("a user visiting Guangzhou on vacation") is embedded on the driver with the frozen
stage-2 encoder and scored against features.poi_embeddings (written by `larr embed texts`) rows
of the SAME encoder version: Spark computes the cosine per POI with array expressions over the
query vector (a literal in the plan, so every task holds it), keeps the top k and joins
clean.pois for each POI's city and main dish (the first of `main_dishes`). Nothing is collected
but the k winners.

How the text reaches the encoder: the encoder pools the hidden state at the last token, which
in training was always a slice's closing special token, so the free text is wrapped in one
slice's tokens (`wrap: true`, default). The default slice is `user_env`, the user-side slice
that holds "the environments (scenes) of those orders" (day, time, city, location, weather,
away from home): the closest in content to a free-text scene, and a slice the encoder was
fine-tuned on as part of the user side of the user-POI pairs, the pairs that align user texts
with POI texts. The stage-3 scene slices (`scene_city`, ...) hold a single feature value and
their tokens occur in no stage-1/2 text; `slice: scene_city` (or any registry slice) is there to
compare. Registry tokens the user typed are removed first, so they cannot open or close a slice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from etl.core.catalog import TableCatalog
from etl.synthetic.vocab import CITIES
from etl.tokens import UnknownSliceError, get_slice, strip_tokens, wrap_text
from features.embeddings.encoder_runtime import resolve_encoder

POI_EMBEDDINGS = "features.poi_embeddings"
POIS = "clean.pois"
DEFAULT_SLICE = "user_env"


class RecallError(ValueError):
    pass


@dataclass(frozen=True)
class RecallConfig:
    scene: str = ""  # free text, e.g. "a user visiting Guangzhou on vacation" (--scene TEXT)
    encoder: str = "latest:contrastive"  # or latest:contrastive/<ablation>, models:/<id>, a model folder
    top_k: int = 10  # POIs to list
    wrap: bool = True  # wrap the text in `slice`'s special tokens (pooling then reads its closing token)
    slice: str = DEFAULT_SLICE  # the registry slice the text goes in when wrap is true

    def __post_init__(self) -> None:
        if not strip_tokens(self.scene).strip():
            raise ValueError(
                f'scene: give a scene text (--scene "a user visiting Guangzhou on vacation"), got {self.scene!r}'
            )
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        try:
            get_slice(self.slice)
        except UnknownSliceError as err:
            raise ValueError(f"slice: {err}") from None


def query_text(cfg: RecallConfig) -> str:
    """The text the encoder sees: the stripped scene, wrapped in `cfg.slice` when `cfg.wrap`."""
    scene = strip_tokens(cfg.scene).strip()
    return wrap_text(cfg.slice, scene) if cfg.wrap else scene


def scene_cities(scene: str) -> list[str]:
    """The synthetic world's cities the scene names, directly or through their province
    ("Guangdong" -> Guangzhou, Shenzhen); case-insensitive whole words."""

    def named(word: str) -> bool:
        return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", scene, re.IGNORECASE) is not None

    return [c.name for c in CITIES if named(c.name) or named(c.province)]


def cosine(vector: Column, query: np.ndarray) -> Column:
    """Cosine between an array<float> column and a fixed query vector (norms divided out, so it
    holds whether or not the stored vectors are L2-normalised)."""
    q = F.array(*[F.lit(float(x)) for x in query])
    dot = F.aggregate(F.zip_with(vector, q, lambda a, b: a * b), F.lit(0.0), lambda acc, x: acc + x)
    squares = F.aggregate(F.transform(vector, lambda a: a * a), F.lit(0.0), lambda acc, x: acc + x)
    return dot / (F.sqrt(squares) * F.lit(float(np.linalg.norm(query))))


def main_dish() -> Column:
    """The first of the comma-separated `main_dishes` (null when there is none)."""
    first = F.trim(F.element_at(F.split(F.col("main_dishes"), ","), 1))
    return F.when(first != "", first)


def top_pois(vectors: DataFrame, pois: DataFrame, query: np.ndarray, top_k: int) -> DataFrame:
    """poi_id, name, city, main_dish, cosine of the `top_k` POIs most similar to `query`, best
    first (ties by poi_id); a POI missing from `pois` keeps its place with a null city."""
    scored = vectors.select("poi_id", cosine(F.col("vector"), query).alias("cosine"))
    best = scored.orderBy(F.col("cosine").desc(), F.col("poi_id")).limit(top_k)
    details = pois.select("poi_id", "name", "city", main_dish().alias("main_dish"))
    ranked = best.join(details, "poi_id", "left")
    return ranked.select("poi_id", "name", "city", "main_dish", "cosine").orderBy(
        F.col("cosine").desc(), F.col("poi_id")
    )


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
    vectors, vectors_version = poi_vectors(spark, catalog, ref.version, ref.uri)
    pois_version = catalog.version(spark, POIS)
    text = query_text(cfg)
    embedded, truncated = model.embed([text], batch_size=1)
    if truncated[0]:
        log(f"recall: the scene is longer than the encoder's {ref.max_length} tokens; its middle was cut")
    log(f"recall: {text!r} with encoder {ref.uri} (version {ref.version})")
    rows = top_pois(
        vectors, catalog.read(spark, POIS, version=pois_version), embedded[0], cfg.top_k
    ).collect()
    top = [
        {
            "rank": rank,
            "poi_id": int(r["poi_id"]),
            "name": r["name"],
            "city": r["city"],
            "main_dish": r["main_dish"],
            "cosine": round(float(r["cosine"]), 4),
        }
        for rank, r in enumerate(rows, start=1)
    ]
    for r in top:
        log(f"{r['rank']}. {r['city']}; {r['main_dish'] or r['name']} ({r['cosine']:.3f})")
    cities = scene_cities(cfg.scene)
    in_scene_city = sum(r["city"] in cities for r in top) if cities else None
    if cities:
        log(f"recall: {in_scene_city} of {len(top)} in {', '.join(cities)}")
    return {
        "scene": cfg.scene,
        "query_text": text,
        "encoder_uri": ref.uri,
        "encoder_version": ref.version,
        "top": top,
        "scene_cities": cities,
        "in_scene_city": in_scene_city,
        "input_versions": {POI_EMBEDDINGS: vectors_version, POIS: pois_version},
    }
