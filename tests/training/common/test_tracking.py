"""training/common/tracking.py: per-step metrics reach the active run in batches, once per step
(also across a resume in the same run), and only from rank 0 inside a run."""

import mlflow
import pytest

from core import tracking as core_tracking
from training.common.tracking import StepLogger, log_loss_curve


@pytest.fixture()
def store(lakehouse):
    core_tracking.configure(str(lakehouse))
    core_tracking.experiment_for("unit")
    return mlflow.MlflowClient()


def _steps(client, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_step_metrics_are_sent_in_batches_once_per_step_across_a_resume(store, monkeypatch):
    batches = []
    send = mlflow.MlflowClient.log_batch
    monkeypatch.setattr(
        mlflow.MlflowClient,
        "log_batch",
        lambda self, run_id, metrics=(), **kw: (
            batches.append(len(metrics)) or send(self, run_id, metrics, **kw)
        ),
    )
    with mlflow.start_run() as run:
        steps = StepLogger(flush_steps=3, flush_seconds=3600)
        for step in (1, 2):
            steps.log(step, {"train_loss": 1.0 / step, "lr": 0.1, "tokens_per_s": float("nan")})
        assert _steps(store, run.info.run_id, "train_loss") == []  # buffered
        steps.log(3, {"train_loss": 1 / 3, "lr": 0.1, "tokens_per_s": 10.0})
        assert batches == [7]  # 3 steps x 2, + the one finite throughput, in one call
        steps.log(4, {"train_loss": 0.25, "lr": 0.1, "tokens_per_s": 10.0})
        steps.flush()  # killed after logging step 4; the checkpoint it resumes from is step 2
        again = StepLogger(start_step=2, flush_steps=3, flush_seconds=3600)
        for step in (3, 4, 5, 6):
            again.log(step, {"train_loss": 1.0 / step, "lr": 0.05, "tokens_per_s": 20.0})
        again.flush()
        log_loss_curve([1.0 / s for s in range(1, 7)])  # holds every step: adds the PNG only
    run_id = run.info.run_id
    assert _steps(store, run_id, "train_loss") == _steps(store, run_id, "lr") == [1, 2, 3, 4, 5, 6]
    assert _steps(store, run_id, "tokens_per_s") == [3, 4, 5, 6]
    assert [m.value for m in sorted(store.get_metric_history(run_id, "lr"), key=lambda m: m.step)] == [
        0.1, 0.1, 0.1, 0.1, 0.05, 0.05
    ]  # fmt: skip
    assert "train_loss.png" in {a.path for a in store.list_artifacts(run_id)}


def test_a_new_run_of_a_resumed_training_gets_the_earlier_loss_from_the_curve(store):
    with mlflow.start_run() as run:
        steps = StepLogger(start_step=2)
        for step in (3, 4):
            steps.log(step, {"train_loss": 0.5, "lr": 0.1})
        steps.flush()
        log_loss_curve([2.0, 1.0, 0.5, 0.5])
    history = sorted(store.get_metric_history(run.info.run_id, "train_loss"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == [(1, 2.0), (2, 1.0), (3, 0.5), (4, 0.5)]
    assert _steps(store, run.info.run_id, "lr") == [3, 4]


def test_nothing_is_logged_outside_a_run_or_off_rank_0(store, monkeypatch):
    outside = StepLogger()
    outside.log(1, {"train_loss": 1.0})
    outside.flush()
    assert not outside.enabled
    with mlflow.start_run() as run:
        switched_off = StepLogger(flush_steps=1, enabled=False)  # benchmarks time the loop
        switched_off.log(1, {"train_loss": 1.0})
    assert not switched_off.enabled and store.get_run(run.info.run_id).data.metrics == {}
    monkeypatch.setenv("RANK", "1")
    with mlflow.start_run() as run:
        other_rank = StepLogger(flush_steps=1)
        other_rank.log(1, {"train_loss": 1.0})
        log_loss_curve([1.0])
    assert not other_rank.enabled
    assert store.get_run(run.info.run_id).data.metrics == {}
