"""`larr`: the one entry point, for a terminal, spark-submit (jobs/spark_submit.py) and a
Databricks wheel task (the console script).

    larr [options] <command> [options]

options: --lakehouse PATH, --unity-catalog CATALOG.SCHEMA, --config FILE, --set section.key=value
(repeatable); before or after the command.

Each command loads its typed config strictly, checks the lakehouse and the MLflow store before
any Spark work, runs inside an MLflow run of its stage (config logged), and ends by printing one
JSON line with its key figures (also written under <lakehouse>/_runs/).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from uuid import uuid4

from core import locks
from core.catalog import TableCatalog, is_remote
from core.tracking import check_store, configure, stage_run
from jobs.commands import COMMANDS, Command, Context
from jobs.config import default_config_path, load_config
from jobs.published import run_published
from jobs.summary import emit

# Bad input, reported as one line. Named, not imported: an error class whose module was never
# imported cannot have been raised, and the CLI need not import torch to run a Spark job.
USER_ERRORS = (
    "jobs.config:ConfigError",
    "core.catalog:CatalogError",
    "core.locks:LakehouseBusyError",
    "core.tracking:TrackingError",
    "core.spark:SparkEnvError",
    "etl.ingest.job:IngestError",
    "etl.ingest.mapping:MappingError",
    "etl.clean.job:CleanInputError",
    "core.splits:SplitError",
    "training.common.checkpoint:CheckpointError",
    "training.common.data:DataError",
    "training.common.guard:NonFiniteLossError",
    "training.lm.backbone:BackboneError",
    "training.lm.cpt:CptError",
    "training.embedding.contrastive:ContrastiveError",
    "benchmarks.llm:BenchLlmError",
    "features.embeddings.encoder_runtime:EmbedError",
    "training.ctr.train:CtrError",
    "training.ctr.encoding:FeatureError",
    "benchmarks.ctr:BenchCtrError",
    "training.ctr.metrics:MetricError",
    "training.ctr.report:ReportError",
    "features.recall:RecallError",
    "training.embedding.casestudy:CaseStudyError",
    "training.ctr.hashing:HashingError",
    "training.ctr.prompts:PromptError",
    "training.ctr.models.p5:P5Error",
)


def is_user_error(err: BaseException) -> bool:
    for target in USER_ERRORS:
        module, name = target.split(":")
        if module in sys.modules and isinstance(err, getattr(sys.modules[module], name)):
            return True
    return False


COMMON_OPTIONS = ("lakehouse", "unity_catalog", "config", "force")
GLOBAL = "global_"  # the dest prefix of the common options given before the command


def _add_common_options(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """--lakehouse, --unity-catalog, --config and --set, before or after the command; given before
    it they land under `global_*` and `parse_args` merges them (argparse's subparsers would
    otherwise overwrite them with their own defaults)."""
    parser.add_argument(
        "--lakehouse",
        dest=f"{prefix}lakehouse",
        help="lakehouse root (default $LARR_LAKEHOUSE or the checkout's lakehouse/)",
    )
    parser.add_argument(
        "--unity-catalog",
        dest=f"{prefix}unity_catalog",
        help="use Unity Catalog tables under 'catalog.schema'",
    )
    parser.add_argument(
        "--config", dest=f"{prefix}config", help="YAML config (default: the job's file in jobs/)"
    )
    parser.add_argument(
        "--set",
        dest=f"{prefix}overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key",
    )
    parser.add_argument(
        "--force",
        dest=f"{prefix}force",
        action="store_const",
        const=True,
        help="re-compute even when the inputs and config are unchanged since the last completed run",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="larr", description=__doc__.split("\n\n")[0])
    _add_common_options(parser, GLOBAL)
    common = argparse.ArgumentParser(add_help=False)
    _add_common_options(common)
    groups: dict[str, argparse._SubParsersAction] = {}
    top = parser.add_subparsers(dest="command", required=True, metavar="command")
    for command in COMMANDS.values():
        words = command.name.split()
        subparsers = top
        for depth, word in enumerate(words[:-1]):
            key = " ".join(words[: depth + 1])
            if key not in groups:
                group = subparsers.add_parser(word, help=f"{word} commands")
                groups[key] = group.add_subparsers(
                    dest=f"command_{depth + 1}", required=True, metavar="command"
                )
            subparsers = groups[key]
        sub = subparsers.add_parser(words[-1], parents=[common], help=command.help)
        for key in command.flags:  # shorthand for --set key=VALUE
            sub.add_argument(f"--{key.replace('_', '-')}", dest=f"flag_{key}", metavar=key.upper())
        sub.set_defaults(_command=command)
    return parser


def log_figures(figures: dict) -> None:
    """Numbers as MLflow metrics (but for those the job already logged: a per-step curve such as
    tokens_per_s keeps its history); table versions as params (lineage); everything as summary.json."""
    import mlflow

    held = mlflow.get_run(mlflow.active_run().info.run_id).data.metrics
    numbers = {k: float(v) for k, v in figures.items() if isinstance(v, int | float) and k not in held}
    mlflow.log_metrics(numbers)
    for key in ("table_versions", "input_versions", "output_versions"):
        for table, version in (figures.get(key) or {}).items():
            mlflow.log_param(f"{key}.{table}", version)
    mlflow.log_dict(figures, "summary.json")
    for key, value in figures.items():  # plots a job saved (PNG) travel with the run
        if key.endswith("plot") and isinstance(value, str) and Path(value).is_file():
            mlflow.log_artifact(value)


def command_config(command: Command, args: argparse.Namespace):
    """The command's typed config: its YAML (or --config), then --set overrides and flags."""
    config_path = args.config or (default_config_path(command.config_file) if command.config_file else None)
    # a flag's value is a string as typed (JSON-quoted, so YAML reads no list or mapping into it)
    flagged = [
        f"{k}={json.dumps(v)}" for k in command.flags if (v := getattr(args, f"flag_{k}", None)) is not None
    ]
    return load_config(command.config_cls, config_path, [*args.overrides, *flagged])


