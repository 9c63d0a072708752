"""Distributed training launched the Spark way: pyspark's `TorchDistributor` (DDP) or
`DeepspeedTorchDistributor` (DeepSpeed ZeRO), chosen by a trainer's `launch` config section.

    launch:
      launcher: torch_distributor   # none | torch_distributor | deepspeed_distributor
      num_processes: 2
      local_mode: true              # true: processes on the driver; false: a barrier stage on executors
      use_gpu: false                # false: gloo on CPU; true: NCCL, one GPU per process

A trainer's `run(spark, catalog, cfg, log)` pins its data on the driver (Delta versions), then,
when `launch.launcher` is set and this process is not already a rank (`torchrun`, `deepspeed`, or
a distributor's process), calls `run_distributed(fn, cfg.launch, cfg, data, ...)`: the
distributor starts `num_processes` processes under `torchrun`; each one joins the process group
(gloo on CPU, NCCL on GPUs), attaches rank 0 to the driver's active MLflow run (so rank 0 alone
logs, and nested runs appear under the driver's run), runs `fn` (module level, picklable) and
hands rank 0's return value back to the driver. Keep it small: metrics and losses, never a model
(rank 0 logs the model itself).

Every rank checks that it trains on the snapshot rank 0 pinned (`agree_on_snapshots`): ranks that
disagree (different Delta versions) are refused before training with one `DataError` line.

Errors: a user error (one of `jobs.cli.USER_ERRORS`) that every rank raises (the snapshot check,
a non-finite loss: both are decided collectively) comes back as rank 0's result, and the driver
raises the same class with the same message, so `larr` prints one line, as for one process. A
user error of some ranks only (the others would wait for them in a collective) makes those ranks
print it as a marker line and exit, which stops the run; the driver finds the line (in a file of
its temp folder in local mode, else in the distributor's error) and raises it the same way.
Anything else surfaces as the distributor's own error (the ranks' output is in the driver's log).

Under `torchrun` / `deepspeed` (the non-Spark path) RANK and WORLD_SIZE are already set: the
launcher section is ignored and the trainer runs as the rank it is.

DeepspeedTorchDistributor (pyspark 4.0) is TorchDistributor plus `--deepspeed --deepspeed_config
<file>` on the training script's command line: for a function (what runs here) those arguments
are never read, so the trainer reads its own `deepspeed_config` (whose batch and clipping keys the
YAML sets) exactly as under the `deepspeed` launcher. It runs on the CPU too (gloo; DeepSpeed's
CPU accelerator), which is how the tests run it.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from core.strict import ConfigError
from training.common.data import DataError, DeltaSnapshot

LAUNCHERS = ("none", "torch_distributor", "deepspeed_distributor")
MARKER = "LARR-LAUNCH-USER-ERROR"
USER_ERROR_EXIT = 3  # a rank's exit status after a user error (torchrun then stops the others)
AGREE_SECONDS = 30.0  # how long a rank with a user error waits for the others to report theirs


class LaunchError(ConfigError):
    """A launch the machine cannot honour (GPUs asked for and missing): a config error, so `larr`
    reports it as one line (jobs.config:ConfigError is one of jobs.cli.USER_ERRORS)."""


@dataclass(frozen=True)
class LaunchConfig:
    """How a trainer's processes start (the `launch` section of train_ctr / contrastive / cpt)."""

    launcher: str = "none"  # none | torch_distributor | deepspeed_distributor
    num_processes: int = 2  # ranks in all (the world size)
    local_mode: bool = True  # True: processes on the driver; False: one per executor task (barrier)
    use_gpu: bool = False  # False: CPU and gloo; True: one GPU per process and NCCL

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise ValueError(f"launcher must be one of {', '.join(LAUNCHERS)}, got {self.launcher!r}")
        if self.num_processes < 1:
            raise ValueError(f"num_processes must be >= 1, got {self.num_processes}")

    @property
    def enabled(self) -> bool:
        return self.launcher != "none"


