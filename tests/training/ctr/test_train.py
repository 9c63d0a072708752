"""`larr train ctr` on the tiny world: every model trains and is evaluated, runs resume, bad input
stops clearly, and the scoring pyfunc reproduces the trainer's predictions from raw rows."""

from __future__ import annotations

import math
from dataclasses import replace

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from core import tracking
from training.common.guard import NonFiniteLossError
from training.ctr import train
from training.ctr.encoding import FeatureError
from training.ctr.inputs import ModelConfig
from training.ctr.names import ID_MODELS, SCENE_MODELS
from training.ctr.train import CtrConfig, CtrError

QUIET = lambda _: None  # noqa: E731


def _cfg(tmp_path, **kwargs) -> CtrConfig:
    base = dict(
        seeds=(1,),
        batch_size=256,
        max_steps=6,
        network=ModelConfig(
            embedding_dim=4, hidden=(16,), expert_hidden=(16,), tower_hidden=(8,), scene_heads=2
        ),
        checkpoint_dir=str(tmp_path / "ckpt"),
        progress=False,
        log_model=False,
    )
    return CtrConfig(**{**base, **kwargs})


@pytest.mark.parametrize("model", ID_MODELS)
def test_every_model_trains_and_is_evaluated_against_the_bayes_optimum(spark, ctr_world, tmp_path, model):
    catalog, export = ctr_world
    cfg = _cfg(tmp_path, model=model, scene_vectors=export if model in SCENE_MODELS else "")
    summary = train.run(spark, catalog, cfg, log=QUIET)
    for key in ("ctr_auc", "ctcvr_auc", "ctr_gauc", "ctcvr_gauc", "logloss", "bayes_auc_ctr"):
        assert math.isfinite(summary[key]), key
    assert 0.5 < summary["bayes_auc_ctr"] < 1.0
    assert 0.3 < summary["ctr_auc"] < summary["bayes_auc_ctr"] + 0.02
    assert summary["per_seed"][0]["train_steps"] == 6
    assert summary["test_rows"] > 0 and summary["train_rows"] > 6 * 256
    # the day before the test day is the validation split, evaluated with the same metrics
    assert summary["validation_rows"] > 0 and 0.3 < summary["val_ctr_auc"] < 1.0
    assert math.isfinite(summary["per_seed"][0]["val_logloss"])
    assert (summary["scene_vectors"] is not None) == (model in SCENE_MODELS)
    if model == "larr_plus":  # the text export of the scene export's encoder, found in the lakehouse
        assert summary["text_vectors"].endswith("_exports/text_vectors/enc-test.npz")


def test_a_rerun_resumes_from_the_checkpoint_and_gives_the_same_figures(spark, ctr_world, tmp_path):
    catalog, _ = ctr_world
    cfg = _cfg(tmp_path, model="ple", max_steps=4)

    def tracked(cfg: CtrConfig, log) -> dict:  # as `larr train ctr` runs it: a seed run per seed
        with tracking.stage_run("ctr", catalog.root, cfg):
            return train.run(spark, catalog, cfg, log=log)

    first = tracked(cfg, QUIET)
    messages = []
    again = tracked(cfg, messages.append)
    assert again["ctr_auc"] == first["ctr_auc"] and again["logloss"] == first["logloss"]
    assert any("resuming from" in m and "step-000004" in m for m in messages)  # nothing left to train
    assert not any("unusable" in m for m in messages)
    assert (tmp_path / "ckpt" / "seed-1" / "step-000004" / "checksums.json").is_file()
    messages.clear()
    longer = tracked(replace(cfg, max_steps=6), messages.append)
    assert longer["per_seed"][0]["train_steps"] == 6
    assert any("(step 4," in m for m in messages)  # went on from step 4, not from scratch

    client = mlflow.MlflowClient()

    def steps(summary: dict, key: str) -> list[int]:
        (seed_run,) = summary["seed_runs"]
        return sorted(m.step for m in client.get_metric_history(seed_run, key))

    # every step once, logged while training; a resumed run goes on from the checkpoint's step and
    # takes the loss of the steps before it from the checkpoint's curve
    assert steps(first, "train_loss") == steps(first, "lr") == steps(first, "samples_per_s") == [1, 2, 3, 4]
    assert steps(again, "train_loss") == [1, 2, 3, 4] and steps(again, "lr") == []
    assert steps(longer, "train_loss") == [1, 2, 3, 4, 5, 6]
    assert steps(longer, "lr") == steps(longer, "samples_per_s") == [5, 6]
    rates = client.get_metric_history(longer["seed_runs"][0], "samples_per_s")
    assert all(m.value > 0 for m in rates)


