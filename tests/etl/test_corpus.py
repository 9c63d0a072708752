import pytest
from pyspark.sql import functions as F

from etl.text import corpus
from etl.text.corpus import CorpusConfig, GeneralCorpusError
from jobs.config import ConfigError, default_config_path, load_config
from tests.etl.text_fixtures import POIS_SCHEMA, SCHEMA, write_clean

POI1_INPUT = "<POI_name>Aunt Li's Claypot</POI_name><POI_loc>Guangzhou, Tianhe, 12 Renmin Road</POI_loc>"
POI1_TARGET = (
    "<POI_intro>Home-style claypot rice.</POI_intro><POI_cuisine>Cantonese</POI_cuisine>"
    "<POI_dishes>claypot rice, rice noodle rolls</POI_dishes><POI_tags>cosy, fast delivery</POI_tags>"
    "<POI_hours>open 10:00-22:00</POI_hours><POI_price>moderate price, level 2 of 4</POI_price>"
    "<POI_stats>rating 4.6 of 5, 1200 orders a month</POI_stats>"
)
# no tags, no rating; a token inside the introduction is stripped
POI2_INPUT = "<POI_name>Noodle No. 7</POI_name><POI_loc>Chengdu, Wuhou, 3 Jiefang Road</POI_loc>"
POI2_TARGET = (
    "<POI_intro>Best noodles in town</POI_intro><POI_cuisine>Noodles</POI_cuisine>"
    "<POI_dishes>dan dan noodles</POI_dishes><POI_hours>open 06:00-14:00</POI_hours>"
    "<POI_price>budget price, level 1 of 4</POI_price><POI_stats>300 orders a month</POI_stats>"
)
POI3_INPUT = "<POI_name>Hotpot King</POI_name><POI_loc>Chengdu, Jinjiang, 8 Heping Road</POI_loc>"
POI3_TARGET = (
    "<POI_intro>Spicy hotpot.</POI_intro><POI_cuisine>Hotpot</POI_cuisine><POI_dishes>beef hotpot</POI_dishes>"
    "<POI_tags>spicy</POI_tags><POI_hours>open 17:00-03:00</POI_hours>"
    "<POI_price>premium price, level 4 of 4</POI_price><POI_stats>rating 4.9 of 5, 50 orders a month</POI_stats>"
)
COLUMNS = ["poi_id", "source", "input_text", "target_text", "split"]


def _rows(df):
    return sorted((tuple(r) for r in df.select(COLUMNS).collect()), key=repr)


def test_corpus_whole_table_and_idempotent(spark, catalog):
    write_clean(spark, catalog)
    cfg = CorpusConfig(heldout_fraction=0.0)
    figures = corpus.run(spark, catalog, cfg, log=lambda _: None)
    expected = sorted(
        [
            (1, "poi", POI1_INPUT, POI1_TARGET, "train"),
            (2, "poi", POI2_INPUT, POI2_TARGET, "train"),
            (3, "poi", POI3_INPUT, POI3_TARGET, "train"),
        ],
        key=repr,
    )
    first = catalog.read(spark, "corpus.cpt")
    assert first.columns == COLUMNS
    assert _rows(first) == expected
    assert figures["rows"] == figures["poi_rows"] == figures["poi_train_rows"] == 3
    assert figures["general_rows"] == figures["poi_heldout_rows"] == 0
    mean_input = sum(len(t) for t in (POI1_INPUT, POI2_INPUT, POI3_INPUT)) / 3
    assert figures["poi_mean_input_chars"] == round(mean_input, 1)
    assert figures["input_versions"] == {"clean.pois": 0, "raw.dataset_schema": 0}
    assert figures["items_without_text"] == 0
    again = corpus.run(spark, catalog, cfg, log=lambda _: None)
    assert again["output_versions"]["corpus.cpt"] == figures["output_versions"]["corpus.cpt"] + 1
    assert _rows(catalog.read(spark, "corpus.cpt")) == expected


