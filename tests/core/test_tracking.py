import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pytest

from core import run_endings, tracking, tracking_store

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Section:
    rate: float = 0.1
    sizes: list[int] = field(default_factory=lambda: [1, 2])


@dataclass(frozen=True)
class Cfg:
    section: Section = field(default_factory=Section)
    name: str = "x"


def test_default_store_lives_in_the_lakehouse(lakehouse):
    assert tracking.tracking_uri(str(lakehouse)) == f"sqlite:///{lakehouse}/mlflow.db"


def test_env_overrides_the_store(lakehouse, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/elsewhere.db")
    assert tracking.tracking_uri(str(lakehouse)) == "sqlite:////tmp/elsewhere.db"


def test_unreachable_store_is_one_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{blocker}/sub/mlflow.db")
    with pytest.raises(
        tracking.TrackingError, match=f"MLflow tracking URI sqlite:///{blocker}/sub/mlflow.db"
    ):
        tracking.configure(str(tmp_path))


def test_stage_run_logs_the_flat_config_to_the_stage_experiment(lakehouse):
    with tracking.stage_run("unit", str(lakehouse), Cfg()) as run:
        run_id = run.info.run_id
    logged = mlflow.get_run(run_id)
    assert logged.data.params == {"section.rate": "0.1", "section.sizes": "[1, 2]", "name": "x"}
    assert mlflow.get_experiment(logged.info.experiment_id).name == "larr-unit"
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(run_id)]
    assert artifacts == ["config.json"]


