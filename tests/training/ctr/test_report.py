"""`larr report` against a real sqlite MLflow store in a temp lakehouse, runs made as the CTR
trainer makes them: nested seed runs (tag mlflow.parentRunId) of experiment larr-ctr."""

import json
import math
import shutil
from pathlib import Path

import mlflow
import pytest

from core import tracking
from training.ctr.report import ReportConfig, ReportError, fmt, run

T0 = 1_700_000_000_000  # ms


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory):
    """An empty sqlite store made once: creating MLflow's tables takes seconds, copying them does not."""
    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture()
def catalog(catalog, lakehouse, empty_store):
    lakehouse.mkdir(parents=True, exist_ok=True)
    shutil.copy(empty_store, lakehouse / "mlflow.db")
    return catalog


class Store:
    def __init__(self, lakehouse):
        tracking.configure(str(lakehouse))  # the tracking URI is global: point it at this lakehouse
        self.client = mlflow.MlflowClient()
        self.experiment = tracking.experiment_for("ctr")
        self.clock = T0
        parent = self.client.create_run(self.experiment, start_time=T0, tags={"larr.ctr_model": "larr"})
        self.client.log_metric(parent.info.run_id, "ctr_auc", 0.1)  # a parent: no seed, not a seed run
        self.client.set_terminated(parent.info.run_id, "FINISHED")
        self.parent = parent.info.run_id

    def seed_run(
        self, model, seed, status="FINISHED", ablation="none", sweep="", params=None, tuned="", **metrics
    ):
        self.clock += 1000
        tags = {
            "mlflow.parentRunId": self.parent,
            "larr.ctr_model": model,
            "larr.ablation": ablation,
            "larr.seed": str(seed),
            "larr.sweep": sweep,
            "larr.samples_version": "4",
            "larr.tuned": tuned,
        }
        created = self.client.create_run(self.experiment, start_time=self.clock, tags=tags)
        run_id = created.info.run_id
        for key, value in metrics.items():
            self.client.log_metric(run_id, key, value)
        for key, value in (params or {}).items():
            self.client.log_param(run_id, key, value)
        self.client.set_terminated(run_id, status)


@pytest.fixture()
def store(catalog, lakehouse):
    s = Store(lakehouse)
    # LARR: seed 1 first ran with 0.50 and was re-run (the newest run wins); seed 0 has a newer
    # failed run and a newer sweep run, both left out
    s.seed_run("larr", 1, ctr_auc=0.50, ctcvr_auc=0.50, bayes_auc_ctr=0.85, bayes_auc_ctcvr=0.95)
    s.seed_run(
        "larr",
        0,
        val_ctr_auc=0.78,
        ctr_auc=0.80,
        ctcvr_auc=0.90,
        ctr_gauc=0.70,
        bayes_auc_ctr=0.85,
        bayes_auc_ctcvr=0.95,
    )
    s.seed_run(
        "larr",
        1,
        val_ctr_auc=0.79,
        ctr_auc=0.81,
        ctcvr_auc=0.90,
        ctr_gauc=0.71,
        bayes_auc_ctr=0.85,
        bayes_auc_ctcvr=0.95,
    )
    s.seed_run(
        "larr",
        2,
        val_ctr_auc=0.80,
        ctr_auc=0.83,
        ctcvr_auc=0.93,
        ctr_gauc=0.72,
        bayes_auc_ctr=0.85,
        bayes_auc_ctcvr=0.95,
    )
    s.seed_run("larr", 0, status="FAILED", ctr_auc=0.10, ctcvr_auc=0.10)
    s.seed_run(
        "larr", 0, sweep="temperature", params={"align_temperature": "0.05"}, ctr_auc=0.99, ctcvr_auc=0.99
    )
    # PLE: two seeds only; LARR without CPT: one seed
    s.seed_run("ple", 0, ctr_auc=0.79, ctcvr_auc=0.89, bayes_auc_ctr=0.85, bayes_auc_ctcvr=0.95)
    s.seed_run("ple", 1, ctr_auc=0.80, ctcvr_auc=0.89, bayes_auc_ctr=0.85, bayes_auc_ctcvr=0.95)
    s.seed_run("larr", 0, ablation="no_cpt", ctr_auc=0.805, ctcvr_auc=0.905)
    # temperature sweep: 0.05 twice (seeds 0 above and 1), 0.1 once
    s.seed_run(
        "larr", 1, sweep="temperature", params={"align_temperature": "0.05"}, ctr_auc=0.97, ctcvr_auc=0.98
    )
    s.seed_run(
        "larr", 0, sweep="temperature", params={"align_temperature": "0.1"}, ctr_auc=0.96, ctcvr_auc=0.97
    )
    return s


