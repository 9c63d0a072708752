"""larr casestudy: the paper's case study, scored, for every encoder of the two LLM stages.

`larr recall` lists the shops one typed scene recalls; whether they fit is left to the reader.
Here a set of typed scenes (`cases`) each comes with a measurable target: a Spark SQL condition
over the lakehouse's truth table of the items (`truth.pois` in the synthetic world: the hidden
dish attributes) joined with `clean.pois`, true for the shops whose dishes fit the scene ("a
user visiting Chengdu on vacation" -> `dish_province = 'Sichuan'`; "a snowy winter evening" ->
`temperature = 1`, hot food). Each encoder recalls the top `top_k` shops of every scene by cosine
(the scene wrapped in the user environment slice, as `larr recall` does), and its score is the
precision: the share of the `top_k` that fit, averaged over the scenes of a group and over all.
`random` is what `top_k` shops drawn at random score in expectation (the share of the pool that
fits); `ideal` is min(fitting shops, top_k) / top_k.

A case with `for_each` expands into one scene per distinct value combination of those columns of
the joined table: `{city}` in the scene and `{province}` in the target come from the same row
(in the target a placeholder becomes a quoted SQL string). A scene no shop fits is left out and
listed under `skipped`.

Encoders (`encoders`: label -> source, any source `larr embed texts` takes): by default the four
the issue compares, from the lakehouse's MLflow store: the untouched base model
(`latest:contrastive/base`), stage 1 only (`latest:contrastive/no_ft`), stage 2 from the base
model (`latest:contrastive/no_cpt`) and the full method (`latest:contrastive`); the first three
are `larr train contrastive --set ablation=base|no_ft|no_cpt` runs. The shops' vectors are the
encoder version's rows of features.poi_embeddings; with `embed_missing` (default) the POI side of
`larr embed texts` writes them first for an encoder that has none (incremental: unchanged texts
are skipped).

Scale: the scenes are few (at most `max_scenes`) and broadcast; Spark scores scenes x shops and
ranks within each scene; only the `top_k` per scene come back to the driver. Results: a JSON
summary, `casestudy.md` (a table per group and per scene with each encoder's precision and, for
the full encoder against each other one, the scenes it wins and loses) and `casestudy.png`,
logged to the command's MLflow run.
"""

from __future__ import annotations

import re
import string
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from pyspark.errors import AnalysisException, ParseException
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from core.catalog import TableCatalog
from core.schema_table import SCHEMA_TABLE, read_schema
from features.embeddings.encoder_runtime import EmbedError, resolve_encoder
from features.recall import (
    POI_EMBEDDINGS,
    POIS,
    RecallError,
    check_slice,
    cosine_between,
    default_slice,
    item_title,
    poi_vectors,
    scene_query,
)
from training.embedding.casestudy_report import ALL, IDEAL, PER_SCENE_HEADER, RANDOM, summarize, write_report

TRUTH_POIS = "truth.pois"


class CaseStudyError(ValueError):
    pass


@dataclass(frozen=True)
class Case:
    group: str  # the scenes' group in the report (vacation, weather, meal, taste)
    scene: str  # the typed scene; {column} placeholders are filled from `for_each`
    target: str  # Spark SQL over the truth table joined with clean.pois: the shops that fit
    for_each: list[str] = field(default_factory=list)  # columns whose distinct values expand the case


DEFAULT_ENCODERS = {
    "base": "latest:contrastive/base",
    "stage1": "latest:contrastive/no_ft",
    "stage2_from_base": "latest:contrastive/no_cpt",
    "full": "latest:contrastive",
}
# The synthetic world's semantic effects (etl/synthetic/impressions.py), as a person would type them.
DEFAULT_CASES = [
    Case(
        "vacation", "a user visiting {city} on vacation", "dish_province = {province}", ["city", "province"]
    ),
    Case("weather", "a freezing snowy winter evening, something to warm up", "temperature = 1"),
    Case("weather", "a rainy cold day at home", "temperature = 1"),
    Case("weather", "a hot summer afternoon, 35 degrees outside", "temperature = -1"),
    Case("meal", "breakfast near the office before work", "meal = 'breakfast'"),
    Case("meal", "a late-night snack after working overtime", "meal = 'late_night'"),
    Case("taste", "craving something really spicy", "spicy = 1"),
    Case("taste", "something sweet for dessert", "sweet = 1"),
    # the same effects phrased as the log's user environment slice phrases an order's scene (what
    # the scene_poi pairs of stage 2 show the encoder): typed text and logged text side by side
    Case(
        "vacation_logged",
        "Saturday, 12:00, {city}, hotel, sunny, 20°C, away from home",
        "dish_province = {province}",
        ["city", "province"],
    ),
    Case("weather_logged", "Monday, 19:00, Harbin, home, snowy, -12°C", "temperature = 1"),
    Case("weather_logged", "Sunday, 15:00, Guangzhou, home, sunny, 35°C", "temperature = -1"),
    Case("meal_logged", "Tuesday, 07:00, Shanghai, office, cloudy, 16°C", "meal = 'breakfast'"),
    Case("meal_logged", "Wednesday, 23:00, Beijing, home, cloudy, 12°C", "meal = 'late_night'"),
]