def run_command(command: Command, args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    cfg = command_config(command, args)
    catalog = TableCatalog.resolve(args.lakehouse, args.unity_catalog)
    check_store(catalog.root)  # the tracking URI's form and a server's answer, before any folder is made
    catalog.check_writable()
    configure(catalog.root)  # an unreachable store fails here, before any Spark work
    ctx = Context(catalog=catalog, app_name="larr-" + command.name.replace(" ", "-"))
    description = f"`larr {command.name}`: {command.help}"
    # one writer per table on a local lakehouse (before the MLflow run: a refused run leaves none)
    local_writer = bool(command.writes) and not is_remote(catalog.root)
    lock = locks.writing(catalog.root, command.name, command.writes) if local_writer else nullcontext()
    with (
        lock as held,
        stage_run(
            command.stage, catalog.root, cfg, run_name=command.name, description=description
        ) as mlflow_run,
    ):
        run_id = mlflow_run.info.run_id if mlflow_run is not None else uuid4().hex
        if held is not None:
            held.note_run(run_id)
        figures = run_published(
            command, ctx, cfg, run_id, force=bool(args.force), holds_locks=held is not None
        )
        figures["seconds"] = round(time.perf_counter() - started, 2)
        if mlflow_run is not None:
            log_figures(figures)
            figures.setdefault("mlflow_run_id", mlflow_run.info.run_id)
    return emit(command.name, figures, catalog.root, ctx.spark_if_started)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line with the common options merged: after the command wins, --set adds up."""
    args = build_parser().parse_args(argv)
    for name in COMMON_OPTIONS:
        if getattr(args, name) is None:
            setattr(args, name, getattr(args, GLOBAL + name))
    args.overrides = [*args.global_overrides, *args.overrides]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run_command(args._command, args)
    except Exception as err:
        if not is_user_error(err):
            raise
        print(f"larr {args._command.name}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