def test_fmt():
    assert fmt(0.79833, 0.00121) == "0.7983 ± 0.0012"
    assert fmt(0.8, math.nan) == "0.8000 ± n/a"
    assert fmt(math.nan, math.nan) == "n/a"


def test_tables_by_hand(store, catalog):
    lines = []
    result = run(None, catalog, ReportConfig(), log=lines.append)
    text = Path(result["report"]).read_text()
    assert result["report"] == str(catalog.root + "/_reports/ctr_report.md")
    # LARR ctr_auc .80 .81 .83: mean .81333, deviations -.01333 -.00333 .01667, squares sum 4.6667e-4,
    #   / (3 - 1) = 2.3333e-4, std .015275; ctcvr .90 .90 .93: mean .91, squares 1e-4 1e-4 4e-4 -> std .017321
    # ctr_gauc .70 .71 .72: mean .71, std .01; logloss absent -> n/a
    # gap to Bayes (.85): -.05 -.04 -.02: mean -.036667, std .015275; CTCVR (.95): -.05 -.05 -.02: -.04, .017321
    assert (
        "| LARR | 0.7900 ± 0.0100 | 0.8133 ± 0.0153 | 0.9100 ± 0.0173 | 0.7100 ± 0.0100 | n/a | n/a "
        "| -0.0367 ± 0.0153 | -0.0400 ± 0.0173 | 3 |" in text
    )
    # PLE .79 .80: mean .795, std sqrt(2 * .005^2 / 1) = .007071; ctcvr .89 .89: std 0
    assert "| PLE (2 seeds) | n/a | 0.7950 ± 0.0071 | 0.8900 ± 0.0000 |" in text  # no validation split
    assert (
        "| Wide&Deep | not run | not run | not run | not run | not run | not run | not run | not run | 0 |"
        in text
    )
    # Bayes over the 5 table-2 runs (3 LARR + 2 PLE), all .85 / .95
    assert "| Bayes-optimal (true probabilities) | — | 0.8500 ± 0.0000 | 0.9500 ± 0.0000 | — |" in text
    # Table 3
    assert "| PLE only (2 seeds) | 0.7950 ± 0.0071 | 0.8900 ± 0.0000 | 2 |" in text
    assert "| no CPT (1 seed) | 0.8050 ± n/a | 0.9050 ± n/a | 1 |" in text
    assert "| no contrastive FT | not run | not run | 0 |" in text
    assert "| complete LARR | 0.8133 ± 0.0153 | 0.9100 ± 0.0173 | 3 |" in text
    assert result["short_of_seeds"] == ["larr/no_cpt", "ple/none"]
    assert (
        result["runs"] == 10
    )  # finished seed runs (superseded and sweep ones too): no parent, no failed one
    larr = result["table2"]["larr"]
    assert larr["seeds"] == 3
    assert larr["ctr_auc"] == pytest.approx(0.813333, abs=1e-6)
    assert larr["ctr_auc_std"] == pytest.approx(0.0152753, abs=1e-6)
    assert result["table2"]["deepfm"] is None
    assert result["table2"]["bayes"]["runs"] == 5
    assert result["table3"]["complete"] == {
        k: larr[k] for k in ("seeds", "ctr_auc", "ctr_auc_std", "ctcvr_auc", "ctcvr_auc_std")
    }
    assert any("| LARR |" in line for line in lines)  # the tables are printed


def test_a_model_whose_runs_larr_tune_chose_is_marked_tuned(store, catalog):
    for seed in (0, 1, 2):  # PLE re-run with the tuned settings: its newest runs carry the tag
        store.seed_run("ple", seed, tuned="tune-run-1", val_ctr_auc=0.81, ctr_auc=0.82, ctcvr_auc=0.9)
    result = run(None, catalog, ReportConfig(), log=lambda _: None)
    text = Path(result["report"]).read_text()
    assert "| PLE (tuned) | 0.8100 ± 0.0000 | 0.8200 ± 0.0000 |" in text
    assert "| LARR | 0.7900" in text  # LARR's runs were not tuned
    assert result["table2"]["ple"]["tuned"] is True and "tuned" not in result["table2"]["larr"]