def test_early_stopping_keeps_the_weights_of_the_best_validation_score(spark, ctr_world, tmp_path):
    catalog, _ = ctr_world
    cfg = _cfg(tmp_path, model="wide_deep", max_steps=14, validate_every=2, patience=1, learning_rate=0.02)
    with tracking.stage_run("ctr", catalog.root, cfg):
        summary = train.run(spark, catalog, cfg, log=QUIET)
    (seed,) = summary["per_seed"]
    history = mlflow.MlflowClient().get_metric_history(summary["seed_runs"][0], train.VALIDATION_CURVE)
    curve = {m.step: m.value for m in sorted(history, key=lambda m: m.step)}
    steps = list(curve)
    assert steps == list(range(2, seed["train_steps"] + 1, 2)) and steps[-1] == seed["train_steps"]
    best = max(curve, key=lambda step: (curve[step], -step))  # the first of equal scores
    assert seed["best_step"] == best
    # patience 1: it stopped at the first score that was no better, or ran to max_steps
    stopped = seed["train_steps"] < 14
    assert seed["stopped_early"] == int(stopped)
    if stopped:
        assert steps[-1] == steps[steps.index(best) + 1] and curve[steps[-1]] <= curve[best]
    # the test and the final validation figures are those of the best step's weights
    assert seed["val_ctr_auc"] == pytest.approx(curve[best], abs=1e-12)


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(
    spark, ctr_world, tmp_path, monkeypatch
):
    catalog, _ = ctr_world
    real = train.loss_of
    calls = {"n": 0}

    def poisoned(*args):
        calls["n"] += 1
        loss = real(*args)
        return loss * float("nan") if calls["n"] == 4 else loss

    monkeypatch.setattr(train, "loss_of", poisoned)
    cfg = _cfg(tmp_path, model="wide_deep", checkpoint_every=2)
    with pytest.raises(NonFiniteLossError, match="step 4.*step-000002"):
        train.run(spark, catalog, cfg, log=QUIET)
    assert (tmp_path / "ckpt" / "seed-1" / "step-000002").is_dir()


def test_larr_without_scene_vectors_of_its_encoder_is_a_clear_error(spark, ctr_world, tmp_path):
    catalog, _ = ctr_world
    cfg = _cfg(tmp_path, model="larr", encoder="models:/m-never-embedded")
    with pytest.raises(CtrError, match="larr embed scenes --set encoder=models:/m-never-embedded"):
        train.run(spark, catalog, cfg, log=QUIET)


def test_a_weighted_loss_is_the_weighted_mean_and_equal_weights_change_nothing():
    from types import SimpleNamespace

    import torch.nn.functional as F

    out = SimpleNamespace(
        ctr_logit=torch.tensor([0.3, -1.0, 2.0]), ctcvr_logit=torch.tensor([-0.5, 0.1, 1.5]), align_loss=None
    )
    click, ctcvr = torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0.0, 0.0, 1.0])
    plain = train.loss_of(out, click, ctcvr, 0.05)
    assert torch.allclose(train.loss_of(out, click, ctcvr, 0.05, torch.full((3,), 7.0)), plain)
    weights = torch.tensor([3.0, 1.0, 0.0])
    expected = sum(
        (F.binary_cross_entropy_with_logits(logit, label, reduction="none") * weights).sum() / weights.sum()
        for logit, label in ((out.ctr_logit, click), (out.ctcvr_logit, ctcvr))
    )
    assert torch.allclose(train.loss_of(out, click, ctcvr, 0.05, weights), expected)
    raw = [0.0, 1.0, float(np.e), 9.0, -2.0]
    assert train.sample_weights(raw, "log", "cpu").tolist() == pytest.approx(
        [0.0, 1.0, 2.0, 1 + np.log(9), 0.0]
    )
    assert train.sample_weights(raw, "count", "cpu").tolist() == pytest.approx([0.0, 1.0, np.e, 9.0, 0.0])
    assert train.sample_weights(raw, "none", "cpu").tolist() == [1.0] * 5
    with pytest.raises(ValueError, match="sample_weight must be one of log, count, none"):
        CtrConfig(sample_weight="sqrt")


def test_config_rejects_ablations_of_other_models_and_unknown_models():
    with pytest.raises(ValueError, match="ablation no_al applies to model larr only"):
        CtrConfig(model="ple", ablation="no_al")
    with pytest.raises(ValueError, match="model must be one of"):
        CtrConfig(model="dcn")


