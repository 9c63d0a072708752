"""Benchmarks that print JSON (`larr bench ...`): each compares with a baseline measured in the
same run, because these machines are noisy and absolute numbers say little on their own."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field, replace

from pyspark.sql import SparkSession

from etl.core.catalog import TableCatalog, is_remote
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


def bench_generate(spark: SparkSession, catalog: TableCatalog, cfg: BenchGenerateConfig, log=print) -> dict:
    results = []
    for size in cfg.sizes:
        world = WorldConfig()
        world = replace(
            world,
            impressions_per_day=size // world.days,
            users=max(world.users, size // cfg.impressions_per_user),
            pois=max(world.pois, size // cfg.impressions_per_poi),
        )
        gen_cfg = GenerateConfig(world=world)
        scratch = _scratch(catalog, f"generate_{size}")
        started = time.perf_counter()
        generate_job.write_world(spark, scratch, gen_cfg, log=log)
        gen_seconds = time.perf_counter() - started
        rows = scratch.read(spark, "raw.impressions").count()

        # the limit: read the generated log back and write a plain Delta copy of it
        started = time.perf_counter()
        scratch.write(scratch.read(spark, "raw.impressions"), "bench.copy")
        copy_seconds = time.perf_counter() - started
        entry = {
            "impressions": rows,
            "seconds": round(gen_seconds, 2),
            "rows_per_s": round(rows / gen_seconds),
            "raw_copy_seconds": round(copy_seconds, 2),
            "raw_copy_rows_per_s": round(rows / copy_seconds),
            "ratio": round(copy_seconds / gen_seconds, 3),
        }
        log(f"bench generate: {entry}")
        results.append(entry)
        if not cfg.keep_tables and not is_remote(scratch.root):
            shutil.rmtree(scratch.root, ignore_errors=True)
    return {"sizes": results, "cores": spark.sparkContext.defaultParallelism}
