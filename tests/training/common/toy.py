"""A toy trainer for the shared loop's tests: a linear model, eight fixed batches per epoch."""

from __future__ import annotations

import torch

from training.common.engine import TorchEngine
from training.common.loop import StepOutput


def engine() -> TorchEngine:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    return TorchEngine(model, optimizer, scheduler, grad_accum=1, clip_norm=1.0, device=torch.device("cpu"))


def batches(epoch: int, skip: int):
    generator = torch.Generator().manual_seed(epoch)
    data = torch.randn(8, 2, 4, generator=generator)
    yield from data[skip:]


def square_loss(module, batch) -> StepOutput:
    return StepOutput(module(batch).pow(2).mean(), 1)
