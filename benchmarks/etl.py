"""Benchmarks that print JSON (`larr bench ...`): each compares with a baseline measured in the
same run, because these machines are noisy and absolute numbers say little on their own."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from pyspark.sql import SparkSession

from benchmarks.memory import peak_memory
from benchmarks.projection import project
from benchmarks.spark_metrics import measured, stage_metrics
from core.catalog import TableCatalog, is_remote
from etl.synthetic import job as generate_job
from etl.synthetic.config import GenerateConfig, WorldConfig


@dataclass(frozen=True)
class BenchGenerateConfig:
    sizes: list[int] = field(default_factory=lambda: [1_000_000, 4_000_000])
    impressions_per_user: int = 100  # users and POIs grow with the world
    impressions_per_poi: int = 400
    keep_tables: bool = False


def _scratch(catalog: TableCatalog, name: str) -> TableCatalog:
    return TableCatalog(root=f"{catalog.root.rstrip('/')}/_bench/{name}", unity_prefix=None)


def _world_of_size(
    size: int,
    impressions_per_user: int,
    impressions_per_poi: int,
    hot_user_share: float = 0.0,
    hot_poi_share: float = 0.0,
) -> GenerateConfig:
    """The default world scaled to `size` impressions; users and POIs grow with it; optionally
    skewed (one user and one POI with these shares of the impressions)."""
    world = WorldConfig()
    return GenerateConfig(
        world=replace(
            world,
            impressions_per_day=size // world.days,
            users=max(world.users, size // impressions_per_user),
            pois=max(world.pois, size // impressions_per_poi),
            hot_user_share=hot_user_share,
            hot_poi_share=hot_poi_share,
        )
    )


def _timed(step) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def _profiled(spark: SparkSession, label: str, step) -> tuple[float, dict | None]:
    """(seconds, what Spark measured: stages, task time, shuffle, spill, skew) of one step, with
    `busy` = task time / (seconds x cores): near 1 is CPU-bound work, low is the driver or waits;
    and `peak_memory`, the step's own peaks (benchmarks.memory)."""
    with measured(spark, label) as group, peak_memory(spark) as memory:
        seconds = _timed(step)
    metrics = stage_metrics(spark, group)
    if metrics is None:
        return seconds, None
    cores = spark.sparkContext.defaultParallelism
    busy = round(metrics.task_seconds / (seconds * cores), 3)
    return seconds, {**metrics.as_dict(), "busy": busy, "peak_memory": memory}


def _copy(spark: SparkSession, scratch: TableCatalog) -> tuple[float, dict | None]:
    """The limit of this machine: read the raw log back and write a plain Delta copy of it."""
    return _profiled(
        spark, "plain Delta copy", lambda: scratch.write(scratch.read(spark, "raw.impressions"), "bench.copy")
    )


def _drop(scratch: TableCatalog, keep: bool) -> None:
    if not keep and not is_remote(scratch.root):
        shutil.rmtree(scratch.root, ignore_errors=True)


def bench_generate(spark: SparkSession, catalog: TableCatalog, cfg: BenchGenerateConfig, log=print) -> dict:
    results = []
    for size in cfg.sizes:
        gen_cfg = _world_of_size(size, cfg.impressions_per_user, cfg.impressions_per_poi)
        scratch = _scratch(catalog, f"generate_{size}")
        gen_seconds, gen_metrics = _profiled(
            spark,
            f"generate {size}",
            lambda: generate_job.write_world(spark, scratch, gen_cfg, log=log),  # noqa: B023
        )
        rows = scratch.read(spark, "raw.impressions").count()
        copy_seconds, copy_metrics = _copy(spark, scratch)
        entry = {
            "impressions": rows,
            "seconds": round(gen_seconds, 2),
            "rows_per_s": round(rows / gen_seconds),
            "raw_copy_seconds": round(copy_seconds, 2),
            "raw_copy_rows_per_s": round(rows / copy_seconds),
            "ratio": round(copy_seconds / gen_seconds, 3),
            "spark": gen_metrics,
            "raw_copy_spark": copy_metrics,
        }
        log(f"bench generate: {entry}")
        results.append(entry)
        _drop(scratch, cfg.keep_tables)
    return {"sizes": results, "cores": spark.sparkContext.defaultParallelism}


