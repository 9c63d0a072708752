"""Early stopping on a validation score, for the shared train loop (`loop.py`).

    validation = Validation(every=50, patience=2, score=lambda model: auc_on_validation(model))
    result = train_loop(..., validation=validation)   # result.best_step, result.validation

- Every `every` optimizer steps, and at the last one, `score(model)` is computed (higher is
  better; every rank calls it, rank 0's value counts) and logged as the `name` curve.
- A better score than every earlier one keeps the weights: in memory, and, with a checkpoint
  folder, as the atomic checkpoint `<checkpoint_dir>/best/step-N` (so a resumed run still has them).
- After `patience` scores in a row without improvement the run stops (0: it never stops early).
- At the end the best weights are put back, so the model the trainer evaluates on its test split
  is the one validation chose: the test split is read once, after training.
- The scores so far, the best step and whether the run stopped travel in the checkpoint's state,
  so a resumed run goes on exactly as an uninterrupted one (and a stopped run stays stopped).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

BEST = "best"  # <checkpoint_dir>/best/step-N: the weights of the best validation score


@dataclass(frozen=True)
class Validation:
    every: int  # optimizer steps between scores (and always at the last step)
    patience: int  # scores in a row without improvement before stopping; 0 = never stop early
    score: Callable[[torch.nn.Module], float | None]  # higher is better; None on ranks but 0
    name: str = "val_score"  # the MLflow curve, one point per scored step

    def __post_init__(self) -> None:
        if self.every < 1 or self.patience < 0:
            raise ValueError(
                f"validation every >= 1 and patience >= 0 required, got {self.every}, {self.patience}"
            )

    def due(self, step: int, max_steps: int) -> bool:
        return step % self.every == 0 or step == max_steps


@dataclass
class ValidationTracker:
    """The scores so far and the best one; `to_state` / `from_state` carry it in a checkpoint."""

    scores: list[tuple[int, float]] = field(default_factory=list)  # (step, score)
    best_step: int = 0
    best_score: float = -math.inf
    stopped: bool = False

    def observe(self, step: int, score: float) -> bool:
        """Record a score; True when it is the best so far (NaN never is)."""
        self.scores.append((step, score))
        if math.isfinite(score) and score > self.best_score:
            self.best_step, self.best_score = step, score
            return True
        return False

    def since_best(self) -> int:
        return sum(1 for step, _ in self.scores if step > self.best_step)

    def exhausted(self, patience: int) -> bool:
        """Patience used up: `patience` scores in a row without a new best."""
        return patience > 0 and self.since_best() >= patience

    def to_state(self) -> dict:
        return {
            "scores": [[s, v] for s, v in self.scores],
            "best_step": self.best_step,
            "best_score": self.best_score if math.isfinite(self.best_score) else None,
            "stopped": self.stopped,
        }

    @classmethod
    def from_state(cls, state: dict | None) -> ValidationTracker:
        if not state:
            return cls()
        best = state.get("best_score")
        return cls(
            scores=[(int(s), float(v)) for s, v in state.get("scores", [])],
            best_step=int(state.get("best_step", 0)),
            best_score=-math.inf if best is None else float(best),
            stopped=bool(state.get("stopped", False)),
        )


def weights_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the model's weights (the best ones so far)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
