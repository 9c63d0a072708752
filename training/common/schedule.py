"""AdamW with decoupled weight decay on matrices only, and linear warm-up then cosine decay."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


def param_groups(model: torch.nn.Module, weight_decay: float, no_decay: tuple[str, ...] = ()) -> list[dict]:
    """Trainable parameters in two groups (nanoGPT's rule): matrices decay, vectors (biases, norms)
    do not. Names containing any of `no_decay` (e.g. an embedding whose rows are masked) never decay.
    A tensor shared by two names (tied embeddings) appears once."""
    decay, keep, seen = [], [], set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        if param.ndim >= 2 and not any(part in name for part in no_decay):
            decay.append(param)
        else:
            keep.append(param)
    if not decay and not keep:
        raise ValueError("the model has no trainable parameters")
    return [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]


def build_optimizer(
    model: torch.nn.Module,
    lr: float,
    weight_decay: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.95),
    no_decay: tuple[str, ...] = (),
) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, weight_decay, no_decay), lr=lr, betas=betas)


def warmup_cosine(step: int, warmup_steps: int, max_steps: int, min_ratio: float = 0.1) -> float:
    """Learning-rate multiplier: linear from 1/warmup to 1 over `warmup_steps`, then cosine down to
    `min_ratio` at `max_steps` (and `min_ratio` after it)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if step >= max_steps:
        return min_ratio
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, max_steps: int, min_ratio: float = 0.1
) -> LambdaLR:
    """Stepped once per optimizer step (not per micro-batch)."""
    return LambdaLR(optimizer, lambda step: warmup_cosine(step, warmup_steps, max_steps, min_ratio))
