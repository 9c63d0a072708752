"""The train loop every trainer of the platform shares (nanoGPT's loop, as a function).

    result = train_loop(engine, batches, loss_fn, settings, config=cfg, tokenizer=tokenizer)

- `batches(epoch, skip)` yields the micro-batches of one epoch after skipping the first `skip`;
  it must be a pure function of its arguments (`DeltaBatches.epoch` is), so the data position
  (epoch, micro-batches done in it) saved with a checkpoint makes a resumed run see exactly the
  batches an uninterrupted run would.
- `loss_fn(module, batch) -> StepOutput(loss, tokens)`: the mean loss of one micro-batch and the
  tokens it processed (for tokens/s).
- One optimizer step = `grad_accum` micro-batches, each weighted 1 / grad_accum; gradients are
  clipped to `clip_norm` (the engine's job), then AdamW and the scheduler step.
- A non-finite loss (checked before its backward) or gradient norm raises `NonFiniteLossError`
  naming the step and the last good checkpoint (`guard.py`).
- Every `checkpoint_every` steps and at the end: an atomic checkpoint (`checkpoint.py`), then
  `on_checkpoint(step, path, model)` (tests use it to kill the process or corrupt the weights).
- With a `checkpoint_dir` holding checkpoints and `resume` set, the newest usable one is loaded
  first: weights, optimizer, scheduler, RNG states, data position and the loss curve so far (a
  corrupt one is reported in one line and the one before it used: `checkpoint.resume`).
- With `validation` (`early_stop.Validation`), a validation score every `every` steps, early
  stopping after `patience` scores without improvement, and the best weights put back at the
  end (`result.best_step`, `result.validation`); the scores travel in the checkpoint state.
- The loss curve (one mean loss per optimizer step, averaged over ranks) comes back in the
  result; the trainer logs its PNG to MLflow on rank 0 (`training/common/tracking.py`).
- While it trains, rank 0 inside an active MLflow run logs `train_loss`, `lr` and the throughput
  (`throughput`: `tokens_per_s`, or `samples_per_s` where StepOutput.tokens counts samples; all
  ranks' tokens over the step's wall time, data loading included, checkpoints not) at every
  optimizer step, buffered and sent in batches (`tracking.StepLogger`); a resumed loop goes on
  from its checkpoint's step. `step_metrics=False` logs nothing (benchmarks time the loop itself).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch

from training.common.checkpoint import checkpoint_name, load_checkpoint, resume, save_checkpoint, verify
from training.common.device import all_reduce_sum, broadcast_object, dist_info
from training.common.early_stop import BEST, Validation, ValidationTracker, weights_copy
from training.common.guard import check_finite
from training.common.tracking import StepLogger


class LoopError(RuntimeError):
    pass


class StepOutput(NamedTuple):
    loss: torch.Tensor  # scalar, the micro-batch's mean loss (with grad)
    tokens: int  # tokens the micro-batch processed (throughput only)


@dataclass(frozen=True)
class LoopSettings:
    max_steps: int
    grad_accum: int = 1
    checkpoint_every: int = 0  # 0: a checkpoint at the end only
    keep_checkpoints: int = 2
    checkpoint_dir: str = ""  # "": no checkpoints and no resume
    resume: bool = True
    progress: bool = True  # tqdm bar on rank 0

    def __post_init__(self) -> None:
        if (
            self.max_steps < 1
            or self.grad_accum < 1
            or self.checkpoint_every < 0
            or self.keep_checkpoints < 1
        ):
            raise ValueError(f"bad loop settings {self}")


@dataclass
class LoopResult:
    steps: int
    losses: list[float]  # loss curve: index i = optimizer step i + 1 (including steps before a resume)
    tokens: int  # tokens trained on by all ranks in this process's run (not before a resume)
    seconds: float  # wall time of this run's steps
    resumed_from: int | None = None  # the step of the checkpoint this run started from
    last_checkpoint: Path | None = None
    state: dict = field(default_factory=dict)
    validation: list[tuple[int, float]] = field(default_factory=list)  # (step, score) with validation
    best_step: int | None = None  # the step whose weights the model holds at the end (validation)
    stopped_early: bool = False  # validation's patience ran out before max_steps

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def _stream(batches: Callable[[int, int], Iterable], epoch: int, skip: int) -> Iterator[tuple[int, int, Any]]:
    """(epoch, index in epoch, batch) forever, moving to the next epoch when one runs out."""
    while True:
        index = skip
        for batch in batches(epoch, skip):
            yield epoch, index, batch
            index += 1
        if index == 0:
            raise LoopError(f"epoch {epoch} produced no batches")
        epoch, skip = epoch + 1, 0


def train_loop(
    engine,
    batches: Callable[[int, int], Iterable],
    loss_fn: Callable[[Any, Any], StepOutput],
    settings: LoopSettings,
    *,
    config: Any,
    tokenizer=None,
    on_checkpoint: Callable[[int, Path, torch.nn.Module], None] | None = None,
    log: Callable[[str], None] = print,
    throughput: str = "tokens_per_s",
    step_metrics: bool = True,
    validation: Validation | None = None,
) -> LoopResult:
    from tqdm.auto import tqdm

    info = dist_info()
    state = {"epoch": 0, "position": 0, "losses": []}
    resumed_from, last = None, None
    if (
        settings.checkpoint_dir
        and settings.resume
        and (found := resume(settings.checkpoint_dir, engine, log))
    ):
        last, state = found
        resumed_from = state["step"]
        if info.is_primary:
            log(
                f"resuming from {last} (step {resumed_from}, epoch {state['epoch']}, batch {state['position']})"
            )
    step = len(state["losses"])
    tracker = ValidationTracker.from_state(state.get("validation"))
    best_weights = None  # in memory from this run; a resumed run reads <checkpoint_dir>/best
    if step >= settings.max_steps or tracker.stopped:
        _restore_best(engine, validation, tracker, step, best_weights, settings, log)
        return _result(step, state["losses"], 0, 0.0, resumed_from, last, state, validation, tracker)

    stream = _stream(batches, state["epoch"], state["position"])
    device = getattr(engine, "device", torch.device("cpu"))
    losses: list[float] = list(state["losses"])
    tokens = 0
    metrics = StepLogger(start_step=step, enabled=step_metrics)
    bar = tqdm(
        total=settings.max_steps,
        initial=step,
        disable=not (settings.progress and info.is_primary),
        desc="train",
    )
    started = mark = time.perf_counter()
    try:
        while step < settings.max_steps:
            engine.module.train()
            step_loss, step_tokens = 0.0, 0
            for micro in range(settings.grad_accum):
                epoch, index, batch = next(stream)
                boundary = micro == settings.grad_accum - 1
                with engine.no_sync(boundary):
                    out = loss_fn(engine.module, batch)
                    check_finite(out.loss, step + 1, last)
                    engine.backward(out.loss, boundary)
                step_loss += float(out.loss.detach()) / settings.grad_accum
                step_tokens += out.tokens
            tokens += step_tokens
            norm = engine.clip()
            if norm is not None:
                check_finite(norm, step + 1, last, what="gradient norm")
            lr = engine.lr
            engine.step()
            if getattr(engine, "last_norm", None) is not None:
                check_finite(engine.last_norm, step + 1, last, what="gradient norm")
            step += 1
            loss_sum, tokens_sum = all_reduce_sum([step_loss, float(step_tokens)], device)
            losses.append(loss_sum / info.world_size)
            elapsed = time.perf_counter() - mark
            rate = tokens_sum / elapsed if elapsed > 0 else math.nan
            metrics.log(step, {"train_loss": losses[-1], "lr": lr, throughput: rate})
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{lr:.2e}")
            state = {"epoch": epoch, "position": index + 1, "losses": losses}
            if validation is not None and validation.due(step, settings.max_steps):
                score = float(broadcast_object(validation.score(engine.model)))
                metrics.log(step, {validation.name: score})
                if tracker.observe(step, score):
                    best_weights = weights_copy(engine.model)
                    if settings.checkpoint_dir:
                        _save(engine, settings, step, state, config, tokenizer, folder=BEST)
                tracker.stopped = tracker.exhausted(validation.patience) and step < settings.max_steps
            if validation is not None:
                state["validation"] = tracker.to_state()
            due = settings.checkpoint_every and step % settings.checkpoint_every == 0
            if settings.checkpoint_dir and (due or step == settings.max_steps or tracker.stopped):
                metrics.flush()  # the run holds every step up to the checkpoint
                last = _save(engine, settings, step, state, config, tokenizer)
                if on_checkpoint is not None:
                    on_checkpoint(step, last, engine.model)
            mark = time.perf_counter()  # the next step's time leaves out checkpoints and logging
            if tracker.stopped:
                if info.is_primary:
                    log(
                        f"early stop at step {step}: {validation.name} has not improved on "
                        f"{tracker.best_score:.5f} (step {tracker.best_step}) for {validation.patience} scores"
                    )
                break
    finally:
        metrics.flush()
        bar.close()
        stream.close()  # closes the Petastorm reader of an unfinished epoch
    seconds = time.perf_counter() - started
    tokens = int(all_reduce_sum([float(tokens)], device)[0])
    _restore_best(engine, validation, tracker, step, best_weights, settings, log)
    return _result(step, losses, tokens, seconds, resumed_from, last, state, validation, tracker)


def _save(
    engine, settings: LoopSettings, step: int, state: dict, config, tokenizer, folder: str = ""
) -> Path:
    target = Path(settings.checkpoint_dir) / folder if folder else settings.checkpoint_dir
    keep = 1 if folder else settings.keep_checkpoints
    return save_checkpoint(
        target, step, engine=engine, state=state, config=config, tokenizer=tokenizer, keep=keep
    )


def _restore_best(engine, validation, tracker, step, best_weights, settings, log) -> None:
    """Put the best validation weights back (from memory, else `<checkpoint_dir>/best`)."""
    if validation is None or not tracker.scores or tracker.best_step in (0, step):
        return
    if best_weights is not None:
        engine.model.load_state_dict(best_weights)
    else:
        folder = Path(settings.checkpoint_dir) / BEST / checkpoint_name(tracker.best_step)
        problem = verify(folder) if folder.is_dir() else "missing"
        if problem is not None:
            raise LoopError(
                f"the best weights of step {tracker.best_step} ({folder}) are unusable ({problem}): "
                "delete the checkpoint folder to train again"
            )
        load_checkpoint(folder, engine)
    if dist_info().is_primary:
        log(
            f"kept the weights of step {tracker.best_step} ({validation.name} {tracker.best_score:.5f}); "
            f"step {step} scored {tracker.scores[-1][1]:.5f}"
        )


def _result(step, losses, tokens, seconds, resumed_from, last, state, validation, tracker) -> LoopResult:
    result = LoopResult(step, list(losses), tokens, seconds, resumed_from, last, state)
    if validation is not None:
        result.validation = list(tracker.scores)
        result.best_step = tracker.best_step or step
        result.stopped_early = tracker.stopped
    return result