def test_checkpoint_keys_follow_the_config_and_the_model_revision(monkeypatch):
    from training.ctr import models

    larr, ple = CtrConfig(model="larr"), CtrConfig(model="ple")
    keys = larr.key("samples@0"), ple.key("samples@0")
    assert larr.key("samples@1") != keys[0] and replace(larr, learning_rate=1e-3).key("samples@0") != keys[0]
    assert replace(larr, seeds=(7,), log_model=False).key("samples@0") == keys[0]  # bookkeeping only
    assert replace(larr, patience=3).key("samples@0") != keys[0]  # where it stops shapes the weights
    no_request_item = replace(larr, encoding=replace(larr.encoding, request_item=False))
    assert no_request_item.key("samples@0") != keys[0]  # fewer inputs; the default keeps older keys
    oracle = replace(larr, encoding=replace(larr.encoding, extra_numeric=("semantic_logit",)))
    assert oracle.key("samples@0") != keys[0]  # one more input
    # the defaults' keys as before encoding.request_item and extra_numeric existed: checkpoints resume
    assert keys == ("c2bbeb09d2a3", "9ac034b69456")
    # a LARR whose parameters changed shape must not resume older checkpoints; PLE is untouched
    monkeypatch.setitem(models.MODEL_REVISIONS, "larr", models.MODEL_REVISIONS["larr"] + 1)
    assert larr.key("samples@0") != keys[0] and ple.key("samples@0") == keys[1]


def _trained_scorer(spark, catalog, cfg: CtrConfig, tmp_path):
    """(data, model, layout, the loaded scoring pyfunc) of one seed of `cfg` trained on the tiny world."""
    from training.ctr.pyfunc import save_scoring_model

    data = train.prepare(spark, catalog, cfg, log=QUIET)
    trained = train.train_seed(cfg, data, 1, str(tmp_path / "ckpt"), log=QUIET)
    model, layout = trained.model, trained.preprocessor
    path = save_scoring_model(cfg, data, model, layout, tmp_path / "scoring")
    return data, model, layout, mlflow.pyfunc.load_model(str(path))


def test_the_scoring_model_reproduces_the_trainer_on_raw_rows_and_counts_unknown_scenes(
    spark, ctr_world, tmp_path
):
    from training.ctr.encoding import raw_columns, with_request_item
    from training.ctr.metrics import recalibrate_ctcvr, recalibrate_ctr

    catalog, export = ctr_world
    cfg = _cfg(tmp_path, model="larr", scene_vectors=export, max_steps=3)
    data, model, layout, scorer = _trained_scorer(spark, catalog, cfg, tmp_path)

    rows = (
        catalog.read(spark, "samples.ctr").where("split = 'test'").orderBy("sample_id").limit(100).toPandas()
    )
    raw = rows[list(raw_columns(layout))]  # no hashed *_id column: the model derives them
    scored = scorer.predict(raw)

    from features.embeddings.vectors import load_scene_vectors
    from training.ctr.encoding import SceneTable, encode

    table = SceneTable(load_scene_vectors(export), layout.scene_features)
    inputs, _ = encode(rows, layout, table)
    model.eval()
    out = model(inputs)
    p = 1 / (1 + np.exp(-out.ctr_logit.detach().numpy().astype(np.float64)))
    q = 1 / (1 + np.exp(-out.ctcvr_logit.detach().numpy().astype(np.float64)))
    np.testing.assert_allclose(scored["p_ctr"], recalibrate_ctr(p, data.neg_rate), rtol=1e-5)
    np.testing.assert_allclose(scored["p_ctcvr"], recalibrate_ctcvr(q, p, data.neg_rate), rtol=1e-5)
    expected_unknown = (inputs.scene_rows.numpy() == table.unknown_rows).sum(axis=1)
    np.testing.assert_array_equal(scored["unknown_scene_values"], expected_unknown)
    assert (scored["p_ctr"] < p).all()  # negatives were down-sampled: true rates are lower

    odd = raw.copy()
    odd.loc[odd.index[:3], "scene_weather"] = "volcanic ash"
    counted = scorer.predict(odd)
    added = (counted["unknown_scene_values"] - scored["unknown_scene_values"]).tolist()
    assert added[:4] == [1, 1, 1, 0] and sum(added) == 3
    assert np.isfinite(counted["p_ctr"]).all()

    with pytest.raises(FeatureError, match="'scene_weather'"):
        scorer.predict(raw.drop(columns=["scene_weather"]))
    assert isinstance(scored, pd.DataFrame)

    # the request-item features from their raw inputs (the event's and the POI's), as Spark derived them
    events = catalog.read(spark, "clean.impressions").selectExpr(
        "event_id AS sample_id", "ts", "user_lat", "user_lon"
    )
    pois = catalog.read(spark, "clean.pois").selectExpr(
        "poi_id",
        "latitude AS poi_latitude",
        "longitude AS poi_longitude",
        "opening_hours AS poi_opening_hours",
    )
    ids = spark.createDataFrame(rows[["sample_id", "poi_id"]])
    found = ids.join(events, "sample_id").join(pois, "poi_id").toPandas()
    keyed = rows[["sample_id"]].merge(found, on="sample_id", how="left")  # in the order of `rows`
    raw_inputs = ["ts", "user_lat", "user_lon", "poi_latitude", "poi_longitude", "poi_opening_hours"]
    from_inputs = raw.drop(columns=["distance_km", "open_now"]).assign(
        **{c: keyed[c].to_numpy() for c in raw_inputs}
    )
    derived = with_request_item(from_inputs, layout)[["distance_km", "open_now"]]
    np.testing.assert_allclose(derived, rows[["distance_km", "open_now"]], rtol=0, atol=1e-9)
    assert rows["open_now"].nunique() == 2 and rows["distance_km"].nunique() > 50
    np.testing.assert_allclose(scorer.predict(from_inputs)["p_ctr"], scored["p_ctr"], rtol=1e-6)