def inside_rank() -> bool:
    """True in a process some launcher started as one rank (torchrun, deepspeed, a distributor)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def wants_launch(cfg: LaunchConfig) -> bool:
    """Launch processes from here: a launcher is set and this process is not already a rank."""
    return cfg.enabled and not inside_rank()


def check_launch(cfg: LaunchConfig, *, deepspeed_config: str = "", device: str = "auto") -> str | None:
    """Why `cfg` cannot launch this trainer (one line), or None. The trainers' configs call it."""
    if not cfg.enabled:
        return None
    if cfg.launcher == "deepspeed_distributor" and not deepspeed_config:
        return "launch.launcher deepspeed_distributor needs deepspeed_config (a ZeRO JSON, jobs/deepspeed/)"
    if cfg.launcher == "torch_distributor" and deepspeed_config:
        return (
            f"deepspeed_config {deepspeed_config} is set: launch with launch.launcher deepspeed_distributor "
            "(torch_distributor trains plain DDP)"
        )
    if device == "cuda" and not cfg.use_gpu:
        return "device cuda needs launch.use_gpu: true"
    if device == "cpu" and cfg.use_gpu:
        return "device cpu contradicts launch.use_gpu: true"
    return None


# -- the ranks agree on the data --------------------------------------------------------------------
def _fingerprint(snapshot: DeltaSnapshot) -> tuple:
    import hashlib

    files = hashlib.sha256("\n".join(snapshot.files).encode()).hexdigest()[:16]  # not hash(): salted
    return (snapshot.version, snapshot.num_rows, files)


def agree_on_snapshots(snapshots: Iterable[DeltaSnapshot]) -> None:
    """Refuse (DataError, on every rank alike) when any rank pinned another version of a table than
    rank 0. A collective: every rank calls it, before training. A no-op for one process."""
    from training.common.device import is_distributed

    snapshots = list(snapshots)
    if not is_distributed():
        return
    import torch.distributed as dist

    mine = [(s.table, s.where, _fingerprint(s)) for s in snapshots]
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    reference = everyone[0]
    for rank, theirs in enumerate(everyone[1:], start=1):
        if len(theirs) != len(reference):
            raise DataError(
                f"ranks disagree on the data: rank {rank} pinned {len(theirs)} snapshots, rank 0 {len(reference)}"
            )
        for (table, where, (version, rows, files)), (_, _, (v0, rows0, files0)) in zip(
            theirs, reference, strict=True
        ):
            what = table + (f" where {where}" if where else "")
            if version != v0:
                raise DataError(
                    f"ranks disagree on the data: rank {rank} pinned {what} version {version}, rank 0 "
                    f"version {v0}: refused before training (every rank must read rank 0's snapshot)"
                )
            if (rows, files) != (rows0, files0):
                raise DataError(
                    f"ranks disagree on the data: rank {rank} read other files of {what} version {version} "
                    f"({rows} rows) than rank 0 ({rows0} rows): refused before training"
                )


# -- inside each process ----------------------------------------------------------------------------
def _attach_mlflow(context: dict):
    """Rank 0 joins the driver's active MLflow run (a null context elsewhere / without a run)."""
    import contextlib

    if context.get("tracking_uri"):
        import mlflow

        mlflow.set_tracking_uri(context["tracking_uri"])  # every rank: `runs:/` backbones load
    if not context.get("run_id") or int(os.environ.get("RANK", "0")) != 0:
        return contextlib.nullcontext()
    import mlflow

    mlflow.set_experiment(experiment_id=context["experiment_id"])  # nested runs land beside it
    return mlflow.start_run(run_id=context["run_id"])


def _is_user_error(err: BaseException) -> bool:
    try:
        from jobs.cli import is_user_error
    except ImportError:  # a worker without the `jobs` package: every error is the distributor's
        return False
    return is_user_error(err)