@dataclass(frozen=True)
class BenchEtlConfig:
    sizes: list[int] = field(default_factory=lambda: [1_000_000, 4_000_000, 16_000_000])
    impressions_per_user: int = 100
    impressions_per_poi: int = 400
    keep_tables: bool = False
    # a skewed world (e.g. 0.01 each: one user and one POI with 1% of the impressions); each job's
    # `spark.max_skew` is then its slowest task over the median one, worst stage
    hot_user_share: float = 0.0
    hot_poi_share: float = 0.0
    # impressions the `projection` scales each job's measured cost to (core-hours, shuffle)
    project_to: list[int] = field(default_factory=lambda: [1_000_000_000, 10_000_000_000])

    def __post_init__(self) -> None:
        replace(WorldConfig(), hot_user_share=self.hot_user_share, hot_poi_share=self.hot_poi_share)
        if not self.sizes or any(size <= 0 for size in self.sizes):
            raise ValueError(f"sizes must be positive impression counts, got {self.sizes}")


def _etl_steps() -> list[tuple[str, Callable[[SparkSession, TableCatalog], dict]]]:
    """The ETL jobs in pipeline order, each with its default config."""
    from etl.clean import job as clean
    from etl.clean.config import CleanConfig
    from etl.text import corpus, pairs
    from features import samples, scene, stats

    quiet = lambda _: None  # noqa: E731
    return [
        ("etl clean", lambda spark, cat: clean.run(spark, cat, CleanConfig(), log=quiet)),
        ("etl corpus", lambda spark, cat: corpus.run(spark, cat, corpus.CorpusConfig(), log=quiet)),
        ("etl pairs", lambda spark, cat: pairs.run(spark, cat, pairs.PairsConfig(), log=quiet)),
        ("features scene", lambda spark, cat: scene.run(spark, cat, scene.SceneConfig(), log=quiet)),
        ("features stats", lambda spark, cat: stats.run(spark, cat, stats.StatsConfig(), log=quiet)),
        ("etl samples", lambda spark, cat: samples.run(spark, cat, samples.SamplesConfig(), log=quiet)),
    ]


def bench_etl(spark: SparkSession, catalog: TableCatalog, cfg: BenchEtlConfig, log=print) -> dict:
    """Each ETL job at each size, against a plain Delta copy of the impressions in the same run."""
    per_size = []
    for size in cfg.sizes:
        scratch = _scratch(catalog, f"etl_{size}")
        world = _world_of_size(
            size, cfg.impressions_per_user, cfg.impressions_per_poi, cfg.hot_user_share, cfg.hot_poi_share
        )
        # generation is timed like a job (its ratio to the copy is in the table)
        generated = _profiled(
            spark,
            f"generate {size}",
            lambda: generate_job.write_world(spark, scratch, world, log=log),  # noqa: B023
        )
        rows = scratch.read(spark, "raw.impressions").count()
        copy_before, copy_metrics = _copy(spark, scratch)
        measured_steps = {"generate": generated}
        log(f"bench etl: {size} impressions: generate: {generated[0]:.2f} s")
        for name, step in _etl_steps():
            measured_steps[name] = _profiled(spark, f"{name} {size}", lambda: step(spark, scratch))  # noqa: B023
            log(f"bench etl: {size} impressions: {name}: {measured_steps[name][0]:.2f} s")
        # the copy again after the jobs: the baseline is their mean, so a machine that drifts
        # during the jobs shows as two different copies instead of skewing every ratio one way
        copy_after, _ = _copy(spark, scratch)
        copy_seconds = (copy_before + copy_after) / 2
        jobs = {name: _job_figures(rows, copy_seconds, *m) for name, m in measured_steps.items()}
        for name, job in jobs.items():
            log(f"bench etl: {size} impressions: {name}: {_headline(job)}")
        per_size.append(
            {
                "impressions": rows,
                "copy_seconds": round(copy_seconds, 2),
                "copy_seconds_before_after": [round(copy_before, 2), round(copy_after, 2)],
                "copy_rows_per_s": round(rows / copy_seconds),
                "copy_spark": copy_metrics,
                "jobs": jobs,
                "peak_memory": _peak_over(jobs),
            }
        )
        _drop(scratch, cfg.keep_tables)
    plot = _plot_scaling(per_size, f"{catalog.root.rstrip('/')}/_runs/bench-etl.png")
    first, last = per_size[0], per_size[-1]
    growth = {
        name: round(last["jobs"][name]["seconds"] / first["jobs"][name]["seconds"], 2)
        for name in first["jobs"]
    }
    growth["copy"] = round(last["copy_seconds"] / first["copy_seconds"], 2)
    slowest = min(last["jobs"], key=lambda name: last["jobs"][name]["rows_per_s"])
    cores = spark.sparkContext.defaultParallelism
    return {
        "sizes": per_size,
        "time_growth": growth,
        "size_growth": round(last["impressions"] / first["impressions"], 2),
        "slowest_job": slowest,
        "cores": cores,
        "projection": project(per_size, cores, cfg.project_to),
        "plot": plot,
    }


