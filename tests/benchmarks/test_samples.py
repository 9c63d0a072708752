"""`larr bench samples` at tiny sizes: one group of every item, events x k negatives per size."""

from benchmarks.samples import BenchSamplesConfig, bench_samples


def test_each_size_draws_events_x_k_negatives_and_reports_its_ratio_to_the_smallest(spark, catalog):
    cfg = BenchSamplesConfig(events=300, items=[200, 60], negatives_per_positive=3)
    lines = []
    out = bench_samples(spark, catalog, cfg, log=lines.append)
    assert set(out) == {
        "events",
        "negatives_per_positive",
        "baseline_items",
        "sizes",
        "time_growth",
        "item_growth",
        "cores",
    }
    assert (out["events"], out["negatives_per_positive"], out["baseline_items"]) == (300, 3, 60)
    assert [s["items"] for s in out["sizes"]] == [60, 200]  # smallest first: the baseline
    for size in out["sizes"]:
        assert set(size) == {"items", "seconds", "rows", "rows_per_s", "ranking_join_rows", "ratio"}
        assert size["rows"] == 300 * 3 and size["ranking_join_rows"] == 300 * size["items"]
        assert size["seconds"] > 0
    assert out["sizes"][0]["ratio"] == 1.0
    assert out["time_growth"] == out["sizes"][-1]["ratio"] and out["item_growth"] == round(200 / 60, 2)
    assert len(lines) == 2 and all(line.startswith("bench samples: ") for line in lines)
