"""Where a trainer computes: the device, bf16 autocast on CUDA, and the distributed process group.

A trainer launched by `torchrun` or `deepspeed` finds `RANK`, `WORLD_SIZE` and `LOCAL_RANK` in
its environment; `init_distributed` then joins the process group (NCCL on GPUs, gloo on CPU) and
every rank uses the GPU `LOCAL_RANK`. Launched plainly, it is one process with world size 1.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_primary(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def dist_info() -> DistInfo:
    """This process's rank, world size and local rank, from the launcher's environment."""
    return DistInfo(
        rank=int(os.environ.get("RANK", "0")),
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def pick_device(prefer: str = "auto", local_rank: int = 0) -> torch.device:
    """`auto`: this rank's GPU when CUDA is available, else the CPU; `cpu` / `cuda` force one."""
    if prefer not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {prefer!r}")
    if prefer == "cpu" or (prefer == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("device cuda requested but CUDA is not available")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def autocast(device: torch.device):
    """bf16 autocast on CUDA; on the CPU a no-op context (CPU training stays fp32)."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def init_distributed(info: DistInfo, device: torch.device) -> None:
    """Join the process group once when launched with several ranks (no-op for one process)."""
    import torch.distributed as dist

    if info.distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def is_distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if is_distributed():
        import torch.distributed as dist

        dist.barrier()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum plain numbers over the ranks (identity for one process)."""
    if not is_distributed():
        return list(values)
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def broadcast_object(obj, src: int = 0):
    """Rank `src`'s object on every rank (e.g. the Delta snapshot rank 0 pinned)."""
    if not is_distributed():
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
