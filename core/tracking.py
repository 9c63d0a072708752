"""MLflow set-up: one tracking store per lakehouse, one experiment per stage, rank 0 logs.

Default store: `sqlite:///<lakehouse>/mlflow.db` with artifacts in `<lakehouse>/mlartifacts`.
`MLFLOW_TRACKING_URI` overrides it (a tracking server, or `databricks`), checked first by
core/tracking_store.py. A stage run ends honestly (KILLED, FAILED, with the reason; dead runs are
ended at the next start of the job) through core/run_endings.py.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from core.run_endings import (
    COMMAND_TAG,
    HOST_TAG,
    PID_TAG,
    StageKilled,
    end_dead_runs,
    end_stage_run,
    one_line,
    signals_end_the_run,
)
from core.tracking_store import (  # noqa: F401 - TrackingError, tracking_uri: the public names stay here
    TrackingError,
    artifact_root,
    check_answers,
    check_store,
    check_timeout_s,
    is_server,
    tracking_uri,
)

EXPERIMENT_PREFIX = "larr"
# Databricks names experiments by workspace path: LARR_EXPERIMENT_PREFIX=/Users/<me>/larr there
PREFIX_VARIABLE = "LARR_EXPERIMENT_PREFIX"


def is_primary_process() -> bool:
    """Only the driver / global rank 0 talks to MLflow in distributed runs."""
    return int(os.environ.get("RANK", "0")) == 0


def configure(lakehouse_root: str) -> str:
    """Point MLflow at the store and check that it answers; returns the URI. A tracking server
    is checked before anything is created; a sqlite store gets its folder."""
    import mlflow

    uri = check_store(lakehouse_root)  # a tracking server is fully checked there
    mlflow.set_tracking_uri(uri)
    if not is_server(uri):
        if uri.startswith("sqlite:///"):
            try:
                Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise TrackingError(f"MLflow tracking URI {uri} is unreachable: {err.strerror}") from None
        check_answers(uri, check_timeout_s())
    return uri


NOTE_TAG = "mlflow.note.content"  # what MLflow's UI shows as an experiment's or a run's description
STAGE_DESCRIPTIONS = {
    "generate": "The synthetic food-delivery world (`larr generate`): row counts and the Bayes-optimal "
    "AUCs of its test day; table versions as params.",
    "etl": "ETL jobs (`larr etl ingest|clean|corpus|pairs|samples`): input and output Delta versions "
    "as params, row and reject counts as metrics.",
    "features": "Feature jobs (`larr features scene|stats`): the scene dictionary and the "
    "point-in-time statistics.",
    "cpt": "Stage 1, continual pretraining with the dataset's special tokens (`larr train cpt`): "
    "train_loss, lr and tokens_per_s per optimizer step (live), held-out perplexity, the backbone.",
    "contrastive": "Stage 2, contrastive fine-tuning into a 128-d text encoder (`larr train "
    "contrastive`): train_loss, lr and tokens_per_s per step (live), retrieval recall and MRR, "
    "the `encoder` pyfunc model.",
    "embed": "Stage 3 offline: scene and text embeddings with the frozen encoder (`larr embed "
    "scenes|texts`).",
    "ctr": "Stage 3, the CTR / CTCVR models (`larr train ctr`, `larr sweep`): one run per command "
    "with a nested run per seed, tagged larr.ctr_model, larr.ablation, larr.seed; select seed runs "
    "to compare their train_loss, lr and samples_per_s curves and ctr_auc, or read `larr report`.",
    "report": "Tables 2 and 3 (`larr report`) from the ctr experiment's seed runs: the markdown "
    "report and tables, the AUC-per-model and sweep plots as artifacts, the cells as metrics.",
    "recall": "The case study (`larr recall`): a free-text scene to the top POIs by cosine.",
    "bench": "Benchmarks (`larr bench ...`): throughput against a baseline measured in the same run.",
}


def experiment_name(stage: str) -> str:
    """`larr-<stage>`, or `<$LARR_EXPERIMENT_PREFIX>-<stage>` (a workspace path on Databricks)."""
    return f"{os.environ.get(PREFIX_VARIABLE) or EXPERIMENT_PREFIX}-{stage}"


def experiment_for(stage: str) -> str:
    """Create (once) and select the experiment of a stage; returns its id."""
    import mlflow

    name = experiment_name(stage)
    client = mlflow.MlflowClient()
    existing = client.get_experiment_by_name(name)
    description = STAGE_DESCRIPTIONS.get(stage, f"`larr` runs of stage {stage}.")
    if existing is None:
        experiment_id = client.create_experiment(
            name, artifact_location=artifact_root(mlflow.get_tracking_uri()), tags={NOTE_TAG: description}
        )
    else:
        experiment_id = existing.experiment_id
        if NOTE_TAG not in existing.tags:  # an experiment made before descriptions existed
            client.set_experiment_tag(experiment_id, NOTE_TAG, description)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def flatten(config: Any, prefix: str = "") -> dict[str, str]:
    """A nested dataclass config as flat `section.key` params for MLflow."""
    data = asdict(config) if is_dataclass(config) else config
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return flat


def log_params(params: dict) -> None:
    """Log params to the active run in chunks (MLflow caps a batch at 100 params)."""
    import mlflow

    items = list(params.items())
    for start in range(0, len(items), 100):
        mlflow.log_params(dict(items[start : start + 100]))


@contextmanager
def stage_run(
    stage: str, lakehouse_root: str, config: Any, run_name: str | None = None, description: str | None = None
) -> Iterator[Any]:
    """Start a run in the stage's experiment (with `description` as its note) and log the
    resolved config (rank 0 only).

    The run is tagged with the host, pid and command (`run_name`). Before it starts, runs of the
    same job left RUNNING by a dead process of this host end FAILED. SIGTERM / SIGINT end it
    KILLED and exit with 128 + the signal; an exception ends it FAILED; `larr.end_reason` says why.

    Yields the active MLflow run, or None on other ranks.
    """
    if not is_primary_process():
        yield None
        return
    import mlflow

    configure(lakehouse_root)
    experiment_id = experiment_for(stage)
    try:
        end_dead_runs(experiment_id, run_name)
    except Exception as err:  # noqa: BLE001 - tidying old runs never stops a job
        print(f"warning: could not end dead MLflow runs of {run_name}: {one_line(err)}", file=sys.stderr)
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())} | (
        {COMMAND_TAG: run_name} if run_name else {}
    )
    run = mlflow.start_run(run_name=run_name, description=description, tags=tags)
    status, reason, killed_at = "FINISHED", None, None
    try:
        with signals_end_the_run():
            try:
                log_params(flatten(config))
                with tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp) / "config.json"
                    path.write_text(json.dumps(asdict(config) if is_dataclass(config) else config, indent=2))
                    mlflow.log_artifact(str(path))
                yield run
            except StageKilled as err:
                status, reason, killed_at = "KILLED", err.reason, err.at_ms
                print(
                    f"{run_name or stage}: {reason}: MLflow run {run.info.run_id} ends KILLED",
                    file=sys.stderr,
                )
                raise
            except KeyboardInterrupt:  # SIGINT through another handler (Spark installs one)
                status, reason, killed_at = "KILLED", "SIGINT", None
                raise
            except SystemExit as err:
                if err.code not in (None, 0):
                    status, reason = "FAILED", f"SystemExit: {err.code}"
                raise
            except BaseException as err:
                status, reason = "FAILED", one_line(err)
                raise
    finally:
        if status == "FINISHED":
            end_stage_run(run, status, reason)
        else:
            try:
                end_stage_run(run, status, reason, killed_at)
            except Exception as err:  # noqa: BLE001 - the job's own error is the one to see
                print(
                    f"warning: could not end MLflow run {run.info.run_id} {status}: {one_line(err)}",
                    file=sys.stderr,
                )


# -- models of earlier stages ----------------------------------------------------------------------
MODEL_URI_TAG = "larr.model_uri"
VARIANT_TAG = "larr.variant"
LATEST = "latest:"
# The variants a model run is tagged with (VARIANT_TAG), the ablations of the text stages:
# the full method, stage 2 trained from the base model (no stage 1), stage 1's model without stage 2.
FULL_METHOD, NO_CPT, NO_FT = "none", "no_cpt", "no_ft"
VARIANTS = (FULL_METHOD, NO_CPT, NO_FT)
# Neither stage: the untouched base model with stage 2's seeded projection, logged as an encoder
# so the case study (`larr casestudy`) scores it like the others. Not a CTR ablation.
BASE_ONLY = "base"
ENCODER_VARIANTS = (*VARIANTS, BASE_ONLY)


def record_model(uri: str, variant: str = FULL_METHOD) -> None:
    """Tag the active run with the URI of the model it logged, so `latest:<stage>` can find it."""
    import mlflow

    mlflow.set_tags({MODEL_URI_TAG: uri, VARIANT_TAG: variant})


def resolve_latest(source: str) -> str:
    """`latest:<stage>` or `latest:<stage>/<variant>` -> the model URI of that stage's newest
    finished run of that variant (default `none`, the full method) in the configured store;
    any other source comes back unchanged."""
    if not source.startswith(LATEST):
        return source
    import mlflow

    stage, _, variant = source.removeprefix(LATEST).partition("/")
    variant = variant or FULL_METHOD
    name = experiment_name(stage)
    experiment = mlflow.MlflowClient().get_experiment_by_name(name)
    runs = []
    if experiment is not None:
        runs = mlflow.MlflowClient().search_runs(
            [experiment.experiment_id],
            filter_string=f"attributes.status = 'FINISHED' and tags.`{VARIANT_TAG}` = '{variant}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
    runs = [r for r in runs if r.data.tags.get(MODEL_URI_TAG)]
    if not runs:
        raise TrackingError(
            f"{source}: no finished run of variant {variant!r} with a model in experiment {name} "
            f"of {mlflow.get_tracking_uri()}: run `larr train {stage}` first or pass a URI"
        )
    return runs[0].data.tags[MODEL_URI_TAG]