def test_general_corpus_is_mixed_at_the_ratio(spark, catalog, tmp_path):
    write_clean(spark, catalog)
    path = tmp_path / "general.txt"
    path.write_text("The sky is blue.\n\nWater boils at 100 degrees.\nCats sleep a lot.\n")
    # 3 POIs, 3 non-blank texts, 2 general rows per POI row: every text exactly twice
    cfg = CorpusConfig(heldout_fraction=0.0, general_corpus_path=str(path), general_ratio=2.0)
    figures = corpus.run(spark, catalog, cfg, log=lambda _: None)
    general = catalog.read(spark, "corpus.cpt").where(F.col("source") == "general")
    texts = ["The sky is blue.", "Water boils at 100 degrees.", "Cats sleep a lot."]
    assert _rows(general) == sorted(
        [(None, "general", "", t, "train") for t in texts for _ in range(2)], key=repr
    )
    assert figures["general_rows"] == 6 and figures["general_ratio_actual"] == 2.0
    assert figures["general_mean_input_chars"] == 0.0
    # a fractional ratio: each text once or twice, the same draw on a re-run
    cfg = CorpusConfig(heldout_fraction=0.0, general_corpus_path=str(path), general_ratio=1.5)
    first = _rows(
        catalog.read(
            spark,
            corpus.OUTPUT,
            version=corpus.run(spark, catalog, cfg, log=lambda _: None)["output_versions"][corpus.OUTPUT],
        )
    )
    second = _rows(
        catalog.read(
            spark,
            corpus.OUTPUT,
            version=corpus.run(spark, catalog, cfg, log=lambda _: None)["output_versions"][corpus.OUTPUT],
        )
    )
    assert first == second
    counts = [sum(1 for r in first if r[3] == t) for t in texts]
    assert all(c in (1, 2) for c in counts)


def test_general_corpus_errors(spark, catalog, tmp_path):
    write_clean(spark, catalog)
    missing = CorpusConfig(general_corpus_path=str(tmp_path / "none.parquet"), general_ratio=1.0)
    with pytest.raises(GeneralCorpusError, match="none.parquet does not exist"):
        corpus.run(spark, catalog, missing)
    bad = tmp_path / "bad.parquet"
    spark.createDataFrame([("x",)], "body string").write.parquet(str(bad))
    with pytest.raises(GeneralCorpusError, match="has no 'text' column .columns: body"):
        corpus.run(spark, catalog, CorpusConfig(general_corpus_path=str(bad), general_ratio=1.0))


def test_heldout_split_is_a_stable_share_of_pois(spark):
    pois = spark.range(4000).withColumnRenamed("id", "poi_id")
    pois = pois.select(
        "poi_id", *[F.lit(None).cast(t.split()[1]).alias(t.split()[0]) for t in POIS_SCHEMA.split(", ")[1:]]
    )
    assert corpus.poi_rows(pois, SCHEMA, 0.3, seed=5).isEmpty()  # no target text: nothing to learn
    pois = pois.withColumn("introduction", F.lit("soup"))
    rows = corpus.poi_rows(pois, SCHEMA, 0.3, seed=5)
    heldout = {r[0] for r in rows.where(F.col("split") == "heldout").select("poi_id").collect()}
    assert 0.27 < len(heldout) / 4000 < 0.33
    again = corpus.poi_rows(pois.repartition(7), SCHEMA, 0.3, seed=5).where(F.col("split") == "heldout")
    assert {r[0] for r in again.select("poi_id").collect()} == heldout
    other_seed = corpus.poi_rows(pois, SCHEMA, 0.3, seed=6).where(F.col("split") == "heldout")
    assert {r[0] for r in other_seed.select("poi_id").collect()} != heldout


def test_config_errors_name_the_key():
    assert load_config(CorpusConfig, default_config_path("etl_corpus")) == CorpusConfig()
    with pytest.raises(ConfigError, match="general_corpus_path"):
        load_config(CorpusConfig, None, ["general_ratio=9"])
    with pytest.raises(ConfigError, match="heldout_fraction"):
        load_config(CorpusConfig, None, ["heldout_fraction=1.5"])
    with pytest.raises(ConfigError, match="general_corpus_path must end with"):
        load_config(CorpusConfig, None, ["general_corpus_path=x.csv", "general_ratio=1"])
