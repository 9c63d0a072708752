"""Early stopping in the shared train loop: scores every `every` steps, a stop after `patience`
scores without improvement, the best weights put back at the end, and all of it surviving a
resume from a checkpoint (the best weights read from `<checkpoint_dir>/best`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.training.common.toy import batches, engine, square_loss
from training.common.checkpoint import checkpoints
from training.common.early_stop import BEST, Validation, ValidationTracker
from training.common.loop import LoopError, LoopSettings, train_loop


class Scripted:
    """Validation scores from a list, one per call, remembering the weights each call saw."""

    def __init__(self, scores: list[float]):
        self.scores = list(scores)
        self.seen: list[dict[str, torch.Tensor]] = []

    def __call__(self, model: torch.nn.Module) -> float:
        self.seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return self.scores.pop(0)


class Interrupt(Exception):
    pass


def _train(folder: Path | None, score: Scripted, *, max_steps=20, patience=2, stop_at=None, messages=None):
    model_engine = engine()

    def crash(step, path, model):
        if step == stop_at:
            raise Interrupt

    settings = LoopSettings(
        max_steps=max_steps,
        checkpoint_every=2,
        checkpoint_dir=str(folder or ""),
        progress=False,
    )
    result = train_loop(
        model_engine,
        batches,
        square_loss,
        settings,
        config={},
        log=(messages if messages is not None else []).append,
        step_metrics=False,
        on_checkpoint=crash,
        validation=Validation(every=2, patience=patience, score=score, name="val_auc"),
    )
    return result, model_engine.model


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


SCORES = [0.5, 0.7, 0.6, 0.65, 0.9, 0.95]  # steps 2, 4, 6, 8, ...: the best at 4, then two worse


def test_patience_stops_the_run_and_the_best_weights_come_back(tmp_path):
    messages: list[str] = []
    score = Scripted(SCORES)
    result, model = _train(tmp_path / "run", score, messages=messages)
    assert result.validation == [(2, 0.5), (4, 0.7), (6, 0.6), (8, 0.65)]
    assert (result.steps, result.best_step, result.stopped_early) == (8, 4, True)
    assert _equal(model.state_dict(), score.seen[1])  # the weights step 4 was scored with
    assert not _equal(model.state_dict(), score.seen[3])
    assert [p.name for p in checkpoints(tmp_path / "run" / BEST)] == ["step-000004"]
    assert messages == [
        "early stop at step 8: val_auc has not improved on 0.70000 (step 4) for 2 scores",
        "kept the weights of step 4 (val_auc 0.70000); step 8 scored 0.65000",
    ]


def test_without_patience_it_trains_every_step_and_still_keeps_the_best(tmp_path):
    score = Scripted([0.5, 0.7, 0.6, 0.65, 0.4])
    result, model = _train(None, score, max_steps=10, patience=0)
    assert (result.steps, result.best_step, result.stopped_early) == (10, 4, False)
    assert _equal(model.state_dict(), score.seen[1])


def test_a_resumed_run_stops_where_an_uninterrupted_one_does_with_the_same_weights(tmp_path):
    _, uninterrupted = _train(tmp_path / "a", Scripted(SCORES))
    with pytest.raises(Interrupt):  # killed after the checkpoint of step 6, past the best step
        _train(tmp_path / "b", Scripted(SCORES), stop_at=6)
    resumed_score = Scripted(SCORES[3:])  # step 8 onwards
    result, resumed = _train(tmp_path / "b", resumed_score)
    assert (result.resumed_from, result.steps, result.best_step) == (6, 8, 4)
    assert result.validation == [(2, 0.5), (4, 0.7), (6, 0.6), (8, 0.65)]
    assert _equal(resumed.state_dict(), uninterrupted.state_dict())  # read back from best/step-000004

    # a stopped run stays stopped: a re-run scores nothing and holds the same weights
    again, model = _train(tmp_path / "b", Scripted([]))
    assert (again.steps, again.best_step, again.stopped_early) == (8, 4, True)
    assert _equal(model.state_dict(), uninterrupted.state_dict())


def test_unusable_best_weights_are_one_line_naming_the_folder(tmp_path):
    _train(tmp_path / "run", Scripted(SCORES))
    best = tmp_path / "run" / BEST / "step-000004" / "model.pt"
    best.write_bytes(b"")
    with pytest.raises(LoopError) as raised:
        _train(tmp_path / "run", Scripted([]))
    assert str(raised.value) == (
        f"the best weights of step 4 ({best.parent}) are unusable (model.pt: checksum mismatch): "
        "delete the checkpoint folder to train again"
    )


def test_the_tracker_survives_its_checkpoint_state():
    tracker = ValidationTracker()
    assert tracker.observe(2, 0.6) and not tracker.observe(4, float("nan")) and tracker.observe(6, 0.7)
    assert not tracker.observe(8, 0.7)  # a tie is no improvement
    again = ValidationTracker.from_state(tracker.to_state())
    assert again == tracker and again.since_best() == 1 and again.exhausted(1) and not again.exhausted(0)
    assert ValidationTracker.from_state(None) == ValidationTracker()