@dataclass(frozen=True)
class CaseStudyConfig:
    encoders: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ENCODERS))  # label -> source
    cases: list[Case] = field(default_factory=lambda: list(DEFAULT_CASES))
    top_k: int = 10  # shops recalled per scene
    wrap: bool = True  # wrap each scene in `slice`'s special tokens (as `larr recall`)
    slice: str = ""  # "" = the dataset's user environment slice
    truth_table: str = TRUTH_POIS  # the items' hidden facts the targets read
    embed_missing: bool = True  # embed the shops with an encoder that has no vectors yet
    max_scenes: int = 500  # a bound on the expanded scenes (they are broadcast and collected)
    center: bool = False  # subtract the mean shop vector of each encoder before the cosine
    plot_dir: str = ""  # "" = a temporary folder (the files are logged to MLflow)

    def __post_init__(self) -> None:
        if not self.encoders:
            raise ValueError("encoders: give at least one label: source (e.g. full: latest:contrastive)")
        for label in self.encoders:
            if not re.fullmatch(r"[A-Za-z0-9_]+", label):
                raise ValueError(
                    f"encoders: label {label!r} must be letters, digits and _ (it names metrics)"
                )
        if not self.cases:
            raise ValueError("cases: give at least one scene")
        for i, case in enumerate(self.cases):
            if not case.scene.strip() or not case.target.strip() or not case.group.strip():
                raise ValueError(f"cases[{i}]: group, scene and target must not be empty")
            for text in (case.scene, case.target):
                unknown = sorted(set(placeholders(text)) - set(case.for_each))
                if unknown:
                    raise ValueError(
                        f"cases[{i}]: placeholder {{{unknown[0]}}} is not in for_each {case.for_each}"
                    )
        if self.top_k < 1 or self.max_scenes < 1:
            raise ValueError(f"top_k and max_scenes must be >= 1, got {self.top_k} and {self.max_scenes}")


@dataclass(frozen=True)
class Scene:
    group: str
    text: str  # as typed (placeholders filled)
    target: str  # the SQL condition (placeholders filled, quoted)


def placeholders(text: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(text) if name]


def sql_string(value) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def facts_table(spark: SparkSession, catalog: TableCatalog, truth_table: str, versions: dict) -> DataFrame:
    """The truth table joined with clean.pois (its columns first; a clean column it lacks is added)
    and each shop's `title`: what targets, for_each and the report read."""
    truth = catalog.read(spark, truth_table, version=versions[truth_table])
    pois = catalog.read(spark, POIS, version=versions[POIS])
    schema = read_schema(spark, catalog, versions[SCHEMA_TABLE])
    extra = [c for c in pois.columns if c not in truth.columns]
    return truth.join(pois.select("poi_id", *extra, item_title(schema).alias("_title")), "poi_id")


def expand(facts: DataFrame, cases: list[Case], max_scenes: int) -> list[Scene]:
    """Every case's scenes, in order; a case's for_each values are collected (bounded by max_scenes)."""
    scenes: list[Scene] = []
    for i, case in enumerate(cases):
        missing = [c for c in case.for_each if c not in facts.columns]
        if missing:
            raise CaseStudyError(
                f"cases[{i}].for_each: column {missing[0]!r} is in neither the truth table nor clean.pois "
                f"(they have: {', '.join(facts.columns)})"
            )
        rows = [{}]
        if case.for_each:
            values = facts.select(*case.for_each).where(
                " and ".join(f"`{c}` is not null" for c in case.for_each)
            )
            rows = [
                r.asDict() for r in values.distinct().orderBy(*case.for_each).limit(max_scenes + 1).collect()
            ]
        for row in rows:
            scenes.append(
                Scene(
                    case.group,
                    case.scene.format(**row),
                    case.target.format(**{k: sql_string(v) for k, v in row.items()}),
                )
            )
        if len(scenes) > max_scenes:
            raise CaseStudyError(f"cases expand into more than max_scenes = {max_scenes} scenes (cases[{i}])")
    return scenes


