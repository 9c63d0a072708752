from dataclasses import dataclass, field

import mlflow
import pytest

from core import tracking


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
