"""`larr tune` on the tiny CTR world: every model gets the same seeded draws, trials are child
MLflow runs that never read the test split, and the trial with the best validation CTR AUC is
trained on the final seeds as the runs the report's Table 2 reads."""

from __future__ import annotations

import mlflow
import pytest

from core import tracking
from training.ctr import names
from training.ctr.inputs import ModelConfig
from training.ctr.report import load_runs, table2
from training.ctr.train import CtrConfig
from training.ctr.tune import SearchSpace, TuneConfig, run

QUIET = lambda _: None  # noqa: E731


def test_every_model_draws_the_same_shared_settings_and_larr_adds_its_own():
    space = SearchSpace()
    ple, larr = space.draw(0, 3, names.PLE), space.draw(0, 3, names.LARR)
    assert {k: larr[k] for k in ple} == ple and set(larr) - set(ple) == {"align_weight", "align_temperature"}
    assert space.draw(0, 3, names.LR) == ple == space.draw(0, 3, names.PLE)  # seeded: the same again
    draws = [space.draw(0, trial, names.PLE) for trial in range(8)]
    assert len({d["learning_rate"] for d in draws}) == 8
    assert all(2e-4 <= d["learning_rate"] <= 5e-3 and d["embedding_dim"] in (8, 16, 32) for d in draws)
    assert space.draw(1, 3, names.PLE) != ple


def test_bad_settings_are_refused_naming_the_field():
    with pytest.raises(ValueError, match="P5 is not tuned"):
        TuneConfig(model=names.P5)
    with pytest.raises(ValueError, match=r"space.learning_rate must be \[low, high\]"):
        SearchSpace(learning_rate=(1e-2, 1e-3))
    with pytest.raises(ValueError, match="space.dropout values must be in"):
        SearchSpace(dropout=(0.0, 1.0))
    with pytest.raises(ValueError, match="final_ablations apply to model larr only"):
        TuneConfig(model=names.PLE, final_ablations=("no_al",))
    with pytest.raises(ValueError, match="final_ablations: 'none' is not an ablation"):
        TuneConfig(model=names.LARR, final_ablations=("none",))


def test_tune_chooses_on_validation_and_only_the_final_runs_read_the_test_day(spark, ctr_world, tmp_path):
    catalog, _ = ctr_world
    train = CtrConfig(
        batch_size=256, progress=False, log_model=False, checkpoint_dir=str(tmp_path / "ckpt"),
        network=ModelConfig(embedding_dim=4, hidden=(16,), expert_hidden=(16,), tower_hidden=(8,), scene_heads=2),
    )  # fmt: skip
    cfg = TuneConfig(
        model=names.WIDE_DEEP, trials=2, final_seeds=(1, 2), max_epochs=2, train=train, plot_dir=str(tmp_path)
    )
    said: list[str] = []
    with tracking.stage_run("ctr", catalog.root, cfg) as parent:
        figures = run(spark, catalog, cfg, log=said.append)
    trials = figures["trials"]
    best = max(trials, key=lambda t: t["val_ctr_auc"])
    assert figures["best_trial"] == best["trial"] and figures["best_val_ctr_auc"] == best["val_ctr_auc"]
    assert (
        f"tune wide_deep: trial {best['trial']} has the best validation CTR AUC ({best['val_ctr_auc']:.4f})"
        in said
    )
    assert figures["best_settings"] == SearchSpace().draw(0, best["trial"], names.WIDE_DEEP)
    assert (tmp_path / "tune_wide_deep.png").is_file()
    # each trial trained from scratch in its own folder, the final runs in theirs
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["final-none", "trial-0", "trial-1"]
    assert all(t["train_steps"] >= t["best_step"] >= 1 for t in trials)

    client = mlflow.MlflowClient()
    experiment = parent.info.experiment_id
    trial_runs = client.search_runs([experiment], f"tags.`{names.TUNE_TAG}` = 'wide_deep'")
    assert sorted(r.data.tags[names.TRIAL_TAG] for r in trial_runs) == ["0", "1"]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in trial_runs)
    assert all("trial.learning_rate" in r.data.params and "val_ctr_auc" in r.data.metrics for r in trial_runs)
    trial_seeds = client.search_runs([experiment], f"tags.`{names.SWEEP_TAG}` = 'tune'")
    assert len(trial_seeds) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in trial_seeds} == {r.info.run_id for r in trial_runs}
    assert all("ctr_auc" not in r.data.metrics and "val_ctr_auc" in r.data.metrics for r in trial_seeds)

    finals = client.search_runs([experiment], f"tags.`{names.TUNED_TAG}` = '{parent.info.run_id}'")
    assert sorted(r.data.tags[names.SEED_TAG] for r in finals) == ["1", "2"]
    assert all(r.data.tags[names.SWEEP_TAG] == "" and "ctr_auc" in r.data.metrics for r in finals)
    assert figures["final_seed_runs"] and set(figures["final_seed_runs"]) == {r.info.run_id for r in finals}
    chosen_lr = figures["best_settings"]["learning_rate"]
    assert all(float(r.data.params["learning_rate"]) == pytest.approx(chosen_lr) for r in finals)
    # Table 2's Wide&Deep row is the final runs (the trials are kept out)
    numbers, _ = table2(load_runs(), min_seeds=2)
    assert numbers[names.WIDE_DEEP]["seeds"] == 2
    mean = sum(r.data.metrics["ctr_auc"] for r in finals) / 2
    assert numbers[names.WIDE_DEEP]["ctr_auc"] == pytest.approx(mean)


