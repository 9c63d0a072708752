"""The `larr` entry point: a JSON summary line, a run record, clear one-line errors, spark-submit."""

import json

import mlflow
import pytest

from core.catalog import TableCatalog
from jobs.cli import main

SMALL_WORLD = [
    "--set", "world.users=60", "--set", "world.pois=120", "--set", "world.days=2",
    "--set", "world.impressions_per_day=300", "--set", "test_day=2",
]  # fmt: skip


def last_json_line(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_generate_prints_one_json_line_and_records_the_run(spark, lakehouse, capsys):
    assert main(["generate", "--lakehouse", str(lakehouse), *SMALL_WORLD]) == 0
    summary = last_json_line(capsys.readouterr().out)
    assert summary["job"] == "generate"
    assert summary["impressions"] == 600
    expected = {"users", "pois", "ctr", "cvr", "bayes_auc_ctr_test", "seconds", "mlflow_run_id"}
    assert expected <= set(summary)
    records = list((lakehouse / "_runs").glob("generate-*.json"))
    assert len(records) == 1 and json.loads(records[0].read_text()) == summary
    run = mlflow.get_run(summary["mlflow_run_id"])
    assert run.data.params["world.users"] == "60"
    assert run.data.metrics["impressions"] == 600.0
    assert TableCatalog.resolve(str(lakehouse)).exists(spark, "raw.impressions")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "world.userz=3"], "unknown config key world.userz"),
        (["--set", "world.users=many"], "config key world.users: expected int, got str 'many'"),
        (["--config", "/nonexistent/generate.yaml"], "config file /nonexistent/generate.yaml does not exist"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(lakehouse, capsys, args, message):
    assert main(["generate", "--lakehouse", str(lakehouse), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err and err.startswith("larr generate: error:")
    assert not (lakehouse / "raw").exists()


def test_unwritable_lakehouse_and_unreachable_tracking(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["generate", "--lakehouse", str(blocker / "lh")]) == 2
    assert f"lakehouse {blocker}/lh cannot be a folder: {blocker} is a file\n" in capsys.readouterr().err
    assert main(["generate", "--lakehouse", str(blocker)]) == 2  # the lakehouse path itself is a file
    assert capsys.readouterr().err.endswith(f"lakehouse {blocker} cannot be a folder: {blocker} is a file\n")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{blocker}/mlflow.db")
    assert main(["generate", "--lakehouse", str(tmp_path / "lh")]) == 2
    assert f"MLflow tracking URI sqlite:///{blocker}/mlflow.db is unreachable" in capsys.readouterr().err
    assert not (tmp_path / "lh" / "raw").exists()


@pytest.mark.slow  # spark-submit starts its own JVM
def test_every_user_error_class_exists_and_a_bug_is_not_one():
    import importlib

    from jobs.cli import USER_ERRORS, is_user_error

    for target in USER_ERRORS:
        module, name = target.split(":")
        assert issubclass(getattr(importlib.import_module(module), name), Exception), target
    from training.lm.cpt import CptError

    assert is_user_error(CptError("bad"))
    assert not is_user_error(KeyError("a bug"))


def test_figures_leave_the_per_step_curves_a_job_logged_alone(lakehouse):
    from core import tracking
    from jobs.cli import log_figures
    from training.common.tracking import StepLogger

    with tracking.stage_run("unit", str(lakehouse), {"x": 1}) as run:
        steps = StepLogger()
        for step in (1, 2, 3):
            steps.log(step, {"tokens_per_s": 100.0 * step})
        steps.flush()
        log_figures({"tokens_per_s": 150.0, "steps": 3, "model": "ple"})
    client = mlflow.MlflowClient()
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "tokens_per_s")) == [1, 2, 3]
    assert client.get_run(run.info.run_id).data.metrics == {"tokens_per_s": 300.0, "steps": 3.0}


def test_common_options_work_before_and_after_the_command():
    from jobs.cli import parse_args

    args = parse_args(["--lakehouse", "mine", "--set", "world.users=5", "generate", "--set", "world.pois=7"])
    assert args.lakehouse == "mine" and args.config is None
    assert args.overrides == ["world.users=5", "world.pois=7"]  # before the command first
    args = parse_args(["--lakehouse", "before", "etl", "clean", "--lakehouse", "after"])
    assert args.lakehouse == "after"
    assert parse_args(["etl", "clean"]).lakehouse is None
