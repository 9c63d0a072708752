"""What trainers log to MLflow besides the config (which the CLI logs): per-step training metrics
while the loop runs (`StepLogger`: train_loss, lr, throughput), the loss curve as a PNG at the end,
and the trainers' final figures. Rank 0 only, and only inside an active run (a trainer called
outside `larr`, e.g. from a test, logs nothing instead of opening a stray run)."""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

from core.tracking import is_primary_process

# what `StepLogger` logs at every optimizer step; a trainer's final figures leave these names alone
STEP_METRICS = ("train_loss", "lr", "tokens_per_s", "samples_per_s")
BATCH_LIMIT = 1000  # MLflow caps a log_batch at 1000 metrics


def active() -> bool:
    if not is_primary_process():
        return False
    import mlflow

    return mlflow.active_run() is not None


def _log_points(client, run_id: str, metrics: list) -> None:
    for start in range(0, len(metrics), BATCH_LIMIT):
        client.log_batch(run_id, metrics=metrics[start : start + BATCH_LIMIT])


class StepLogger:
    """Metrics of every optimizer step to the active run while training runs, so MLflow's charts
    draw the curves live and compare runs. Outside an active run, on a rank other than 0, or with
    `enabled=False`, every call does nothing.

        steps = StepLogger(start_step=step)  # the step the loop starts after (a resume's)
        steps.log(step, {"train_loss": 2.31, "lr": 2e-4, "tokens_per_s": 5120.0})
        steps.flush()  # before a checkpoint and at the end

    Points are buffered and sent with one `log_batch` every `flush_steps` steps or `flush_seconds`
    seconds, so a remote tracking server is not called per step. A loop resumed at step k logs
    k + 1 on (a new run of a resumed training holds no lr / throughput before k; `log_loss_curve`
    fills in its earlier train_loss); steps the run already holds, logged by a process killed after
    its last checkpoint and resumed in the same run, are not sent twice. Non-finite values are left
    out (a first step timed at 0 s)."""

    def __init__(
        self, start_step: int = 0, flush_steps: int = 10, flush_seconds: float = 5.0, enabled: bool = True
    ) -> None:
        self.enabled = enabled and active()
        self.flush_steps, self.flush_seconds = flush_steps, flush_seconds
        self._buffer: list = []
        self._pending = 0  # steps in the buffer
        self._flushed_at = time.monotonic()
        self._held: dict[str, set[int]] = {}
        if not self.enabled:
            return
        import mlflow

        self._client = mlflow.MlflowClient()
        self._run_id = mlflow.active_run().info.run_id
        if start_step > 0:  # only a resumed loop can meet steps the run already holds
            self._held = {
                key: {m.step for m in self._client.get_metric_history(self._run_id, key)}
                for key in STEP_METRICS
            }

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for key, value in values.items():
            if math.isfinite(value) and step not in self._held.get(key, ()):
                self._buffer.append(Metric(key, float(value), now, step))
        self._pending += 1
        if self._pending >= self.flush_steps or time.monotonic() - self._flushed_at >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        if self.enabled and self._buffer:
            _log_points(self._client, self._run_id, self._buffer)
        self._buffer, self._pending, self._flushed_at = [], 0, time.monotonic()


def log_loss_curve(losses: list[float], key: str = "train_loss") -> None:
    """`<key>.png`, a plot of the whole curve, and `key` at the optimizer steps (1-based) the run
    does not hold yet: `StepLogger` logged the steps trained in this run, so this adds only those
    before a resume (from the checkpoint's curve) when the resumed training is a new run."""
    if not active() or not losses:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    from mlflow.entities import Metric

    client, run_id = mlflow.MlflowClient(), mlflow.active_run().info.run_id
    held = {m.step for m in client.get_metric_history(run_id, key)}
    now = int(time.time() * 1000)
    _log_points(
        client, run_id, [Metric(key, float(v), now, i + 1) for i, v in enumerate(losses) if i + 1 not in held]
    )
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(losses) + 1), losses)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{key}.png"
        fig.savefig(path, dpi=100)
        mlflow.log_artifact(str(path))
    plt.close(fig)


def log_metrics(metrics: dict[str, float]) -> None:
    if active():
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