def test_only_rank_zero_logs(lakehouse, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    with tracking.stage_run("unit", str(lakehouse), Cfg()) as run:
        assert run is None


def test_artifacts_live_beside_a_sqlite_store(lakehouse, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with tracking.stage_run("unit", str(lakehouse), Cfg()) as run:
        artifact_uri = run.info.artifact_uri
    assert artifact_uri.startswith((lakehouse / "mlartifacts").as_uri())
    assert not (tmp_path / "mlruns").exists()
    assert tracking.artifact_root("http://tracking:5000") is None


def test_experiments_and_runs_carry_descriptions_and_take_a_prefix(lakehouse, monkeypatch):
    """MLflow's UI shows `mlflow.note.content` as the description; Databricks needs path names."""
    with tracking.stage_run("ctr", str(lakehouse), Cfg(), description="`larr train ctr`: models") as run:
        run_id = run.info.run_id
    logged = mlflow.get_run(run_id)
    assert logged.data.tags[tracking.NOTE_TAG] == "`larr train ctr`: models"
    experiment = mlflow.get_experiment(logged.info.experiment_id)
    assert experiment.name == "larr-ctr"
    assert experiment.tags[tracking.NOTE_TAG] == tracking.STAGE_DESCRIPTIONS["ctr"]
    monkeypatch.setenv(tracking.PREFIX_VARIABLE, "/Users/someone/larr")
    assert tracking.experiment_name("ctr") == "/Users/someone/larr-ctr"
    client = mlflow.MlflowClient()
    client.delete_experiment_tag(experiment.experiment_id, tracking.NOTE_TAG)  # made before notes
    monkeypatch.delenv(tracking.PREFIX_VARIABLE)
    tracking.experiment_for("ctr")
    assert client.get_experiment(experiment.experiment_id).tags[tracking.NOTE_TAG].startswith("Stage 3")


# -- the store is checked quickly and before anything is created ---------------------------------
def test_an_unreachable_server_fails_within_seconds_creating_nothing(lakehouse, monkeypatch):
    """MLflow's own retries took 4 min 12 s here; the check waits $LARR_TRACKING_TIMEOUT_S."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    started = time.monotonic()
    with pytest.raises(tracking.TrackingError) as caught:
        tracking.configure(str(lakehouse))
    assert time.monotonic() - started < 15
    assert str(caught.value) == (
        "MLFLOW_TRACKING_URI http://127.0.0.1:9 is unreachable within 5 s: Connection refused; "
        "start the server or unset MLFLOW_TRACKING_URI"
    )
    assert not lakehouse.exists()
    monkeypatch.setenv(tracking_store.TIMEOUT_VARIABLE, "1.5")
    with pytest.raises(tracking.TrackingError, match=r"unreachable within 1\.5 s: Connection refused"):
        tracking_store.check_store(str(lakehouse))
    monkeypatch.setenv(tracking_store.TIMEOUT_VARIABLE, "soon")
    with pytest.raises(tracking.TrackingError, match="LARR_TRACKING_TIMEOUT_S must be a positive number"):
        tracking_store.check_store(str(lakehouse))


@pytest.fixture()
def failing_server():
    """An HTTP server that answers 503 to everything (MLflow retries a 503 for minutes)."""

    class Unavailable(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(503)
            self.end_headers()

        do_POST = do_GET  # noqa: N815

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_server_that_answers_but_fails_is_not_retried_for_minutes(lakehouse, monkeypatch, failing_server):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", failing_server)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    started = time.monotonic()
    with pytest.raises(
        tracking.TrackingError, match=f"MLflow tracking URI {failing_server} is unreachable: "
    ):
        tracking.configure(str(lakehouse))
    assert time.monotonic() - started < 15
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # only the check ran without retries
    assert not lakehouse.exists()
    # the CLI's first check (before the lakehouse gets a folder) already refuses it
    with pytest.raises(
        tracking.TrackingError, match=f"MLflow tracking URI {failing_server} is unreachable: "
    ):
        tracking_store.check_store(str(lakehouse))


@pytest.mark.parametrize("uri", ["not a uri at all", "localhost:5000", "http://", "databricks://", "mlruns"])
def test_a_malformed_uri_is_one_line_listing_the_accepted_forms(lakehouse, monkeypatch, uri):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(tracking.TrackingError) as caught:
        tracking.configure(str(lakehouse))
    message = str(caught.value)
    assert message.startswith(
        f"MLFLOW_TRACKING_URI={uri!r} is not a tracking URI MLflow accepts: use http(s)://"
    )
    assert "\n" not in message and "sqlite:///<path>" in message and "databricks://<profile>" in message
    assert not lakehouse.exists()


@pytest.mark.parametrize(
    "uri",
    [
        "databricks",
        "databricks://work",
        "https://mlflow.example.com/prefix",
        "sqlite:////tmp/a b/mlflow.db",
        "postgresql+psycopg2://me@db/mlflow",
        "file:///tmp/mlruns",
        "/tmp/mlruns",
        "./mlruns",
    ],
)
def test_the_accepted_forms_pass(uri):
    tracking_store.check_uri_form(uri)


# -- runs end honestly ---------------------------------------------------------------------------
CHILD = """
import sys, time
import mlflow
from core import tracking

with tracking.stage_run("unit", sys.argv[1], {"a": 1}, run_name="unit job") as run:
    worker = mlflow.MlflowClient().create_run(  # a seed run of a worker process, still RUNNING
        run.info.experiment_id, tags={"mlflow.parentRunId": run.info.run_id}
    )
    with mlflow.start_run(run_name="seed0", nested=True) as seed:
        print(run.info.run_id, seed.info.run_id, worker.info.run_id, flush=True)
        time.sleep(120)
"""


def start_job(lakehouse) -> tuple[subprocess.Popen, list[str]]:
    """A process inside `stage_run` of job `unit job` with two nested runs, waiting to be killed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(lakehouse)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    assert line, proc.communicate(timeout=60)[1]
    return proc, line.split()


def status_and_reason(run_id: str) -> tuple[str, str | None]:
    run = mlflow.get_run(run_id)
    return run.info.status, run.data.tags.get(run_endings.END_REASON_TAG)


def test_sigterm_ends_the_run_and_its_nested_runs_killed(lakehouse):
    proc, run_ids = start_job(lakehouse)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    tracking.configure(str(lakehouse))
    assert [status_and_reason(r) for r in run_ids] == [("KILLED", "SIGTERM")] * 3
    parent = mlflow.get_run(run_ids[0]).data.tags
    assert parent[run_endings.HOST_TAG] == socket.gethostname() and parent[run_endings.PID_TAG] == str(
        proc.pid
    )
    assert f"unit job: SIGTERM: MLflow run {run_ids[0]} ends KILLED" in err


def test_a_run_left_running_by_a_killed_process_ends_failed_at_the_next_start(lakehouse):
    proc, run_ids = start_job(lakehouse)
    proc.kill()  # SIGKILL: nothing of the process runs any more
    proc.communicate(timeout=60)
    tracking.configure(str(lakehouse))
    assert [status_and_reason(r)[0] for r in run_ids] == ["RUNNING"] * 3
    client = mlflow.MlflowClient()
    experiment_id = mlflow.get_run(run_ids[0]).info.experiment_id
    others = [  # another host's run and another job's run, both of that dead pid: left alone
        client.create_run(
            experiment_id,
            run_name=name,
            tags={run_endings.HOST_TAG: host, run_endings.PID_TAG: str(proc.pid)},
        ).info.run_id
        for name, host in (("unit job", "elsewhere"), ("other job", socket.gethostname()))
    ]
    with tracking.stage_run("unit", str(lakehouse), Cfg(), run_name="unit job") as run:
        assert run.info.run_id not in run_ids
    reason = (
        f"process {proc.pid} on {socket.gethostname()} died without ending the run "
        "(found by the next start of `larr unit job`)"
    )
    assert [status_and_reason(r) for r in run_ids] == [("FAILED", reason)] * 3
    assert [status_and_reason(r) for r in others] == [("RUNNING", None)] * 2
    assert status_and_reason(run.info.run_id) == ("FINISHED", None)


def test_an_exception_ends_the_run_failed_with_the_error_and_restores_the_handlers(lakehouse):
    before = signal.getsignal(signal.SIGTERM)
    with (
        pytest.raises(ValueError),
        tracking.stage_run("unit", str(lakehouse), Cfg(), run_name="unit job") as run,
    ):
        assert signal.getsignal(signal.SIGTERM) is run_endings._on_signal
        mlflow.start_run(run_name="seed0", nested=True)  # left open
        raise ValueError("boom\nsecond line")
    assert signal.getsignal(signal.SIGTERM) is before
    assert status_and_reason(run.info.run_id) == ("FAILED", "ValueError: boom")
    assert mlflow.active_run() is None
    (seed,) = mlflow.search_runs(
        [run.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'",
        output_format="list",
    )
    assert (seed.info.status, seed.data.tags[run_endings.END_REASON_TAG]) == ("FAILED", "ValueError: boom")
    assert mlflow.get_run(run.info.run_id).data.tags[run_endings.COMMAND_TAG] == "unit job"
