"""The notebooks' first cell and section guards: the lakehouse from any working folder, one line
saying what to run, nothing created and no Spark started by a check; MLflow runs and histories."""

import mlflow
import pytest

from core import tracking
from core.notebook import DEMO_HINT, Stage, metric_histories, open_lakehouse
from tests.conftest import REPO_ROOT

WORLD = Stage("the synthetic world", "larr generate", tables=["raw.impressions"])
CLEAN = Stage("the ETL", "larr etl clean", tables=["clean.rejects", "clean.impressions"])
CTR = Stage("stage 3", "larr train ctr --model larr", experiment="ctr", runs_filter="tags.`larr.seed` != ''")
SWEEPS = Stage("the sweeps", "larr sweep", experiment="ctr", runs_filter="tags.`larr.sweep` != ''")


def test_a_missing_lakehouse_is_one_line_and_every_section_skips(lakehouse):
    lines = []
    lh = open_lakehouse(WORLD, CTR, lakehouse=str(lakehouse), log=lines.append)
    assert lines == [f"no lakehouse at {lakehouse} yet: {DEMO_HINT}"]
    assert DEMO_HINT == "run `make demo` (about 15 minutes) or set LARR_LAKEHOUSE"
    lines.clear()
    assert not lh.ready(WORLD, log=lines.append) and not lh.ready(CTR, log=lines.append)
    assert lines == [f"skipped: no lakehouse at {lakehouse} yet (see the first cell)"] * 2
    lakehouse.mkdir()  # an empty folder is no lakehouse either
    assert not open_lakehouse(lakehouse=str(lakehouse), log=lines.append).found
    assert list(lakehouse.iterdir()) == [] and lh.store() is None and lh._spark is None


def test_the_lakehouse_is_the_environments_else_the_checkouts_whatever_the_folder(
    lakehouse, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # Jupyter starts kernels in the notebook's folder
    lines = []
    assert open_lakehouse(log=lines.append).root == str(REPO_ROOT / "lakehouse")
    monkeypatch.setenv("LARR_LAKEHOUSE", str(lakehouse))
    lh = open_lakehouse(log=lines.append)
    assert lh.root == str(lakehouse) and lh.source == "$LARR_LAKEHOUSE"


def test_missing_tables_name_the_command_and_present_ones_pass(spark, catalog, lakehouse):
    catalog.write(spark.range(3).withColumnRenamed("id", "event_id"), "raw.impressions")
    catalog.write(spark.range(1), "clean.impressions")
    lines = []
    lh = open_lakehouse(WORLD, CLEAN, lakehouse=str(lakehouse), log=lines.append)
    assert lines == [
        f"lakehouse {lakehouse} (given); MLflow store not written yet",
        "the ETL has not run yet (clean.rejects missing): run `larr etl clean`",
    ]
    lines.clear()
    assert lh.ready(WORLD, log=lines.append) and lines == []
    assert not lh.ready(WORLD, CLEAN, log=lines.append) and len(lines) == 1
    assert lh._spark is None  # a local lakehouse is checked on the file system
    assert lh.read("raw.impressions").count() == 3  # reading starts the (small) session
    assert not (lakehouse / "mlflow.db").exists()


def test_stages_of_runs_read_the_store_and_metric_histories_follow_the_steps(spark, catalog, lakehouse):
    catalog.write(spark.range(1), "raw.impressions")
    lines = []
    lh = open_lakehouse(CTR, lakehouse=str(lakehouse), log=lines.append)
    assert lines[-1] == "stage 3 has not run yet (larr-ctr runs missing): run `larr train ctr --model larr`"
    assert not (lakehouse / "mlflow.db").exists()  # a check never creates the store

    tracking.configure(str(lakehouse))
    client = mlflow.MlflowClient()
    experiment = tracking.experiment_for("ctr")
    seed = client.create_run(experiment, tags={"larr.seed": "1", "larr.sweep": ""}).info.run_id
    for step, value in ((2, 0.5), (1, 0.7), (3, 0.4)):
        client.log_metric(seed, "train_loss", value, step=step)
    client.set_terminated(seed, "FINISHED")
    failed = client.create_run(experiment, tags={"larr.seed": "2", "larr.sweep": "temperature"}).info.run_id
    client.set_terminated(failed, "FAILED")  # a failed sweep run does not count
    parent = client.create_run(experiment).info.run_id  # no seed tag
    client.set_terminated(parent, "FINISHED")

    lines.clear()
    lh = open_lakehouse(CTR, SWEEPS, lakehouse=str(lakehouse), log=lines.append)
    assert lines == [
        f"lakehouse {lakehouse} (given); MLflow store sqlite:///{lakehouse}/mlflow.db",
        "the sweeps has not run yet (larr-ctr runs missing): run `larr sweep`",
    ]
    assert lh.runs(CTR)["run_id"].tolist() == [seed]
    curves = metric_histories([seed, parent])
    assert curves.to_dict("list") == {"run_id": [seed] * 3, "step": [1, 2, 3], "value": [0.7, 0.5, 0.4]}


def test_a_stage_needs_tables_or_an_experiment():
    with pytest.raises(ValueError, match="needs tables or an experiment"):
        Stage("nothing", "larr generate")
    assert Stage("x", "y", tables=["a.b"]).tables == ("a.b",)
