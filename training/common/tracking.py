"""What trainers log to MLflow besides the config (which the CLI logs): the loss curve as
per-step metrics and as a PNG. Rank 0 only, and only inside an active run (a trainer called
outside `larr`, e.g. from a test, logs nothing instead of opening a stray run)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from core.tracking import is_primary_process


def active() -> bool:
    if not is_primary_process():
        return False
    import mlflow

    return mlflow.active_run() is not None


def log_loss_curve(losses: list[float], key: str = "train_loss") -> None:
    """`key` at every optimizer step (1-based) and `<key>.png`, a plot of the curve."""
    if not active() or not losses:
        return
    import time

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(key, float(v), now, i + 1) for i, v in enumerate(losses)]
    client, run_id = mlflow.MlflowClient(), mlflow.active_run().info.run_id
    for start in range(0, len(metrics), 1000):  # MLflow caps a batch at 1000 metrics
        client.log_batch(run_id, metrics=metrics[start : start + 1000])
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