def fits_column(facts: DataFrame, scenes: list[Scene]) -> DataFrame:
    """poi_id, fits: array<boolean> (one per scene: does the shop fit it); a target Spark cannot
    read is one line naming the scene."""
    columns = []
    for scene in scenes:
        try:
            column = F.coalesce(F.expr(scene.target).cast("boolean"), F.lit(False))
            _ = facts.select(column).schema  # analysed now: an unknown column or a wrong type fails here
        except (AnalysisException, ParseException) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CaseStudyError(f"target {scene.target!r} of scene {scene.text!r}: {first}") from None
        columns.append(column)
    return facts.select("poi_id", F.array(*columns).alias("fits"))


def score_scenes(vectors: DataFrame, fits: DataFrame, queries: DataFrame, top_k: int) -> DataFrame:
    """Per scene: precision (share of the top_k by cosine that fit), random (the pool's share that
    fits), fitting, pool and top (the top_k as structs of rank, poi_id, cosine, fit), one pass."""
    scored = (
        vectors.join(fits, "poi_id")
        .crossJoin(F.broadcast(queries))
        .select(
            "scene_idx",
            "poi_id",
            cosine_between(F.col("vector"), F.col("query")).alias("cosine"),
            F.element_at("fits", F.col("scene_idx") + 1).cast("int").alias("fit"),
        )
    )
    order = Window.partitionBy("scene_idx").orderBy(F.col("cosine").desc(), F.col("poi_id"))
    ranked = scored.withColumn("rank", F.row_number().over(order))
    in_top = F.col("rank") <= top_k
    return ranked.groupBy("scene_idx").agg(
        (F.sum(F.when(in_top, F.col("fit")).otherwise(0)) / F.lit(float(top_k))).alias("precision"),
        F.avg("fit").alias("random"),
        F.sum("fit").alias("fitting"),
        F.count("*").alias("pool"),
        F.sort_array(F.collect_list(F.when(in_top, F.struct("rank", "poi_id", "cosine", "fit")))).alias(
            "top"
        ),
    )


def centered(vectors: DataFrame) -> DataFrame:
    """The vectors minus their mean (one aggregate; the mean's `dim` floats come back to the
    driver): the direction every shop shares no longer decides which shops are nearest."""
    means = vectors.select(F.posexplode("vector").alias("i", "x")).groupBy("i").agg(F.avg("x").alias("m"))
    mean = [float(r["m"]) for r in sorted(means.collect(), key=lambda r: r["i"])]
    shift = F.array(*[F.lit(m) for m in mean])
    return vectors.select("poi_id", F.zip_with("vector", shift, lambda a, b: a - b).alias("vector"))


def encoder_vectors(spark, catalog: TableCatalog, label: str, source: str, ref, cfg, log) -> DataFrame:
    """The shops' vectors of the encoder's version (`larr recall`'s lookup, at the table's published
    version), embedded first when missing and allowed."""
    try:
        vectors, _ = poi_vectors(spark, catalog, ref.version, source)
    except RecallError:
        if not cfg.embed_missing:
            raise CaseStudyError(
                f"encoders.{label}: {POI_EMBEDDINGS} has no rows for {source} (version {ref.version}): run "
                f"`larr embed texts --set encoder={source} --set sides=[poi]` or set embed_missing: true"
            ) from None
        from features.embeddings.texts import EmbedTextsConfig
        from features.embeddings.texts import run as embed_texts

        log(f"casestudy: {label}: embedding the shops with {source}")
        embed_texts(spark, catalog, EmbedTextsConfig(encoder=source, sides=["poi"], export=False), log=log)
        vectors, _ = poi_vectors(spark, catalog, ref.version, source)
    return vectors.select("poi_id", "vector")