def test_sweep_runs_make_the_sweep_section(store, catalog):
    result = run(None, catalog, ReportConfig(), log=lambda _: None)
    text = Path(result["report"]).read_text()
    # 0.05: seeds 0 (.99 / .99) and 1 (.97 / .98): mean .98 / .985, std .014142 / .007071
    assert "| 0.05 | 0.9800 ± 0.0141 | 0.9850 ± 0.0071 | 2 |" in text
    assert "| 0.1 | 0.9600 ± n/a | 0.9700 ± n/a | 1 |" in text
    assert [row["value"] for row in result["sweeps"]["temperature"]] == [0.05, 0.1]
    assert "neg_ratio" not in result["sweeps"]
    with open(result["temperature_plot"], "rb") as png:
        assert png.read(8) == b"\x89PNG\r\n\x1a\n"


def test_the_report_is_an_artifact_of_the_active_run(store, catalog, tmp_path):
    output = tmp_path / "out" / "report.md"
    tracking.experiment_for("report")
    with mlflow.start_run() as active:
        result = run(None, catalog, ReportConfig(min_seeds=2, output=str(output)), log=lambda _: None)
    assert result["report"] == str(output) and output.is_file()
    assert result["short_of_seeds"] == ["larr/no_cpt"]
    client = mlflow.MlflowClient()
    run_id = active.info.run_id
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"report.md", "ctr_auc_models.png", "ctr_sweep_temperature.png"} <= artifacts
    assert {a.path for a in client.list_artifacts(run_id, "tables")} == {
        "tables/table2.md", "tables/table3.md", "tables/sweep_temperature.md"
    }  # fmt: skip
    table2 = Path(client.download_artifacts(run_id, "tables/table2.md", str(tmp_path))).read_text()
    assert (
        "| LARR | 0.7900 ± 0.0100 | 0.8133 ± 0.0153 |" in table2 and "| LARR | 0.7900" in output.read_text()
    )
    with open(result["models_plot"], "rb") as png:
        assert png.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "![AUC per model](ctr_auc_models.png)" in output.read_text()
    # the cells as metrics: LARR over 3 seeds, the Bayes ceiling over the 5 table-2 runs, no CPT
    metrics = client.get_run(run_id).data.metrics
    assert metrics["table2/larr/ctr_auc"] == pytest.approx(0.813333, abs=1e-6)
    assert metrics["table2/larr/ctr_auc_std"] == pytest.approx(0.0152753, abs=1e-6)
    assert metrics["table2/larr/seeds"] == 3 and metrics["table2/bayes/bayes_auc_ctr"] == 0.85
    assert metrics["table3/no_cpt/ctr_auc"] == 0.805 and "table3/no_cpt/ctr_auc_std" not in metrics
    assert not any(key.startswith("table2/deepfm/") for key in metrics)  # not run
    assert client.get_run(run_id).data.params["samples_versions"] == "4"


