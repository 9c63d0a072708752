"""The registry of `larr` commands: name -> (stage, config class, YAML file, runner)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from etl.core.catalog import TableCatalog


@dataclass
class Context:
    """What a command runs with. The Spark session starts on first use, after all checks."""

    catalog: TableCatalog
    _spark: Any = field(default=None, repr=False)

    @property
    def spark(self):
        if self._spark is None:
            from etl.core.spark import get_spark

            self._spark = get_spark()
        return self._spark

    @property
    def spark_if_started(self):
        return self._spark

    def log(self, message: str) -> None:
        print(message, flush=True)


@dataclass(frozen=True)
class Command:
    name: str
    stage: str  # the MLflow experiment is larr-<stage>
    config_cls: type
    config_file: str | None  # jobs/<config_file>.yaml, or None for dataclass defaults
    run: Callable[[Context, Any], dict]
    help: str = ""


def _generate(ctx: Context, cfg) -> dict:
    from etl.synthetic import job

    return job.run(ctx.spark, ctx.catalog, cfg, log=ctx.log)


def _etl_ingest(ctx: Context, cfg) -> dict:
    from etl.ingest import job

    return job.run(ctx.spark, ctx.catalog, cfg, log=ctx.log)


def _etl_clean(ctx: Context, cfg) -> dict:
    from etl.clean import job

    return job.run(ctx.spark, ctx.catalog, cfg, log=ctx.log)


def _etl_corpus(ctx: Context, cfg) -> dict:
    from etl.text import corpus

    return corpus.run(ctx.spark, ctx.catalog, cfg, log=ctx.log)


def _etl_pairs(ctx: Context, cfg) -> dict:
    from etl.text import pairs

    return pairs.run(ctx.spark, ctx.catalog, cfg, log=ctx.log)


def _features_scene(ctx: Context, cfg) -> dict:
    from features import scene

    return scene.run(ctx.spark, ctx.catalog, cfg, log=ctx.log)


def _features_stats(ctx: Context, cfg) -> dict:
    from features import stats

    return stats.run(ctx.spark, ctx.catalog, cfg, log=ctx.log)


def _etl_samples(ctx: Context, cfg) -> dict:
    from features import samples

    return samples.run(ctx.spark, ctx.catalog, cfg, log=ctx.log)


def _bench_generate(ctx: Context, cfg) -> dict:
    from jobs import bench

    return bench.bench_generate(ctx.spark, ctx.catalog, cfg, log=ctx.log)


def _bench_etl(ctx: Context, cfg) -> dict:
    from jobs import bench

    return bench.bench_etl(ctx.spark, ctx.catalog, cfg, log=ctx.log)


def _commands() -> dict[str, Command]:
    from etl.clean.config import CleanConfig
    from etl.ingest.job import IngestConfig
    from etl.synthetic.config import GenerateConfig
    from etl.text.corpus import CorpusConfig
    from etl.text.pairs import PairsConfig
    from features.samples import SamplesConfig
    from features.scene import SceneConfig
    from features.stats import StatsConfig
    from jobs.bench import BenchEtlConfig, BenchGenerateConfig

    commands = [
        Command(
            "generate",
            "generate",
            GenerateConfig,
            "generate",
            _generate,
            "synthesise the food-delivery world",
        ),
        Command(
            "etl ingest", "etl", IngestConfig, "etl_ingest", _etl_ingest, "bring your own logs (CSV/Parquet)"
        ),
        Command(
            "etl clean", "etl", CleanConfig, "etl_clean", _etl_clean, "validated tables and a rejects table"
        ),
        Command("etl corpus", "etl", CorpusConfig, "etl_corpus", _etl_corpus, "stage-1 special-token corpus"),
        Command("etl pairs", "etl", PairsConfig, "etl_pairs", _etl_pairs, "stage-2 contrastive pairs"),
        Command(
            "features scene",
            "features",
            SceneConfig,
            "features_scene",
            _features_scene,
            "the scene dictionary: distinct scene feature values and their texts",
        ),
        Command(
            "features stats",
            "features",
            StatsConfig,
            "features_stats",
            _features_stats,
            "point-in-time user, POI and user x POI statistics",
        ),
        Command(
            "etl samples",
            "etl",
            SamplesConfig,
            "etl_samples",
            _etl_samples,
            "negatively sampled CTR / CTCVR samples",
        ),
        Command(
            "bench generate",
            "bench",
            BenchGenerateConfig,
            None,
            _bench_generate,
            "generation throughput against a plain Delta write",
        ),
        Command(
            "bench etl",
            "bench",
            BenchEtlConfig,
            None,
            _bench_etl,
            "every ETL job at 1M, 4M, 16M impressions against a plain Delta copy",
        ),
    ]
    return {c.name: c for c in commands}


COMMANDS = _commands()
