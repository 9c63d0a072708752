"""`larr bench etl` end to end on a tiny world: every job is timed against a copy measured before
and after the jobs, and the figures agree with each other."""

from __future__ import annotations

import pytest

from benchmarks.etl import BenchEtlConfig, bench_etl
from core.catalog import TableCatalog

JOBS = {"generate", "etl clean", "etl corpus", "etl pairs", "features scene", "features stats", "etl samples"}


def test_every_job_is_timed_against_the_mean_of_two_copies(spark, tmp_path):
    catalog = TableCatalog(root=str(tmp_path / "lakehouse"), unity_prefix=None)
    lines: list[str] = []
    out = bench_etl(spark, catalog, BenchEtlConfig(sizes=[8_000]), log=lines.append)
    (size,) = out["sizes"]
    assert size["impressions"] == 8_000 and set(size["jobs"]) == JOBS
    before, after = size["copy_seconds_before_after"]
    assert before > 0 and after > 0 and size["copy_seconds"] == pytest.approx((before + after) / 2, abs=0.01)
    for name, job in size["jobs"].items():
        assert job["ratio_to_copy"] == pytest.approx(size["copy_seconds"] / job["seconds"], rel=0.01), name
        assert job["spark"]["stages"] > 0, name
    # progress while the jobs run, then one line per job with its ratio
    assert sum("ratio" in line for line in lines) == len(JOBS)
    assert set(out["projection"]["jobs"]) == {"plain Delta copy", *JOBS}
    # the scratch tables are dropped unless kept
    assert not (tmp_path / "lakehouse" / "_bench" / "etl_8000").exists()