def test_larr_report_logs_the_tables_plots_and_cells_to_its_run_once(store, catalog, lakehouse, capsys):
    from jobs.cli import main

    assert main(["report", "--lakehouse", str(lakehouse)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    client = mlflow.MlflowClient()
    run = client.get_run(summary["mlflow_run_id"])
    assert mlflow.get_experiment(run.info.experiment_id).name == "larr-report"
    root = [a.path for a in client.list_artifacts(run.info.run_id)]
    assert sorted(root) == [
        "config.json", "ctr_auc_models.png", "ctr_report.md", "ctr_sweep_temperature.png", "summary.json",
        "tables",
    ]  # fmt: skip
    assert run.data.metrics["table3/complete/ctr_auc"] == pytest.approx(0.813333, abs=1e-6)


def test_no_runs_yet(catalog):
    lines = []
    result = run(None, catalog, ReportConfig(), log=lines.append)
    assert result["runs"] == 0 and result["short_of_seeds"] == [] and result["sweeps"] == {}
    assert all(numbers is None for key, numbers in result["table2"].items() if key != "bayes")
    assert "no finished seed runs" in lines[0]
    assert "| LARR | not run |" in Path(result["report"]).read_text()


def test_bad_min_seeds():
    with pytest.raises(ReportError, match="min_seeds"):
        ReportConfig(min_seeds=0)


def test_plot_sweep_checks_lengths(tmp_path):
    from training.common.plots import plot_sweep

    with pytest.raises(ValueError, match="CTR AUC: 2 xs, 1 means"):
        plot_sweep("t", "x", [0.1, 0.2], {"CTR AUC": [0.8]}, {"CTR AUC": [0.01]}, tmp_path / "p.png")
    path = plot_sweep(
        "t", "temperature", [0.2, 0.05], [0.8, 0.81], [0.01, float("nan")], tmp_path / "p.png", True
    )
    assert path == str(tmp_path / "p.png") and (tmp_path / "p.png").stat().st_size > 0


def test_plot_auc_bars_checks_lengths(tmp_path):
    from training.common.plots import plot_auc_bars

    with pytest.raises(ValueError, match="CTR AUC: 2 labels, 1 means"):
        plot_auc_bars("t", ["PLE", "LARR"], {"CTR AUC": [0.8]}, {"CTR AUC": [0.01]}, {}, tmp_path / "b.png")
    path = plot_auc_bars(
        "t", ["PLE", "LARR"], {"CTR AUC": [0.8, 0.81]}, {"CTR AUC": [0.01, float("nan")]},
        {"CTR AUC": 0.85}, tmp_path / "b.png",
    )  # fmt: skip
    assert path == str(tmp_path / "b.png") and (tmp_path / "b.png").stat().st_size > 0


def _study_run(client, stage, start, files, tmp_path, status="FINISHED", tags=None):
    """A finished run of a study (`larr gap`, `larr casestudy`) with its logged files."""
    run_id = client.create_run(tracking.experiment_for(stage), start_time=start, tags=tags or {}).info.run_id
    for name, content in files.items():
        path = tmp_path / run_id / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, status)
    return run_id


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def test_the_report_shows_the_newest_gap_and_case_study_runs(store, catalog, lakehouse, tmp_path):
    client = mlflow.MlflowClient()
    gap = {"larr.gap_model": "ple"}
    _study_run(client, "ctr", T0 + 10, {"gap.md": "| old gap |\n"}, tmp_path, tags=gap)
    newest_gap = _study_run(
        client,
        "ctr",
        T0 + 20,
        {
            "gap.md": "| variant | test CTR AUC |\n| ple | 0.8267 |\n\nSemantic capture of larr: 0.421 ± 0.187\n",
            "gap_by_size.md": "| variant | 25,648 train rows | 102,492 train rows |\n",
            "gap_by_size.png": PNG,
        },
        tmp_path,
        tags=gap,
    )
    _study_run(client, "ctr", T0 + 30, {"gap.md": "| unfinished |\n"}, tmp_path, status="KILLED", tags=gap)
    case = _study_run(
        client,
        "casestudy",
        T0 + 40,
        {
            "casestudy.md": "# Case study: precision@10\n\n| encoder | all |\n| full | 0.386 |\n\n| group | scene |\n| x | y |\n",
            "casestudy.png": PNG,
        },
        tmp_path,
    )
    result = run(None, catalog, ReportConfig(min_seeds=2), log=lambda _: None)
    report = Path(result["report"]).read_text()
    assert result["studies"] == {"larr gap": newest_gap, "larr casestudy": case}
    gap_part = report.split("## Where the gap to Bayes goes (`larr gap`)")[1].split("## The case study")[0]
    assert newest_gap in gap_part and "Semantic capture of larr: 0.421 ± 0.187" in gap_part
    assert "102,492 train rows" in gap_part and "![gap_by_size.png](gap_by_size.png)" in gap_part
    assert "old gap" not in report and "unfinished" not in report  # the newest finished run only
    case_part = report.split("## The case study (`larr casestudy`)")[1]
    assert "| full | 0.386 |" in case_part and "| group |" not in case_part  # the summary, not every scene
    assert "# Case study" not in case_part  # its own title gives way to the report's section
    assert (Path(result["report"]).parent / "casestudy.png").read_bytes() == PNG
    assert result["gap_by_size_plot"].endswith("gap_by_size.png")
    assert "gap_plot" not in result  # a plot the run did not log is not claimed


def test_the_report_without_study_runs_has_no_study_sections(store, catalog):
    result = run(None, catalog, ReportConfig(min_seeds=2), log=lambda _: None)
    assert result["studies"] == {}
    assert "## Where the gap" not in Path(result["report"]).read_text()