def _all_ranks_failed(error: dict, rank: int, world_size: int, seconds: float) -> dict | None:
    """Report this rank's user error in the process group's store; rank 0's error when every rank
    reports one within `seconds` (a collective failure), else None (some ranks carry on)."""
    import time

    if world_size == 1:
        return error
    try:
        from torch.distributed.distributed_c10d import _get_default_store

        store = _get_default_store()
        store.set(f"larr-launch/error/{rank}", json.dumps(error))
        store.add("larr-launch/errors", 1)
        deadline = time.monotonic() + seconds
        while store.add("larr-launch/errors", 0) < world_size:
            if time.monotonic() > deadline:
                return None
            time.sleep(0.2)
        return json.loads(store.get("larr-launch/error/0"))
    except Exception:  # noqa: BLE001 - no store to agree through: treat it as this rank's alone
        return None


def _rank_main(fn: Callable, args: tuple, kwargs: dict, context: dict) -> bytes:
    """One process of a distributor run: join the group, run `fn`, return rank 0's outcome pickled,
    ("ok", result) or ("error", {error, message}); every rank returns the same bytes (local mode's
    processes all write one output file)."""
    import torch
    import torch.distributed as dist

    from training.common.device import broadcast_object, dist_info, init_distributed

    info = dist_info()
    use_cuda = bool(context.get("use_gpu")) and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(info.local_rank)  # of the GPUs the distributor made visible
    init_distributed(info, torch.device("cuda", info.local_rank) if use_cuda else torch.device("cpu"))
    try:
        with _attach_mlflow(context):
            result = fn(*args, **kwargs)
    except Exception as err:
        if not _is_user_error(err):
            raise
        error = {
            "rank": info.rank,
            "error": f"{type(err).__module__}:{type(err).__qualname__}",
            "message": str(err),
        }
        agreed = _all_ranks_failed(
            error, info.rank, info.world_size, context.get("agree_seconds", AGREE_SECONDS)
        )
        if agreed is None:  # this rank's alone: stop the run (the others may wait in a collective)
            print(f"{MARKER} {json.dumps(error)}", flush=True)
            if context.get("error_dir"):
                path = os.path.join(context["error_dir"], f"error-rank{info.rank}.json")
                with open(path, "w") as out:
                    json.dump(error, out)
            sys.stderr.flush()
            os._exit(USER_ERROR_EXIT)  # no traceback; torchrun stops the other ranks
        if dist.is_initialized():
            dist.destroy_process_group()
        return pickle.dumps(("error", agreed))
    payload = broadcast_object(pickle.dumps(("ok", result)) if info.is_primary else None)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return payload


def rank_report() -> dict:
    """Who the ranks are: {"world_size", "ranks": [{rank, local_rank, host, pid, device, backend}]},
    gathered over the process group (a smoke check of a launch: `run_distributed(rank_report, cfg)`)."""
    import socket

    import torch

    from training.common.device import dist_info, is_distributed

    info = dist_info()
    me = {
        "rank": info.rank,
        "local_rank": info.local_rank,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "device": f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu",
        "backend": None,
    }
    if not is_distributed():
        return {"world_size": 1, "ranks": [me]}
    import torch.distributed as dist

    me["backend"] = str(dist.get_backend())
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, me)
    return {"world_size": dist.get_world_size(), "ranks": everyone}


# -- on the driver ----------------------------------------------------------------------------------
def _mlflow_context() -> dict:
    import mlflow

    run = mlflow.active_run()
    return {
        "tracking_uri": mlflow.get_tracking_uri(),  # every rank reads the driver's store (runs:/ URIs)
        "run_id": run.info.run_id if run is not None else None,
        "experiment_id": run.info.experiment_id if run is not None else None,
    }


_MARKER_LINE = re.compile(rf"{MARKER} (\{{.*\}})")


def rebuild_error(error: dict) -> BaseException:
    """A rank's user error, {"error": "module:Class", "message": ...}, as an exception here."""
    import importlib

    module, _, name = error["error"].partition(":")
    try:
        return getattr(importlib.import_module(module), name)(error["message"])
    except Exception:  # noqa: BLE001 - a class that cannot be rebuilt from its message
        return DataError(error["message"])


