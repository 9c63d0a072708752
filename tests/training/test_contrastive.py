import math
from dataclasses import replace
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch

from core import tracking
from core.schema_table import write_schema
from etl.text.slices import token_slices
from etl.tokens import wrap_text
from tests.etl.text_fixtures import SCHEMA
from training.common.data import DeltaBatches
from training.common.schedule import warmup_cosine
from training.common.text import TextCounts
from training.embedding.contrastive import (
    PAIR_TYPES,
    ContrastiveConfig,
    ContrastiveError,
    build_encoder,
    contrastive_batches,
    epoch_length,
    prepare,
    retrieval_metrics,
    run,
    type_schedule,
)
from training.embedding.encoder import TextEncoder, encode_texts, pad, tokenize_texts
from training.embedding.pyfunc import log_encoder
from training.lm.backbone import add_special_tokens, save_backbone
from training.lm.tiny import tiny_llama, tiny_tokenizer

SLICES = token_slices(SCHEMA)  # the synthetic world's declared slices
PAPER_TYPES = ("user_user", "poi_poi", "user_poi")  # trained by default (weight_scene_poi 0)

DISHES = ["claypot rice", "roast goose", "cold noodles", "hot pot", "iced tea", "dumplings", "milk tea"]


def _pair_rows(n_train: int = 12, n_heldout: int = 4) -> list[tuple]:
    rows = []
    for t, pair_type in enumerate(PAIR_TYPES):
        for i in range(n_train + n_heldout):
            dishes = ", ".join(DISHES[(i + k) % len(DISHES)] for k in range(1 + i % 3))
            a = wrap_text("POI_name", f"{pair_type} anchor {i}") + wrap_text("POI_dishes", dishes)
            b = wrap_text("POI_loc", f"{pair_type} positive {i}") + wrap_text("POI_tags", dishes)
            split = "train" if i < n_train else "heldout"
            rows.append((pair_type, 100 * t + i, 1000 * t + i, a, b, split))
    return rows


@pytest.fixture()
def pairs(spark, catalog):
    schema = "pair_type string, anchor_id long, positive_id long, text_a string, text_b string, split string"
    df = spark.createDataFrame(_pair_rows(), schema).repartition(2)
    write_schema(spark, catalog, SCHEMA)
    catalog.write(df, "pairs.contrastive", partition_by=["pair_type"])
    return catalog


@pytest.fixture()
def backbone_dir(tmp_path) -> Path:
    """A stage-1 backbone: the tiny model with the registry's special tokens."""
    tokenizer = tiny_tokenizer()
    model = tiny_llama(tokenizer)
    add_special_tokens(model, tokenizer, SLICES)
    return save_backbone(model, tokenizer, tmp_path / "tiny")


@pytest.fixture()
def base_dir(tmp_path) -> Path:
    """A base model: no special tokens yet."""
    tokenizer = tiny_tokenizer()
    return save_backbone(tiny_llama(tokenizer), tokenizer, tmp_path / "base")


def _config(backbone_dir: Path, tmp_path: Path, **overrides) -> ContrastiveConfig:
    settings = dict(
        backbone=str(backbone_dir),
        dim=16,
        max_length=40,
        batch_size=4,
        lr=1e-2,
        warmup_steps=0,
        max_steps=3,
        train_layers=1,
        checkpoint_dir=str(tmp_path / "ckpt"),
        eval_batch_size=8,
        device="cpu",
        progress=False,
        seed=3,
        probe_attribute="",
        base_model="",
    )
    settings.update(overrides)
    return ContrastiveConfig(**settings)


def _tiny_encoder(seed: int = 0):
    tokenizer = tiny_tokenizer()
    model = tiny_llama(tokenizer)
    add_special_tokens(model, tokenizer, SLICES)
    return TextEncoder(model, dim=16, seed=seed), tokenizer