def run(spark: SparkSession, catalog: TableCatalog, cfg: CaseStudyConfig, log=print) -> dict:
    import mlflow

    loaded = {}
    for label, source in cfg.encoders.items():  # every encoder loads before any Spark work
        try:
            loaded[label] = resolve_encoder(source, mlflow.get_tracking_uri())
        except EmbedError as err:
            raise CaseStudyError(f"encoders.{label}: {err}") from None
    versions = {name: catalog.version(spark, name) for name in (cfg.truth_table, POIS, SCHEMA_TABLE)}
    if versions[cfg.truth_table] is None:
        raise CaseStudyError(
            f"{cfg.truth_table} does not exist: the case study's targets read the items' hidden facts "
            "(the synthetic world's `larr generate` writes them; set truth_table for your own)"
        )
    schema = read_schema(spark, catalog, versions[SCHEMA_TABLE])
    cfg = replace(cfg, slice=cfg.slice or default_slice(schema))
    check_slice(schema, cfg.slice)
    facts = facts_table(spark, catalog, cfg.truth_table, versions)
    scenes = expand(facts, cfg.cases, cfg.max_scenes)
    fits = fits_column(facts, scenes)
    counts = fits.select(
        *[F.sum(F.element_at("fits", i + 1).cast("int")).alias(str(i)) for i in range(len(scenes))]
    ).first()
    skipped = [s.text for i, s in enumerate(scenes) if not counts[str(i)]]
    if skipped:
        log(f"casestudy: {len(skipped)} scene(s) no shop fits, left out: {', '.join(skipped)}")
    kept = [i for i in range(len(scenes)) if counts[str(i)]]
    if not kept:
        raise CaseStudyError("no scene has a shop that fits its target: nothing to score")
    scenes = [scenes[i] for i in kept]
    fits = fits.select("poi_id", F.array(*[F.element_at("fits", i + 1) for i in kept]).alias("fits"))
    texts = [scene_query(s.text, cfg.wrap, cfg.slice) for s in scenes]
    per_encoder: dict[str, list[dict]] = {}
    tops: dict[str, list[list[dict]]] = {}
    encoder_versions = {}
    for label, (ref, model) in loaded.items():
        source = cfg.encoders[label]
        embedded, _ = model.embed(texts, batch_size=16)
        queries = spark.createDataFrame(
            [(i, [float(x) for x in v]) for i, v in enumerate(np.asarray(embedded))],
            "scene_idx int, query array<float>",
        )
        vectors = encoder_vectors(spark, catalog, label, source, ref, cfg, log)
        if cfg.center:
            vectors = centered(vectors)
        rows = {r["scene_idx"]: r for r in score_scenes(vectors, fits, queries, cfg.top_k).collect()}
        results, top_lists = [], []
        for i, _ in enumerate(scenes):
            r = rows[i]
            results.append(
                {
                    "precision": round(float(r["precision"]), 4),
                    "random": round(float(r["random"]), 4),
                    "ideal": min(int(r["fitting"]), cfg.top_k) / cfg.top_k,
                    "fitting": int(r["fitting"]),
                    "pool": int(r["pool"]),
                }
            )
            top_lists.append([{"poi_id": int(t["poi_id"]), "cosine": round(float(t["cosine"]), 4), "fit": bool(t["fit"])} for t in r["top"]])  # fmt: skip
        per_encoder[label], tops[label] = results, top_lists
        encoder_versions[label] = ref.version
        mean = float(np.mean([r["precision"] for r in results]))
        log(f"casestudy: {label} ({source}, version {ref.version}): precision@{cfg.top_k} {mean:.3f}")
        del model
    loaded.clear()
    recalled = sorted({t["poi_id"] for lists in tops.values() for top in lists for t in top})
    titles = {
        int(r["poi_id"]): r["_title"]
        for r in facts.where(F.col("poi_id").isin(recalled)).select("poi_id", "_title").collect()
    }  # bounded: encoders x scenes x top_k shops
    for lists in tops.values():
        for top in lists:
            for t in top:
                t["title"] = titles.get(t["poi_id"])
    versions[POI_EMBEDDINGS] = catalog.version(spark, POI_EMBEDDINGS)
    summary = summarize(scenes, per_encoder)
    folder = Path(cfg.plot_dir or tempfile.mkdtemp(prefix="larr-casestudy-"))
    folder.mkdir(parents=True, exist_ok=True)
    table, plot = write_report(folder, scenes, per_encoder, summary, cfg.top_k)
    log(table.read_text().split("\n\n" + PER_SCENE_HEADER)[0])
    figures = {
        f"precision_at_{cfg.top_k}_{label}": summary["means"][label][ALL]["mean"]
        for label in [*per_encoder, RANDOM, IDEAL]
    }
    for label in [*per_encoder, RANDOM]:
        for group in summary["groups"][:-1]:
            figures[f"precision_at_{cfg.top_k}_{label}_{group}"] = summary["means"][label][group]["mean"]
    if mlflow.active_run() is not None:
        mlflow.log_artifact(str(table))
    return {
        **figures,
        "best": summary["best"],
        "summary": summary,
        "scenes": [
            {
                "group": s.group,
                "scene": s.text,
                "target": s.target,
                **{label: {**per_encoder[label][i], "top": tops[label][i]} for label in per_encoder},
            }
            for i, s in enumerate(scenes)
        ],  # fmt: skip
        "skipped": skipped,
        "encoder_versions": encoder_versions,
        "table": str(table),
        "plot": str(plot),
        "input_versions": versions,
    }
