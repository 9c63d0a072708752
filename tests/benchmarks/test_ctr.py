"""`larr bench ctr` on the tiny world: every figure the issue asks for is measured and consistent."""

from __future__ import annotations

import torch

from benchmarks.ctr import BenchCtrConfig, run


def test_bench_reports_rates_ratio_loader_and_scoring_latency(spark, ctr_world):
    catalog, export = ctr_world
    cfg = BenchCtrConfig(
        models=("ple", "larr"), batch_size=128, steps=2, warmup=1, rounds=2, candidates=20, requests=5,
        scene_vectors=export,
    )  # fmt: skip
    threads = torch.get_num_threads()
    figures = run(spark, catalog, cfg, log=lambda _: None)
    # scoring on one core, as the figure is; training's threads are given back
    assert figures["scoring_threads"] == 1 and torch.get_num_threads() == threads == figures["torch_threads"]
    rates = figures["train_samples_per_s"]
    assert set(rates) == {"ple", "larr"} and min(rates.values()) > 0
    assert figures["larr_ple_time_ratio"] == round(rates["ple"] / rates["larr"], 3)
    per_round = figures["larr_ple_time_ratio_per_round"]
    assert len(per_round) == cfg.rounds and min(per_round) <= figures["larr_ple_time_ratio"] <= max(per_round)
    assert figures["loader_rows_per_s"] > 0
    assert figures["loader_headroom"] == round(figures["loader_rows_per_s"] / max(rates.values()), 3)
    for model in ("ple", "larr"):
        latency = figures["scoring_latency_ms"][model]
        assert 0 < latency["p50_ms"] <= latency["p99_ms"]
    assert figures["candidates"] == 20