def test_one_step_per_pair_type_through_petastorm(spark, pairs, backbone_dir, base_dir, tmp_path):
    cfg = _config(backbone_dir, tmp_path, base_model=str(base_dir))  # 3 steps: one batch of each type
    data = prepare(spark, pairs, cfg)
    assert data.train_rows == dict.fromkeys(PAPER_TYPES, 12)
    assert {t: len(h.anchors) for t, h in data.heldout.items()} == {"user_poi": 4, "poi_poi": 4}
    with tracking.stage_run("contrastive", pairs.root, cfg) as mlflow_run:
        summary = run(spark, pairs, cfg, log=lambda _: None)
    assert summary["steps"] == 3 and math.isfinite(summary["final_loss"]) and summary["tokens_per_s"] > 0
    client = mlflow.MlflowClient()
    history = client.get_metric_history(mlflow_run.info.run_id, "train_loss")
    assert len(history) == 3 and all(math.isfinite(m.value) for m in history)
    for key in ("train_loss", "lr", "tokens_per_s"):  # per step while training, once each
        assert sorted(m.step for m in client.get_metric_history(mlflow_run.info.run_id, key)) == [1, 2, 3]
    lrs = sorted(client.get_metric_history(mlflow_run.info.run_id, "lr"), key=lambda m: m.step)
    assert [m.value for m in lrs] == pytest.approx(
        [cfg.lr * warmup_cosine(s, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio) for s in range(3)]
    )
    for key in (
        "recall_at_10_user_poi",
        "recall_at_10_user_poi_base",
        "recall_at_10_user_poi_start",
        "recall_at_10_poi_poi",
        "mrr_user_poi",
    ):
        assert 0 <= summary[key] <= 1
    assert summary["recall_at_10_poi_poi_base"] is not None and summary["recall_at_1_user_poi"] is not None
    assert summary["random_recall_at_10_user_poi"] == 1.0  # a pool of 4: the top 10 holds it all
    assert summary["ablation"] == "none" and summary["empty_pairs"] == 0
    assert summary["texts_trained"] == 3 * 8 and summary["texts_without_closing_token"] == 0

    texts = list(data.heldout["user_poi"].pool)
    fresh, tokenizer, _ = build_encoder(cfg, SLICES)  # the seeded projection before training
    before = encode_texts(fresh, tokenizer, texts, max_length=cfg.max_length)
    after = mlflow.pyfunc.load_model(summary["model_uri"]).predict(pd.DataFrame({"text": texts}))
    assert after.shape == (4, 16) and not torch.allclose(torch.from_numpy(after), before, atol=1e-4)


def test_batches_hold_one_pair_type_each(spark, pairs, backbone_dir, tmp_path):
    assert type_schedule(dict.fromkeys(PAIR_TYPES, 1.0), 2 * len(PAIR_TYPES)) == list(PAIR_TYPES) * 2
    weighted = type_schedule({"user_user": 2.0, "poi_poi": 1.0, "user_poi": 0.0}, 9)
    assert weighted.count("user_user") == 6 and weighted.count("poi_poi") == 3 and "user_poi" not in weighted

    cfg = _config(backbone_dir, tmp_path)
    data = prepare(spark, pairs, cfg)
    _, tokenizer, _ = build_encoder(cfg, SLICES)
    loaders = {t: DeltaBatches(s, cfg.batch_size, shuffle_seed=cfg.seed) for t, s in data.snapshots.items()}
    length = epoch_length(cfg, data.train_rows, 1)
    assert length == 9
    batches = list(contrastive_batches(loaders, tokenizer, cfg, length, epoch=0, skip=0))
    assert [b.pair_type for b in batches] == list(PAPER_TYPES) * 3
    for batch in batches:
        texts = tokenizer.batch_decode(batch.input_ids, skip_special_tokens=True)
        assert batch.size == 4 and len(texts) == 8
        assert all(f"{batch.pair_type} anchor" in t for t in texts[:4])
        assert all(f"{batch.pair_type} positive" in t for t in texts[4:])
        assert all(" 12" not in t and " 13" not in t for t in texts)  # no held-out rows
    resumed = list(contrastive_batches(loaders, tokenizer, cfg, length, epoch=0, skip=5))
    assert all(torch.equal(a.input_ids, b.input_ids) for a, b in zip(resumed, batches[5:], strict=True))

    # beyond the paper: the scene pairs join the round-robin with a positive weight, under a new key
    scenes = replace(cfg, weight_scene_poi=1.0)
    assert scenes.key() != cfg.key()
    data = prepare(spark, pairs, scenes)
    assert data.train_rows == dict.fromkeys(PAIR_TYPES, 12)
    loaders = {t: DeltaBatches(s, cfg.batch_size, shuffle_seed=cfg.seed) for t, s in data.snapshots.items()}
    length = epoch_length(scenes, data.train_rows, 1)
    batches = list(contrastive_batches(loaders, tokenizer, scenes, length, epoch=0, skip=0))
    assert length == 12 and [b.pair_type for b in batches] == list(PAIR_TYPES) * 3


