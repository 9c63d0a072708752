"""A non-finite loss or gradient norm stops the run: never a silent NaN model.

The check runs before the backward pass (and on the gradient norm before the optimizer step), so
the weights and the checkpoints on disk are never touched by a NaN; the error names the step and
the last good checkpoint, which the next run resumes from. In distributed runs the ranks agree
(one all-reduce) so that all of them stop together instead of hanging in a collective.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from training.common.device import all_reduce_sum


class NonFiniteLossError(RuntimeError):
    pass


def check_finite(
    value: torch.Tensor | float, step: int, last_checkpoint: Path | None, what: str = "loss"
) -> None:
    """Raise `NonFiniteLossError` when `value` is NaN or infinite on any rank.

    `step` is the optimizer step being computed (1-based).
    """
    number = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
    device = value.device if isinstance(value, torch.Tensor) else torch.device("cpu")
    bad = all_reduce_sum([0.0 if math.isfinite(number) else 1.0], device)[0]
    if bad:
        kept = f"last good checkpoint: {last_checkpoint}" if last_checkpoint else "no checkpoint written yet"
        raise NonFiniteLossError(f"{what} is {number} at step {step}: run stopped; {kept}")
