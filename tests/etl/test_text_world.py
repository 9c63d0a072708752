"""The text jobs end to end on the tiny generated world (raw minus bad rows stands in for clean.*)."""

import pytest
from pyspark.sql import functions as F

from core.schema_table import write_schema
from etl.synthetic.job import world_schema
from etl.text import corpus, pairs
from etl.tokens import unwrap_text
from features import scene
from tests.features.builders import clean_world


@pytest.mark.slow
def test_text_jobs_on_the_world(spark, world_catalog, catalog, tiny_world_config):
    users, pois, impressions = clean_world(spark, world_catalog)
    schema = world_schema(tiny_world_config)
    write_schema(spark, catalog, schema)
    catalog.write(users, "clean.users")
    catalog.write(pois, "clean.pois")
    catalog.write(impressions, "clean.impressions", partition_by=["dt"])
    n_pois = pois.count()

    cpt = corpus.run(spark, catalog, corpus.CorpusConfig(heldout_fraction=0.2), log=lambda _: None)
    assert cpt["poi_rows"] == n_pois and cpt["general_rows"] == 0
    assert 0.1 * n_pois < cpt["poi_heldout_rows"] < 0.3 * n_pois
    assert cpt["poi_mean_target_chars"] > cpt["poi_mean_input_chars"] > 20

    end = "2026-04-08"  # day 3 of the tiny world: its test day
    cfg = pairs.PairsConfig(history_end_date=end, max_pairs_per_user=3, max_pairs_per_poi=4)
    figures = pairs.run(spark, catalog, cfg, log=lambda _: None)
    table = catalog.read(spark, "pairs.contrastive")
    assert (
        figures["poi_poi_rows"] == n_pois
        and figures["user_user_rows"] > 100
        and figures["user_poi_rows"] > 100
    )
    user_poi = table.where(F.col("pair_type") == "user_poi")
    assert user_poi.groupBy("anchor_id").count().agg(F.max("count")).first()[0] <= 3
    assert user_poi.groupBy("positive_id").count().agg(F.max("count")).first()[0] <= 4
    # every positive is an order of a day before the end date
    orders = impressions.where((F.col("ordered") == 1) & (F.col("dt") < F.lit(end).cast("date")))
    orders = orders.select(F.col("user_id").alias("anchor_id"), F.col("poi_id").alias("positive_id"))
    assert user_poi.join(orders, ["anchor_id", "positive_id"], "left_anti").count() == 0
    # every text parses back into registered slices; nothing prints as null
    sample = table.select("text_a", "text_b").limit(300).collect()
    for a, b in sample:
        assert unwrap_text(a) and unwrap_text(b)
        assert "null" not in a + b and "None" not in a + b

    values = scene.run(spark, catalog, scene.SceneConfig(), log=lambda _: None)
    assert all(values[f"{f}_values"] >= 1 for f in schema.scene_names)
    assert values["time_slot_values"] >= 4 and values["city_values"] >= 2
    dictionary = catalog.read(spark, "features.scene_dictionary")
    assert dictionary.agg(F.sum("impressions")).first()[0] == impressions.count() * len(schema.scene_names)