def test_retrieval_metrics_on_a_hand_made_similarity_matrix():
    similarity = torch.tensor(
        [
            [0.9, 0.1, 0.2, 0.0],  # positive 0 ranks 1
            [0.5, 0.4, 0.6, 0.1],  # positive 1 ranks 3
            [0.3, 0.3, 0.3, 0.3],  # positive 3, all tied: ties count against it -> rank 4
            [0.2, 0.8, 0.1, 0.7],  # positive 3 ranks 2
        ]
    )
    targets = torch.tensor([0, 1, 3, 3])
    m = retrieval_metrics(similarity, targets, ks=(1, 2, 10))
    assert m["recall_at_1"] == 0.25 and m["recall_at_2"] == 0.5 and m["recall_at_10"] == 1.0
    assert math.isclose(m["mrr"], (1 + 1 / 3 + 1 / 4 + 1 / 2) / 4)
    exclude = torch.zeros(4, 4, dtype=torch.bool)
    exclude[1, 2] = True  # row 1's other positive leaves its ranking: rank 2
    assert math.isclose(
        retrieval_metrics(similarity, targets, exclude)["mrr"], (1 + 1 / 2 + 1 / 4 + 1 / 2) / 4
    )


def test_left_and_right_padding_give_the_same_embeddings():
    encoder, tokenizer = _tiny_encoder()
    texts = [wrap_text("POI_name", "Aunt Li's Claypot") + wrap_text("POI_dishes", "roast goose"), "hot pot"]
    ids = tokenize_texts(tokenizer, texts, max_length=64)
    assert ids[0][-1] == tokenizer.convert_tokens_to_ids("</POI_dishes>")
    assert tokenize_texts(tokenizer, texts, max_length=5)[0][-1] == ids[0][-1]  # the closing token survives
    encoder.eval()
    with torch.no_grad():
        right = encoder(**pad(ids, 0, side="right"))
        left = encoder(**pad(ids, 0, side="left"))
        alone = torch.cat([encoder(**pad([row], 0)) for row in ids])
    assert torch.allclose(right, left, atol=1e-5) and torch.allclose(right, alone, atol=1e-5)
    assert torch.allclose(right.norm(dim=1), torch.ones(2), atol=1e-5)
    batched = encode_texts(encoder, tokenizer, texts, batch_size=1, max_length=64)
    assert torch.allclose(batched, right, atol=1e-5)


def test_the_logged_pyfunc_model_returns_the_encoder_vectors(tmp_path):
    encoder, tokenizer = _tiny_encoder(seed=5)
    texts = [
        wrap_text("POI_name", "Aunt Li") + wrap_text("POI_dishes", ", ".join(DISHES)),
        wrap_text("POI_name", "cold noodles"),
        "iced tea on a hot afternoon",
    ]
    expected = encode_texts(encoder, tokenizer, texts, batch_size=2, max_length=12)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        experiment = mlflow.create_experiment(
            "contrastive-test", artifact_location=str(tmp_path / "artifacts")
        )
        with mlflow.start_run(experiment_id=experiment):
            uri = log_encoder(encoder.backbone, tokenizer, encoder.projection, max_length=12)
        got = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"text": texts}))
    finally:
        mlflow.set_tracking_uri(previous)
    assert got.shape == (3, 16)
    assert torch.allclose(torch.from_numpy(got), expected, atol=1e-5)


def test_ablation_no_ft_logs_the_stage1_model_with_the_seeded_projection(
    spark, pairs, backbone_dir, tmp_path
):
    cfg = _config(backbone_dir, tmp_path, ablation="no_ft")
    with tracking.stage_run("contrastive", pairs.root, cfg):
        summary = run(spark, pairs, cfg, log=lambda _: None)
    assert summary["steps"] == 0 and summary["final_loss"] is None and summary["checkpoint"] is None
    assert summary["recall_at_10_user_poi"] == summary["recall_at_10_user_poi_start"]
    assert summary["recall_at_10_user_poi_base"] is None  # base_model "": not evaluated
    assert tracking.resolve_latest("latest:contrastive/no_ft") == summary["model_uri"]
    with pytest.raises(tracking.TrackingError, match="no finished run of variant 'none'"):
        tracking.resolve_latest("latest:contrastive")
    texts = list(prepare(spark, pairs, cfg).heldout["poi_poi"].pool)
    fresh, tokenizer, _ = build_encoder(cfg, SLICES)
    expected = encode_texts(fresh, tokenizer, texts, max_length=cfg.max_length)
    got = mlflow.pyfunc.load_model(summary["model_uri"]).predict(pd.DataFrame({"text": texts}))
    assert torch.allclose(torch.from_numpy(got), expected, atol=1e-5)


