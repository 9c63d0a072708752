"""The scaffolding every trainer shares (stage 1 `training/lm/cpt.py`, stage 2
`training/embedding/contrastive.py`, stage 3 `training/ctr/train.py`); each keeps only its data,
model and loss.

    # run(spark, catalog, cfg): pin the data once, then train on every rank
    data = prepare_on_rank0(lambda: prepare(spark, catalog, cfg), cfg.device, cfg.launch)
    folder = checkpoint_folder(catalog.root, "cpt", config_key(cfg), cfg.checkpoint_dir)
    return run_ranks(train, cfg.launch, cfg, data, folder, log=log)

    # train(cfg, data, folder, log), on every rank
    info, device = join(cfg.device)
    settings = deepspeed_setup(cfg.deepspeed_config, ..., train_layers=cfg.train_layers)
    engine = trainer_engine(model, cfg, device, settings, no_decay=no_decay)
    result = train_loop(engine, batches, loss_fn, loop_settings(cfg, folder, cfg.max_steps), config=cfg)
    return Trained(summary, result.losses, model, tokenizer, result.resumed_from)

- `config_key`: the short hash of the settings that shape the trained weights; it names the
  checkpoint folder, so the same config resumes and another one starts fresh.
- `checkpoint_folder`: the config's `checkpoint_dir`, else `<lakehouse>/_checkpoints/<stage>/<key>`.
- `deepspeed_setup`: the ZeRO JSON of `deepspeed_config` (a path inside the checkout, such as
  `jobs/deepspeed/zero2.json`, works from any working folder) with the trainer's batch keys;
  ZeRO-3 refuses `train_layers > 0`.
- `trainer_engine`: AdamW, the warmup-cosine schedule and the engine from the LLM stages' config.
- `loop_settings`: `LoopSettings` from the config's checkpoint and progress fields.
- `prepare_on_rank0` / `run_ranks`: the data is pinned once (Spark, on the driver or rank 0) and
  handed to the ranks; the training runs on the ranks a launcher starts, or in this process.
- `Trained`: what a trainer's train function returns on every rank.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

import torch

from training.common.device import DistInfo, broadcast_object, dist_info, init_distributed, pick_device
from training.common.engine import build_engine, deepspeed_settings, zero_stage
from training.common.launch import LaunchConfig, run_distributed, wants_launch
from training.common.loop import LoopSettings
from training.common.schedule import build_optimizer, build_scheduler

T = TypeVar("T")

# Fields of every trainer's config that never change the trained weights: left out of its key.
BOOKKEEPING = ("checkpoint_dir", "checkpoint_every", "keep_checkpoints", "resume", "progress", "launch")
CHECKPOINTS = "_checkpoints"  # <lakehouse>/_checkpoints/<stage>/<config key>


class TrainerConfig(Protocol):
    """The fields `loop_settings` reads (every trainer's config has them)."""

    checkpoint_every: int
    keep_checkpoints: int
    resume: bool
    progress: bool


class OptimizerConfig(Protocol):
    """The fields `trainer_engine` reads (the LLM stages' configs have them)."""

    lr: float
    weight_decay: float
    warmup_steps: int
    max_steps: int
    min_lr_ratio: float
    clip_norm: float


class Trained(NamedTuple):
    """What a trainer's train function returns on every rank."""

    summary: dict | None  # the run's figures; None on a rank that does not evaluate (CTR: all but 0)
    losses: list[float]  # the loss curve, one value per optimizer step
    model: torch.nn.Module
    preprocessor: Any = None  # what turns rows into the model's input: the tokenizer, or CTR's layout
    resumed_from: int | None = None  # the step of the checkpoint the run resumed from


def config_key(cfg: Any, skip: Iterable[str] = (), extra: Mapping[str, Any] | None = None) -> str:
    """A short hash of a config dataclass without its `BOOKKEEPING` and `skip` fields, plus `extra`
    (what else shapes the weights: the data, a model revision)."""
    left_out = {*BOOKKEEPING, *skip}
    data = {k: v for k, v in asdict(cfg).items() if k not in left_out} | dict(extra or {})
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def checkpoint_folder(
    lakehouse: str,
    stage: str,
    key: str,
    configured: str = "",
    *,
    under: str = "",
    error: type[Exception] = ValueError,
) -> str:
    """`configured` (the config's checkpoint_dir) when set, else `<lakehouse>/_checkpoints/<stage>/<key>`;
    `under` is a sub-folder of either (CTR: `seed-<n>`). A remote lakehouse needs `configured`
    (`error` otherwise): checkpoints are written with local file operations."""
    from core.catalog import is_remote

    if configured:
        return str(Path(configured) / under) if under else configured
    if is_remote(lakehouse):
        raise error(f"lakehouse {lakehouse} is remote: set checkpoint_dir to a shared local/FUSE path")
    return str(Path(lakehouse) / CHECKPOINTS / stage / key / under)


def deepspeed_setup(
    config_path: str,
    *,
    micro_batch_size: int,
    grad_accum: int,
    clip_norm: float,
    device: torch.device,
    train_layers: int = 0,
    error: type[Exception] = ValueError,
) -> dict | None:
    """None without a ZeRO JSON (plain torch / DDP); else its settings (`engine.deepspeed_settings`:
    a relative path is read from the checkout when the working folder lacks it). ZeRO-3 partitions
    every weight, so training only the last `train_layers` blocks is refused (`error`)."""
    if not config_path:
        return None
    settings = deepspeed_settings(
        config_path,
        micro_batch_size=micro_batch_size,
        grad_accum=grad_accum,
        clip_norm=clip_norm,
        device=device,
    )
    if zero_stage(settings) == 3 and train_layers:
        raise error("train_layers > 0 (the CPU demo setting) cannot run under ZeRO-3: set train_layers: 0")
    return settings


def trainer_engine(
    model: torch.nn.Module,
    cfg: OptimizerConfig,
    device: torch.device,
    settings: dict | None,
    *,
    no_decay: Iterable[str] = (),
    grad_accum: int = 1,
):
    """AdamW (no weight decay on `no_decay` name parts), warmup then cosine decay to
    `lr * min_lr_ratio` at `max_steps`, in an engine: DeepSpeed with ZeRO `settings`
    (`deepspeed_setup`), else plain torch / DDP."""
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, no_decay=tuple(no_decay))
    scheduler = build_scheduler(optimizer, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
    return build_engine(
        model,
        optimizer,
        scheduler,
        grad_accum=grad_accum,
        clip_norm=cfg.clip_norm,
        device=device,
        settings=settings,
    )


def loop_settings(
    cfg: TrainerConfig, checkpoint_dir: str, max_steps: int, grad_accum: int = 1
) -> LoopSettings:
    """The train loop's settings: `max_steps` and `grad_accum` (the trainer knows them), the
    checkpoint and progress fields from its config."""
    return LoopSettings(
        max_steps=max_steps,
        grad_accum=grad_accum,
        checkpoint_every=cfg.checkpoint_every,
        keep_checkpoints=cfg.keep_checkpoints,
        checkpoint_dir=checkpoint_dir,
        resume=cfg.resume,
        progress=cfg.progress,
    )


def trainable_params(model: torch.nn.Module) -> int:
    """Parameters that train (ZeRO-3: their whole size, not this rank's partition)."""
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if p.requires_grad)