def user_error_from(err: BaseException, error_dir: str | None = None) -> BaseException | None:
    """The user error a rank reported before stopping the run (a file in `error_dir`, or its
    marker line in the distributor's error), rebuilt; None when no rank reported one."""
    found = []
    if error_dir and os.path.isdir(error_dir):
        for name in sorted(os.listdir(error_dir)):
            with open(os.path.join(error_dir, name)) as reported:
                found.append(json.load(reported))
    text, seen = "", err
    while seen is not None:
        text += str(seen) + "\n"
        seen = seen.__cause__ or seen.__context__
    for match in _MARKER_LINE.finditer(text):
        try:
            found.append(json.loads(match.group(1)))
        except json.JSONDecodeError:
            continue
    if not found:
        return None
    return rebuild_error(min(found, key=lambda e: e["rank"]))


def _distributor(cfg: LaunchConfig, deepspeed_config: str):
    """The pyspark distributor of `cfg` (its GPU checks against the Spark resources, as LaunchError)."""
    try:
        if cfg.launcher == "deepspeed_distributor":
            from pyspark.ml.deepspeed.deepspeed_distributor import DeepspeedTorchDistributor

            # numGpus x nnodes processes: local mode runs numGpus on the driver, executor mode
            # one per barrier task, so numGpus = num_processes and nnodes = 1 give num_processes
            return DeepspeedTorchDistributor(
                numGpus=cfg.num_processes,
                nnodes=1,
                localMode=cfg.local_mode,
                useGpu=cfg.use_gpu,
                deepspeedConfig=deepspeed_config or None,
            )
        from pyspark.ml.torch.distributor import TorchDistributor

        return TorchDistributor(
            num_processes=cfg.num_processes, local_mode=cfg.local_mode, use_gpu=cfg.use_gpu
        )
    except RuntimeError as err:  # "GPUs were unable to be found on the driver." and the like
        raise LaunchError(f"launch.use_gpu: {err}") from None


def run_distributed(
    fn: Callable, cfg: LaunchConfig, *args: Any, deepspeed_config: str = "", **kwargs: Any
) -> Any:
    """Run `fn(*args, **kwargs)` on `cfg.num_processes` ranks through the configured distributor
    (needs an active SparkSession); returns rank 0's return value.

    `fn` must be a module-level function (the processes import it); its arguments travel pickled.
    Rank 0 runs inside the driver's active MLflow run, if any. A user error raised in the ranks
    is raised here again (same class, same one-line message).
    """
    if not cfg.enabled:
        raise ValueError("run_distributed needs launch.launcher torch_distributor or deepspeed_distributor")
    if inside_rank():
        raise RuntimeError("run_distributed called inside a rank: launch from the driver")
    if cfg.use_gpu and cfg.local_mode:
        import torch

        if torch.cuda.device_count() < cfg.num_processes:
            raise LaunchError(
                f"launch.use_gpu with local_mode needs {cfg.num_processes} GPUs on the driver, it has "
                f"{torch.cuda.device_count()}: set use_gpu: false (gloo on CPU) or fewer processes"
            )
    import shutil
    import tempfile

    error_dir = tempfile.mkdtemp(prefix="larr-launch-") if cfg.local_mode else None
    context = {
        **_mlflow_context(),
        "use_gpu": cfg.use_gpu,
        "error_dir": error_dir,
        "agree_seconds": AGREE_SECONDS,
    }
    restore = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not cfg.use_gpu and cfg.local_mode:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # CPU ranks even on a GPU driver (executors: Spark does it)
    try:
        payload = _distributor(cfg, deepspeed_config).run(_rank_main, fn, args, kwargs, context)
    except Exception as err:
        user = user_error_from(err, error_dir)
        if user is not None:
            raise user from None
        raise
    finally:
        if not cfg.use_gpu and cfg.local_mode:
            if restore is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = restore
        if error_dir:
            shutil.rmtree(error_dir, ignore_errors=True)
    status, value = pickle.loads(payload)
    if status == "error":
        raise rebuild_error(value) from None
    return value
