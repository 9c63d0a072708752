"""MLflow runs that end honestly: a stage run carries its host and pid; SIGTERM / SIGINT end it
(and its nested runs) KILLED, an exception FAILED, each with `larr.end_reason`; a run left RUNNING
by a process that died (SIGKILL, out of memory) is marked FAILED by the next start of the same job
on that host (core/tracking.py `stage_run` uses these)."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

HOST_TAG, PID_TAG, COMMAND_TAG = "larr.host", "larr.pid", "larr.command"
END_REASON_TAG = "larr.end_reason"  # why a run ended KILLED or FAILED
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
_REASON_CHARS = 1000
_MANY = 1000  # runs of one search (the RUNNING runs of one job, the nested runs of one run)


class StageKilled(SystemExit):
    """SIGTERM / SIGINT during a stage run: the run ends KILLED and the process exits 128 + signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum
        self.reason = signal.Signals(signum).name
        self.at_ms = int(time.time() * 1000)


def _on_signal(signum: int, _frame: Any) -> None:
    raise StageKilled(signum)


@contextmanager
def signals_end_the_run() -> Iterator[None]:
    """SIGTERM and SIGINT raise StageKilled while the block runs (main thread only; a signal the
    process ignores stays ignored); the previous handlers come back after."""
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            handler = signal.getsignal(signum)
            if handler is signal.SIG_IGN or handler is None:  # ignored, or set outside Python
                continue
            previous[signum] = signal.signal(signum, _on_signal)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def one_line(err: BaseException) -> str:
    text = str(err).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def _quoted(value: str) -> str | None:
    """A value for an MLflow filter string, or None when it holds a quote."""
    return None if "'" in value else f"'{value}'"


def _terminate(client: Any, run_id: str, status: str, reason: str | None) -> None:
    if reason:
        client.set_tag(run_id, END_REASON_TAG, reason[:_REASON_CHARS])
    client.set_terminated(run_id, status)


def _process_gone(pid: int, started_ms: int) -> bool:
    """True when process `pid` of this host is not the one that started a run at `started_ms`:
    no such process, or (with psutil) one started later under a reused pid."""
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    except OSError:
        return False
    try:
        import psutil
    except ImportError:
        return False
    try:
        return psutil.Process(pid).create_time() * 1000 > started_ms + 2000
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def end_dead_runs(experiment_id: str, run_name: str | None) -> list[str]:
    """Runs of job `run_name` left RUNNING on this host by a process that is gone (SIGKILL, out of
    memory, a lost node) end FAILED with the reason, and so do their nested runs still RUNNING.
    Returns the ids of the job's runs ended; runs of other hosts are left alone."""
    host = socket.gethostname()
    name, where = _quoted(run_name or ""), _quoted(host)
    if not run_name or name is None or where is None:
        return []
    import mlflow

    client = mlflow.MlflowClient()
    running = client.search_runs(
        [experiment_id],
        filter_string=f"attributes.status = 'RUNNING' and tags.`{RUN_NAME_TAG}` = {name} "
        f"and tags.`{HOST_TAG}` = {where}",
        max_results=_MANY,
    )
    ended = []
    for run in running:
        pid = run.data.tags.get(PID_TAG, "")
        if not pid.isdigit() or not _process_gone(int(pid), run.info.start_time or 0):
            continue
        reason = (
            f"process {pid} on {host} died without ending the run "
            f"(found by the next start of `larr {run_name}`)"
        )
        for child in client.search_runs(
            [experiment_id],
            filter_string=f"attributes.status = 'RUNNING' and tags.`{PARENT_TAG}` = '{run.info.run_id}'",
            max_results=_MANY,
        ):
            _terminate(client, child.info.run_id, "FAILED", reason)
        _terminate(client, run.info.run_id, "FAILED", reason)
        print(f"MLflow run {run.info.run_id} ended FAILED: {reason}", file=sys.stderr)
        ended.append(run.info.run_id)
    return ended


def end_stage_run(run: Any, status: str, reason: str | None, killed_at_ms: int | None = None) -> None:
    """End the stage run with `status` and `reason`, and its nested runs: those this process left
    open, those still RUNNING (a worker that died), and on a kill those the kill ended FAILED."""
    import mlflow

    client = mlflow.MlflowClient()
    run_id = run.info.run_id
    while (active := mlflow.active_run()) is not None and active.info.run_id != run_id:
        if reason:
            client.set_tag(active.info.run_id, END_REASON_TAG, reason[:_REASON_CHARS])
        mlflow.end_run(status)
    killed = status == "KILLED"
    for child in client.search_runs(
        [run.info.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{run_id}' and attributes.status != 'FINISHED'",
        max_results=_MANY,
    ):
        info = child.info
        if info.status == "RUNNING":
            _terminate(
                client,
                info.run_id,
                status if killed else "FAILED",
                reason
                if killed
                else f"still RUNNING when its parent run {run_id} ended {status}"
                + (f" ({reason})" if reason else ""),
            )
        elif (
            killed_at_ms is not None
            and info.status == "FAILED"
            and (info.end_time or 0) >= killed_at_ms
            and END_REASON_TAG not in child.data.tags
        ):
            _terminate(client, info.run_id, status, reason)
    if reason:
        client.set_tag(run_id, END_REASON_TAG, reason[:_REASON_CHARS])
    if (active := mlflow.active_run()) is not None and active.info.run_id == run_id:
        mlflow.end_run(status)
    else:  # ended elsewhere already: the status still tells how it ended
        client.set_terminated(run_id, status)