def test_variant_base_logs_the_untouched_base_model_with_the_seeded_projection(
    spark, pairs, base_dir, tmp_path
):
    cfg = _config(base_dir, tmp_path, ablation="base")
    with tracking.stage_run("contrastive", pairs.root, cfg):
        summary = run(spark, pairs, cfg, log=lambda _: None)
    assert summary["steps"] == 0 and summary["checkpoint"] is None
    # its start is the base model: the `_base` figures are the start's
    assert summary["recall_at_10_user_poi_base"] == summary["recall_at_10_user_poi_start"]
    assert summary["recall_at_10_user_poi"] == summary["recall_at_10_user_poi_start"]
    assert tracking.resolve_latest("latest:contrastive/base") == summary["model_uri"]
    texts = list(prepare(spark, pairs, cfg).heldout["poi_poi"].pool)
    fresh, tokenizer, _ = build_encoder(cfg, SLICES)
    expected = encode_texts(fresh, tokenizer, texts, max_length=cfg.max_length)
    got = mlflow.pyfunc.load_model(summary["model_uri"]).predict(pd.DataFrame({"text": texts}))
    assert torch.allclose(torch.from_numpy(got), expected, atol=1e-5)


def test_ablations_check_where_the_backbone_comes_from(spark, pairs, backbone_dir, base_dir, tmp_path):
    with pytest.raises(ContrastiveError, match=r"has not been through stage 1 .* or set ablation: no_cpt"):
        build_encoder(_config(base_dir, tmp_path), SLICES)
    with pytest.raises(ContrastiveError, match="has not been through stage 1"):
        build_encoder(_config(base_dir, tmp_path, ablation="no_ft"), SLICES)
    with pytest.raises(ContrastiveError, match="ablation no_cpt starts from the base model"):
        build_encoder(_config(backbone_dir, tmp_path, ablation="no_cpt"), SLICES)
    with pytest.raises(ContrastiveError, match="ablation base starts from the base model"):
        build_encoder(_config(backbone_dir, tmp_path, ablation="base"), SLICES)
    summary = run(
        spark, pairs, _config(base_dir, tmp_path, ablation="no_cpt", max_steps=1), log=lambda _: None
    )
    assert summary["steps"] == 1 and summary["ablation"] == "no_cpt"
    with pytest.raises(ValueError, match="ablation must be one of"):
        _config(base_dir, tmp_path, ablation="no_al")


def test_latest_cpt_resolves_to_the_newest_finished_stage1_run(spark, pairs, backbone_dir, tmp_path):
    import mlflow as mlf

    cfg = _config(backbone_dir, tmp_path, backbone="latest:cpt", max_steps=1)
    tracking.configure(pairs.root)
    with pytest.raises(tracking.TrackingError, match=r"latest:cpt: no finished run .* run `larr train cpt`"):
        prepare(spark, pairs, cfg)
    tracking.experiment_for("cpt")
    with mlf.start_run():
        tracking.record_model("runs:/older/backbone")
    with mlf.start_run():
        tracking.record_model(str(backbone_dir))
    mlf.start_run()
    tracking.record_model("runs:/failed/backbone")
    mlf.end_run(status="FAILED")
    data = prepare(spark, pairs, cfg)
    assert data.backbone == str(backbone_dir)
    summary = run(spark, pairs, cfg, log=lambda _: None)
    assert summary["backbone"] == str(backbone_dir)


def test_blank_pairs_are_skipped_and_long_texts_counted(spark, catalog, backbone_dir, tmp_path):
    rows = _pair_rows()
    rows = [
        (t, a, b, "   " if i % 6 == 0 and s == "train" else x, y, s)
        for i, (t, a, b, x, y, s) in enumerate(rows)
    ]
    rows += [("user_poi", 999, 998, None, "x", "train")]
    schema = "pair_type string, anchor_id long, positive_id long, text_a string, text_b string, split string"
    write_schema(spark, catalog, SCHEMA)
    catalog.write(spark.createDataFrame(rows, schema), "pairs.contrastive", partition_by=["pair_type"])
    cfg = _config(backbone_dir, tmp_path, max_length=8, max_steps=3)
    data = prepare(spark, catalog, cfg)
    assert data.empty_pairs == 7 and data.train_rows == {"user_user": 10, "poi_poi": 10, "user_poi": 10}
    trained = run(spark, catalog, cfg, log=lambda _: None)
    assert trained["steps"] == 3 and math.isfinite(trained["final_loss"]) and trained["empty_pairs"] == 7
    assert trained["texts_trained"] == 24 and trained["texts_truncated"] == 24  # every text is > 8 tokens
    assert trained["texts_without_closing_token"] == 0  # middle truncation keeps the closing token


def test_texts_without_a_closing_token_are_counted():
    _, tokenizer = _tiny_encoder()
    counts = TextCounts()
    tokenize_texts(tokenizer, [wrap_text("POI_name", "a shop"), "a shop", "hot pot</POI_name> x"], 64, counts)
    assert (counts.texts, counts.truncated, counts.without_closing_token) == (3, 0, 2)
    with pytest.raises(ValueError, match="text 1 is empty"):
        tokenize_texts(tokenizer, ["a", ""], 64)