# -- where it runs ----------------------------------------------------------------------------------
def join(device: str = "auto") -> tuple[DistInfo, torch.device]:
    """This rank's place and device, the process group joined (once; nothing to join for one process)."""
    info = dist_info()
    chosen = pick_device(device, info.local_rank)
    init_distributed(info, chosen)
    return info, chosen


def prepare_on_rank0(prepare: Callable[[], T], device: str, launch: LaunchConfig) -> T:
    """The trainer's data, pinned once by `prepare()` (the Spark side): here when this process
    launches the ranks itself (`run_ranks` hands it to them), else on rank 0 and broadcast to the
    other ranks (`torchrun` / `deepspeed`); one process just prepares it."""
    if wants_launch(launch):
        return prepare()
    info, _ = join(device)  # before the broadcast
    return broadcast_object(prepare() if info.is_primary else None)


def run_ranks(
    fn: Callable[..., T],
    launch: LaunchConfig,
    *args: Any,
    deepspeed_config: str = "",
    announce: str = "",
    log: Callable[[str], None] = print,
) -> T:
    """`fn(*args)` on the `launch.num_processes` ranks pyspark's distributor starts (rank 0's result,
    after logging `announce`), or `fn(*args, log=log)` in this process (one process, or a rank
    `torchrun` / `deepspeed` started). `fn` is module level: the distributor pickles it."""
    if wants_launch(launch):
        if announce:
            log(announce)
        return run_distributed(fn, launch, *args, deepspeed_config=deepspeed_config)
    return fn(*args, log=log)