def _job_figures(rows: int, copy_seconds: float, seconds: float, metrics: dict | None) -> dict:
    return {
        "seconds": round(seconds, 2),
        "rows_per_s": round(rows / seconds),
        "ratio_to_copy": round(copy_seconds / seconds, 3),
        "spark": metrics,
    }


def _peak_over(jobs: dict) -> dict:
    """The largest of each peak figure over one size's jobs, and the job that reached the JVM's."""
    peaks = {name: (job["spark"] or {}).get("peak_memory") or {} for name, job in jobs.items()}
    out: dict = {}
    for key in ("jvm_peak_rss_mb", "jvm_old_gen_peak_mb", "jvm_heap_max_mb", "python_peak_rss_mb"):
        values = [figures[key] for figures in peaks.values() if figures.get(key) is not None]
        out[key] = max(values) if values else None
    rss = {
        name: figures["jvm_peak_rss_mb"] for name, figures in peaks.items() if figures.get("jvm_peak_rss_mb")
    }
    out["jvm_peak_job"] = max(rss, key=rss.get) if rss else None
    return out


def _headline(job: dict) -> str:
    """One progress line: time, ratio, and Spark's view of where it went."""
    line = f"{job['seconds']} s, ratio {job['ratio_to_copy']}"
    spark = job.get("spark")
    if spark:
        top = spark["heaviest"][0]["name"] if spark["heaviest"] else "-"
        line += (
            f", {spark['stages']} stages, {spark['task_seconds']} task-s (busy {spark['busy']}), "
            f"shuffle {spark['shuffle_write_mb']} MB, spill {spark['disk_spill_mb']} MB, "
            f"max task / median {spark['max_skew']}, heaviest: {top}"
        )
        memory = spark.get("peak_memory") or {}
        if memory.get("jvm_peak_rss_mb") is not None:
            line += f", peak JVM RSS {memory['jvm_peak_rss_mb']} MB (heap max {memory['jvm_heap_max_mb']} MB)"
    return line


def _plot_scaling(per_size: list[dict], path: str) -> str | None:
    """Seconds against impressions, one line per job and one for the Delta copy (log-log)."""
    if is_remote(path):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [entry["impressions"] for entry in per_size]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in per_size[0]["jobs"]:
        ax.plot(sizes, [entry["jobs"][name]["seconds"] for entry in per_size], marker="o", label=name)
    ax.plot(sizes, [entry["copy_seconds"] for entry in per_size], "k--", marker="s", label="plain Delta copy")
    ax.set(xscale="log", yscale="log", xlabel="impressions", ylabel="seconds", title="larr bench etl")
    ax.legend(fontsize=8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