def test_larr_plus_scores_raw_rows_like_the_trainer_and_a_missing_text_export_is_one_line(
    spark, ctr_world, tmp_path
):
    from features.embeddings.vectors import load_scene_vectors, save_scene_vectors
    from training.ctr.encoding import FrozenTables, encode, raw_columns
    from training.ctr.metrics import recalibrate_ctr

    catalog, export = ctr_world
    cfg = _cfg(tmp_path, model="larr_plus", scene_vectors=export, max_steps=2)
    data, model, layout, scorer = _trained_scorer(spark, catalog, cfg, tmp_path)
    assert layout.text_sides == ("user", "poi")
    rows = (
        catalog.read(spark, "samples.ctr").where("split = 'test'").orderBy("sample_id").limit(60).toPandas()
    )
    scored = scorer.predict(rows[list(raw_columns(layout))])

    tables = FrozenTables.load(export, data.text_vectors, layout.scene_features)
    inputs, _ = encode(rows, layout, tables.scene, text_table=tables.text)
    users_unknown = inputs.text_rows[:, 0].numpy() == tables.text.unknown_rows[0]
    assert 0 < users_unknown.sum() < len(rows)  # half the users have no text vector: their side's mean
    model.eval()
    p = torch.sigmoid(model(inputs).ctr_logit.detach().double()).numpy()
    np.testing.assert_allclose(scored["p_ctr"], recalibrate_ctr(p, data.neg_rate), rtol=1e-5)

    # scene vectors of an encoder without text vectors: one line naming it and the command to run
    other = tmp_path / "other.npz"
    save_scene_vectors(
        str(other),
        {f: (v.ids, v.matrix[:-1]) for f, v in load_scene_vectors(export).items()},
        {"encoder_uri": "other-encoder", "encoder_version": "enc-other"},
    )
    with pytest.raises(CtrError, match=r"no text vectors of encoder other-encoder in .*`larr embed texts"):
        train.prepare(spark, catalog, replace(cfg, scene_vectors=str(other)), log=QUIET)
    with pytest.raises(CtrError, match="text_vectors .*missing.npz does not exist"):
        train.prepare(spark, catalog, replace(cfg, text_vectors=str(tmp_path / "missing.npz")), log=QUIET)


def test_the_p5_baseline_trains_on_prompts_and_is_evaluated_on_a_hashed_subsample(spark, ctr_world, tmp_path):
    from training.ctr.train import P5Config
    from training.lm.backbone import save_backbone
    from training.lm.tiny import tiny_llama, tiny_tokenizer

    catalog, _ = ctr_world
    tokenizer = tiny_tokenizer()
    save_backbone(tiny_llama(tokenizer, seed=3), tokenizer, tmp_path / "tiny-lm")
    p5 = P5Config(source=str(tmp_path / "tiny-lm"), batch_size=4, max_steps=3, eval_rows=60, train_layers=1)
    summary = train.run(spark, catalog, _cfg(tmp_path, model="p5", p5=p5), log=QUIET)
    seed = summary["per_seed"][0]
    assert seed["train_steps"] == 3 and math.isfinite(seed["ctr_auc"]) and math.isfinite(seed["logloss"])
    assert 20 < seed["eval_rows"] < 120 < summary["test_rows"]  # about 60 rows, chosen by a hash of sample_id
