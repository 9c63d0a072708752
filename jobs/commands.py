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


def _bench_generate(ctx: Context, cfg) -> dict:
    from jobs import bench

    return bench.bench_generate(ctx.spark, ctx.catalog, cfg, log=ctx.log)


def _commands() -> dict[str, Command]:
    from etl.synthetic.config import GenerateConfig
    from jobs.bench import BenchGenerateConfig

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
            "bench generate",
            "bench",
            BenchGenerateConfig,
            None,
            _bench_generate,
            "generation throughput against a plain Delta write",
        ),
    ]
    return {c.name: c for c in commands}


COMMANDS = _commands()
