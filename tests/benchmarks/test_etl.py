"""Benchmark plumbing that needs no Spark: the scaling plot of `larr bench etl`."""

from benchmarks.etl import _plot_scaling
from benchmarks.projection import project, target_label


def test_scaling_plot_is_a_png(tmp_path):
    per_size = [
        {"impressions": n, "copy_seconds": n / 1e5, "jobs": {"etl clean": {"seconds": n / 3e4}}}
        for n in (1_000_000, 4_000_000)
    ]
    path = _plot_scaling(per_size, str(tmp_path / "runs" / "bench-etl.png"))
    assert path == str(tmp_path / "runs" / "bench-etl.png")
    assert (tmp_path / "runs" / "bench-etl.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _plot_scaling(per_size, "s3://bucket/runs/bench-etl.png") is None


def _measured(seconds: float, task_seconds: float, shuffle_mb: float) -> dict:
    spark = {"task_seconds": task_seconds, "shuffle_write_mb": shuffle_mb}
    return {"seconds": seconds, "spark": spark}


def test_the_projection_scales_the_largest_sizes_cost_to_the_target():
    per_size = [
        {
            "impressions": n,
            "copy_seconds": n / 1e5,
            "copy_spark": {"task_seconds": 2 * n / 1e5, "shuffle_write_mb": 0.0},
            "jobs": {
                "generate": _measured(n / 2e5, n / 1e5, 0.0),
                # fixed cost at the small size: 4x the rows in 2x the time
                "etl clean": _measured(10.0 if n == 1_000_000 else 20.0, 36.0, 400.0),
            },
        }
        for n in (1_000_000, 4_000_000)
    ]
    out = project(per_size, cores=2, targets=[1_000_000_000, 10_000_000_000])
    assert out["from_impressions"] == 4_000_000 and "linear" in out["assumptions"]
    assert set(out["jobs"]) == {"plain Delta copy", "generate", "etl clean"}
    clean = out["jobs"]["etl clean"]
    assert clean["growth_exponent"] == 0.5
    assert clean["task_seconds_per_million"] == 9.0
    # 36 task-s per 4M -> 9,000 task-s per 1B = 2.5 core-hours; wall 20 s x 2 cores x 250 = 2.8 h
    assert clean["1e9"] == {"wall_core_hours": 2.8, "task_core_hours": 2.5, "shuffle_tb": 0.1}
    assert clean["1e10"]["task_core_hours"] == 25.0 and clean["1e10"]["shuffle_tb"] == 1.0
    assert out["jobs"]["plain Delta copy"]["growth_exponent"] == 1.0


def test_a_projection_from_one_size_has_no_growth_and_a_run_without_metrics_only_wall_time():
    entry = {"impressions": 1_000_000, "copy_seconds": 5.0, "copy_spark": None, "jobs": {}}
    out = project([entry], cores=4, targets=[1_000_000_000])
    assert out["jobs"]["plain Delta copy"] == {
        "task_seconds_per_million": None,
        "growth_exponent": None,
        "1e9": {"wall_core_hours": 5.6},
    }
    assert target_label(10_000_000_000) == "1e10" and target_label(1_000_000_000) == "1e9"