def test_larr_trains_its_ablations_at_the_chosen_settings(spark, ctr_world, tmp_path):
    catalog, export = ctr_world
    train = CtrConfig(
        model=names.LARR, scene_vectors=export, batch_size=256, progress=False, log_model=False,
        checkpoint_dir=str(tmp_path / "ckpt"),
        network=ModelConfig(embedding_dim=4, hidden=(16,), expert_hidden=(16,), tower_hidden=(8,), scene_heads=2),
    )  # fmt: skip
    cfg = TuneConfig(
        model=names.LARR, trials=1, final_seeds=(1,), max_epochs=1, final_ablations=("no_al",), train=train,
        plot_dir=str(tmp_path),
    )  # fmt: skip
    with tracking.stage_run("ctr", catalog.root, cfg) as parent:
        figures = run(spark, catalog, cfg, log=QUIET)
    assert {"align_weight", "align_temperature"} <= set(figures["best_settings"])
    assert 0.0 < figures["final_no_al_ctr_auc"] < 1.0
    finals = mlflow.MlflowClient().search_runs(
        [parent.info.experiment_id], f"tags.`{names.TUNED_TAG}` = '{parent.info.run_id}'"
    )
    assert sorted(r.data.tags[names.ABLATION_TAG] for r in finals) == ["no_al", "none"]
    temperatures = {float(r.data.params["network.align_temperature"]) for r in finals}
    assert temperatures == {figures["best_settings"]["align_temperature"]}
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["final-no_al", "final-none", "trial-0"]


def test_samples_without_a_validation_split_are_refused_before_any_training(spark, tmp_path):
    from core.catalog import TableCatalog
    from training.ctr.tune import TuneError, check_validation_split

    catalog = TableCatalog.resolve(str(tmp_path / "lakehouse"))
    rows = spark.createDataFrame([(1, "train"), (2, "test")], "sample_id long, split string")
    catalog.write(rows, "samples.ctr")
    with pytest.raises(TuneError) as refused:
        check_validation_split(spark, catalog, "samples.ctr")
    assert str(refused.value) == (
        "samples.ctr has no validation split: run `larr etl samples --set validation_days=1` "
        "(tuning never reads the test day)"
    )
