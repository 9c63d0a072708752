import math

from benchmarks.embed import BenchEmbedConfig, bench_embed
from etl.tokens import scene_slice, wrap_text
from tests.features.builders import tiny_encoder_model


def test_udf_and_direct_throughput_and_the_dedup_factor(spark, catalog, tmp_path):
    rows = [
        ("weather", value, wrap_text(scene_slice("weather"), value), i, impressions)
        for i, (value, impressions) in enumerate([("rainy", 30), ("sunny", 50), ("snowy", 4)])
    ]
    schema = "feature string, value string, text string, scene_id long, impressions long"
    catalog.write(spark.createDataFrame(rows, schema), "features.scene_dictionary")
    folder, _, _ = tiny_encoder_model(tmp_path / "encoder")
    out = bench_embed(
        spark, catalog, BenchEmbedConfig(encoder=str(folder), texts=40, batch_size=8), log=lambda _: None
    )
    assert out["texts"] == 40 and out["distinct_texts"] == 3 and out["dictionary_source"] == "lakehouse"
    for key in ("direct_texts_per_s", "udf_texts_per_s", "udf_cold_texts_per_s", "ratio_to_direct"):
        assert math.isfinite(out[key]) and out[key] > 0, key
    assert out["ratio_to_direct"] == round(
        out["udf_texts_per_s"] / out["direct_texts_per_s"], 3
    ) or math.isclose(
        out["ratio_to_direct"], out["udf_texts_per_s"] / out["direct_texts_per_s"], rel_tol=0.01
    )
    assert out["meets_target"] == (out["ratio_to_direct"] >= 0.8)
    assert (out["dictionary_rows"], out["impressions_covered"], out["dedup_factor"]) == (3, 84, 28.0)
    assert catalog.exists(spark, "features.scene_dictionary")  # the lakehouse's own table is kept
