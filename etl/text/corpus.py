"""etl corpus: clean.pois, raw.dataset_schema (+ an optional general-text file) -> corpus.cpt; one
row per item with text (and per drawn general text); not partitioned.

Stage 1 (continual pretraining) samples: `input_text` = the item's wrapped `role: input` slices
(the synthetic world: name and location), `target_text` = its wrapped `role: target` slices. An
item with no target text teaches nothing and is left out (counted as `items_without_text`). A hash of (seed, poi_id) holds out a fixed share of
POIs (`split` = heldout) for measuring perplexity. General text (`source` = general, empty input,
the text as target) can be mixed in at `general_ratio` general rows per POI row against forgetting;
a general row is drawn (or repeated) by a hash of its text, so the mix is deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from core.catalog import TableCatalog
from core.dataset_schema import DatasetSchema
from core.randomness import uniform
from core.schema_table import SCHEMA_TABLE, read_schema
from etl.text.item_text import corpus_text
from etl.text.slices import INPUT, TARGET, item_slices
from etl.text.split import SPLITS, check_fraction, heldout_split

INPUTS = ("clean.pois",)
OUTPUT = "corpus.cpt"
POI_SOURCE, GENERAL_SOURCE = "poi", "general"
GENERAL_FORMATS = (".parquet", ".txt", ".jsonl", ".json")


class GeneralCorpusError(ValueError):
    pass


@dataclass(frozen=True)
class CorpusConfig:
    heldout_fraction: float = 0.05  # share of POIs held out for perplexity
    seed: int = 17  # keys the held-out split (same seed as `etl pairs` = same held-out POIs)
    general_corpus_path: str = ""  # .parquet / .jsonl / .json with a `text` column, or .txt (a line each)
    general_ratio: float = 0.0  # general rows per POI row (the paper: 9)

    def __post_init__(self) -> None:
        check_fraction("heldout_fraction", self.heldout_fraction)
        if not (self.general_ratio >= 0.0 and math.isfinite(self.general_ratio)):
            raise ValueError(f"general_ratio must be >= 0, got {self.general_ratio}")
        if self.general_ratio > 0 and not self.general_corpus_path:
            raise ValueError("general_ratio > 0 needs general_corpus_path")
        if self.general_corpus_path and not self.general_corpus_path.endswith(GENERAL_FORMATS):
            raise ValueError(
                f"general_corpus_path must end with one of {', '.join(GENERAL_FORMATS)},"
                f" got {self.general_corpus_path!r}"
            )


def poi_rows(pois: DataFrame, schema: DatasetSchema, heldout_fraction: float, seed: int) -> DataFrame:
    """One row per item with a target text."""
    rows = pois.select(
        F.col("poi_id").cast("long"),
        F.lit(POI_SOURCE).alias("source"),
        corpus_text(schema, INPUT).alias("input_text"),
        corpus_text(schema, TARGET).alias("target_text"),
        heldout_split(seed, heldout_fraction, "poi", "poi_id").alias("split"),
    )
    return rows.where(F.col("target_text") != "")


def general_rows(general: DataFrame, copies: float, heldout_fraction: float, seed: int) -> DataFrame:
    """Each general text `copies` times in expectation: floor(copies) times, plus once more for a
    hash-chosen share frac(copies) of texts. Its split is a hash of the text."""
    whole = math.floor(copies)
    extra = F.when(uniform(seed, "general_copy", "text") < F.lit(copies - whole), 1).otherwise(0)
    return (
        general.select("text")
        .withColumn("_copy", F.explode(F.array_repeat(F.lit(0), (F.lit(whole) + extra).cast("int"))))
        .select(
            F.lit(None).cast("long").alias("poi_id"),
            F.lit(GENERAL_SOURCE).alias("source"),
            F.lit("").alias("input_text"),
            F.col("text").alias("target_text"),
            heldout_split(seed, heldout_fraction, GENERAL_SOURCE, "text").alias("split"),
        )
    )


def transform(
    pois: DataFrame,
    schema: DatasetSchema,
    general: DataFrame | None,
    general_copies: float,
    heldout_fraction: float,
    seed: int,
) -> DataFrame:
    """The corpus: item rows, plus general rows when `general` is given (`general_copies` each)."""
    rows = poi_rows(pois, schema, heldout_fraction, seed)
    if general is not None and general_copies > 0:
        rows = rows.unionByName(general_rows(general, general_copies, heldout_fraction, seed))
    return rows


def read_general_corpus(spark: SparkSession, path: str) -> DataFrame:
    """The general corpus as one `text` column (blank texts dropped); a clear error when the file
    is missing or has no `text` column."""
    if "://" not in path and not Path(path).exists():
        raise GeneralCorpusError(f"general_corpus_path {path} does not exist")
    if path.endswith(".txt"):
        df = spark.read.text(path).withColumnRenamed("value", "text")
    elif path.endswith(".parquet"):
        df = spark.read.parquet(path)
    else:
        df = spark.read.json(path)
    if "text" not in df.columns:
        raise GeneralCorpusError(
            f"general corpus {path} has no 'text' column (columns: {', '.join(df.columns) or 'none'})"
        )
    if dict(df.dtypes)["text"] != "string":
        raise GeneralCorpusError(
            f"general corpus {path}: column 'text' must be a string, got {dict(df.dtypes)['text']}"
        )
    return df.select("text").where(F.col("text").isNotNull() & (F.trim("text") != ""))


def run(spark: SparkSession, catalog: TableCatalog, cfg: CorpusConfig, log=print) -> dict:
    input_versions = {name: catalog.version(spark, name) for name in (*INPUTS, SCHEMA_TABLE)}
    schema = read_schema(spark, catalog, input_versions[SCHEMA_TABLE])
    if not item_slices(schema, role=TARGET):
        log(
            f"etl corpus: dataset schema {schema.name!r} declares no items text slice with role: target; no item rows"
        )
    pois = catalog.read(spark, "clean.pois", version=input_versions["clean.pois"])
    counts = pois.agg(F.count("*"), F.count(F.when(corpus_text(schema, TARGET) != "", 1))).first()
    items, with_text = int(counts[0]), int(counts[1])
    general, copies, general_texts = None, 0.0, 0
    if cfg.general_corpus_path and cfg.general_ratio > 0:
        general = read_general_corpus(spark, cfg.general_corpus_path)
        general_texts = general.count()
        if general_texts == 0:
            raise GeneralCorpusError(f"general corpus {cfg.general_corpus_path} has no non-blank text")
        copies = cfg.general_ratio * with_text / general_texts
    corpus = transform(pois, schema, general, copies, cfg.heldout_fraction, cfg.seed)
    version = catalog.write(corpus, OUTPUT)
    figures = summarize(catalog.read(spark, OUTPUT, version=version))
    figures["items_without_text"] = items - with_text
    log(
        f"etl corpus: wrote {OUTPUT}: {figures['rows']} rows (version {version}):"
        f" {figures['poi_rows']} item rows, {figures['general_rows']} general rows;"
        f" {figures['items_without_text']} items without target text left out"
    )
    return {
        **figures,
        "general_texts": general_texts,
        "general_copies": round(copies, 4),
        "input_versions": input_versions,
        "output_versions": {OUTPUT: version},
    }


def summarize(corpus: DataFrame) -> dict:
    """Rows per source and split, mean text lengths in characters per source (a small aggregate)."""
    groups = (
        corpus.groupBy("source", "split")
        .agg(
            F.count("*").alias("rows"),
            F.sum(F.length("input_text")).alias("input_chars"),
            F.sum(F.length("target_text")).alias("target_chars"),
        )
        .collect()
    )
    figures: dict = {"rows": sum(int(g["rows"]) for g in groups)}
    for source in (POI_SOURCE, GENERAL_SOURCE):
        mine = [g for g in groups if g["source"] == source]
        rows = sum(int(g["rows"]) for g in mine)
        figures[f"{source}_rows"] = rows
        for split in SPLITS:
            figures[f"{source}_{split}_rows"] = sum(int(g["rows"]) for g in mine if g["split"] == split)
        for side in ("input", "target"):
            total = sum(int(g[f"{side}_chars"] or 0) for g in mine)
            figures[f"{source}_mean_{side}_chars"] = round(total / rows, 1) if rows else 0.0
    poi, general = figures[f"{POI_SOURCE}_rows"], figures[f"{GENERAL_SOURCE}_rows"]
    figures["general_ratio_actual"] = round(general / poi, 4) if poi else 0.0
    return figures
