"""Benchmark plumbing that needs no Spark: the scaling plot of `larr bench etl`."""

from benchmarks.etl import _plot_scaling


def test_scaling_plot_is_a_png(tmp_path):
    per_size = [
        {"impressions": n, "copy_seconds": n / 1e5, "jobs": {"etl clean": {"seconds": n / 3e4}}}
        for n in (1_000_000, 4_000_000)
    ]
    path = _plot_scaling(per_size, str(tmp_path / "runs" / "bench-etl.png"))
    assert path == str(tmp_path / "runs" / "bench-etl.png")
    assert (tmp_path / "runs" / "bench-etl.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _plot_scaling(per_size, "s3://bucket/runs/bench-etl.png") is None
