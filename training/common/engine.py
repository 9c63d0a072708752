"""How a step updates the weights: plain torch (one process or DDP under `torchrun`) or DeepSpeed.

The train loop talks to an engine only: `module` (what the forward runs through), `no_sync`
(skip the gradient all-reduce on micro-batches before the accumulation boundary),
`backward(loss, boundary)`, `clip()` (the gradient norm before clipping, None when the engine
clips internally), `step()`, `lr`, and `save`/`load` of the tensor state for `checkpoint.py`.

- `TorchEngine`: torch AdamW + LambdaLR; wraps the model in `DistributedDataParallel` when the
  process group has several ranks. Loss is divided by `grad_accum` (micro-batches weigh equally).
- `DeepSpeedEngine`: `deepspeed.initialize` with the client AdamW and scheduler and a ZeRO JSON
  from `jobs/deepspeed/`; the JSON's batch, accumulation and clipping keys are overwritten from the
  trainer's config, so the YAML stays the one source of truth. bf16 on CUDA.

`build_engine` picks one of them from the trainer's config. Under ZeRO-3 the weights are
partitioned over the ranks from the moment they are loaded (`announce_zero3`: Hugging Face
loads each shard straight into its partition, so a 7B model never sits whole on one rank), and
code that reads or writes whole weight matrices (saving the final model, editing embedding rows)
runs inside `full_weights`, which gathers them for its duration. Both are no-ops otherwise.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from core.paths import repo_path
from training.common.device import dist_info, is_distributed


class TorchEngine:
    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler,
        *,
        grad_accum: int,
        clip_norm: float,
        device: torch.device,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.grad_accum = grad_accum
        self.clip_norm = clip_norm
        self.device = device
        self.module = model
        if is_distributed():
            from torch.nn.parallel import DistributedDataParallel

            self.module = DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        self._params = [p for group in optimizer.param_groups for p in group["params"]]

    def no_sync(self, boundary: bool):
        if boundary or self.module is self.model:
            return contextlib.nullcontext()
        return self.module.no_sync()

    def backward(self, loss: torch.Tensor, boundary: bool) -> None:
        (loss / self.grad_accum).backward()

    def clip(self) -> float:
        limit = self.clip_norm if self.clip_norm > 0 else float("inf")
        return float(torch.nn.utils.clip_grad_norm_(self._params, limit))

    def step(self) -> None:
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def save(self, folder: Path) -> None:
        if not dist_info().is_primary:
            return  # DDP ranks hold identical replicas: rank 0 writes them
        torch.save(self.model.state_dict(), folder / "model.pt")
        torch.save(self.optimizer.state_dict(), folder / "optimizer.pt")
        torch.save(self.scheduler.state_dict(), folder / "scheduler.pt")

    def load(self, folder: Path) -> None:
        location = self.device
        # all three read before any is applied: a damaged file leaves the engine as it was
        model = torch.load(folder / "model.pt", map_location=location, weights_only=True)
        optimizer = torch.load(folder / "optimizer.pt", map_location=location)
        scheduler = torch.load(folder / "scheduler.pt", weights_only=False)
        self.model.load_state_dict(model)
        self.optimizer.load_state_dict(optimizer)
        self.scheduler.load_state_dict(scheduler)


DEEPSPEED_TAG = "deepspeed"


class DeepSpeedEngine:
    """ZeRO-2 / ZeRO-3 through DeepSpeed. The engine accumulates, clips and steps internally:
    `backward` calls `engine.backward` and, before the boundary, `engine.step` (a micro-step);
    `step` is the boundary step. The gradient norm is read after the step (DeepSpeed clips inside
    it), so a non-finite norm stops the run after that update: the checkpoints on disk are good."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler,
        *,
        settings: dict,
        device: torch.device,
    ) -> None:
        import deepspeed
        import torch.distributed as dist

        if not dist.is_initialized():  # one process without a launcher: a group of one
            deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo")
        self.engine, _, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=settings
        )
        self.model = self.engine.module
        self.module = self.engine
        self.device = device
        self.last_norm: float | None = None

    def no_sync(self, boundary: bool):
        return contextlib.nullcontext()  # DeepSpeed reduces gradients at the boundary itself

    def backward(self, loss: torch.Tensor, boundary: bool) -> None:
        self.engine.backward(loss)  # scaled by 1 / gradient_accumulation_steps inside
        if not boundary:
            self.engine.step()

    def clip(self) -> None:
        return None

    def step(self) -> None:
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        self.last_norm = None if norm is None else float(norm)

    @property
    def lr(self) -> float:
        return self.engine.get_lr()[0]

    def save(self, folder: Path) -> None:
        self.engine.save_checkpoint(str(folder), tag=DEEPSPEED_TAG, save_latest=False)

    def load(self, folder: Path) -> None:
        path, _ = self.engine.load_checkpoint(
            str(folder), tag=DEEPSPEED_TAG, load_optimizer_states=True, load_lr_scheduler_states=True
        )
        if path is None:
            raise RuntimeError(f"DeepSpeed found no checkpoint under {folder}/{DEEPSPEED_TAG}")


def deepspeed_settings(
    config_path: str, *, micro_batch_size: int, grad_accum: int, clip_norm: float, device: torch.device
) -> dict:
    """The ZeRO JSON with its batch, accumulation, clipping and precision keys set from the trainer.
    A relative `config_path` the working folder lacks is the checkout's (`jobs/deepspeed/zero2.json`)."""
    try:
        settings = json.loads(repo_path(config_path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"deepspeed_config {config_path}: {err}") from None
    settings.pop("train_batch_size", None)
    settings["train_micro_batch_size_per_gpu"] = micro_batch_size
    settings["gradient_accumulation_steps"] = grad_accum
    settings["gradient_clipping"] = clip_norm
    settings["bf16"] = {"enabled": device.type == "cuda"}
    return settings


def zero_stage(settings: dict | None) -> int:
    return int(((settings or {}).get("zero_optimization") or {}).get("stage", 0))


_HF_ZERO3 = None  # transformers holds only a weak reference: keep it for the process's run


def announce_zero3(settings: dict | None) -> None:
    """Tell transformers this process trains under ZeRO-3 (for the rest of the process):
    `from_pretrained` then loads straight into the partitions and `resize_token_embeddings`
    gathers what it resizes. A no-op for other settings."""
    global _HF_ZERO3
    if zero_stage(settings) == 3:
        from transformers.integrations import HfDeepSpeedConfig

        _HF_ZERO3 = HfDeepSpeedConfig(settings)


@contextlib.contextmanager
def full_weights(params: Iterable[torch.nn.Parameter], modify: bool = False) -> Iterator[None]:
    """Whole tensors of ZeRO-3-partitioned `params` while open (a collective: every rank enters);
    `modify=True` writes rank 0's edits back into the partitions. A no-op for ordinary tensors."""
    params = list(params)
    if not any(hasattr(p, "ds_id") for p in params):
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=0 if modify else None):
        yield


def build_engine(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    *,
    grad_accum: int,
    clip_norm: float,
    device: torch.device,
    settings: dict | None = None,
):
    """DeepSpeed when the trainer has ZeRO `settings` (`deepspeed_settings`), else plain torch / DDP."""
    if settings:
        return DeepSpeedEngine(model, optimizer, scheduler, settings=settings, device=device)
    return TorchEngine(model, optimizer, scheduler, grad_accum=grad_accum, clip_norm=clip_norm, device=device)
