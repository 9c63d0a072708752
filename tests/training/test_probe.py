import numpy as np
import pytest
import torch

from core.schema_table import write_schema
from etl.text.slices import token_slices
from tests.etl.text_fixtures import SCHEMA
from tests.features.builders import clean_world
from tests.training.test_contrastive import _config, _pair_rows
from training.embedding.contrastive import run
from training.embedding.probe import linear_probe, probe_set, roc_auc
from training.lm.backbone import add_special_tokens, save_backbone
from training.lm.tiny import tiny_llama, tiny_tokenizer

SLICES = token_slices(SCHEMA)  # the synthetic world's declared slices


def test_roc_auc_on_a_hand_made_ranking():
    # positives score 0.9, 0.4, 0.4; negatives 0.4, 0.1: 5 wins and 2 ties out of 6 pairs
    assert roc_auc(np.array([0.9, 0.4, 0.4, 0.4, 0.1]), np.array([1, 1, 1, 0, 0])) == pytest.approx(5 / 6)
    assert np.isnan(roc_auc(np.array([0.1, 0.2]), np.array([1, 1])))


def test_the_probe_reads_a_linear_attribute_and_not_noise():
    generator = torch.Generator().manual_seed(0)
    labels = (torch.rand(200, generator=generator) < 0.4).long()
    noise = torch.randn(200, 16, generator=generator)
    carried = noise.clone()
    carried[:, 3] += 1.5 * (2 * labels - 1)  # the attribute along one direction
    readable = linear_probe(carried, labels.numpy(), seed=1)
    blind = linear_probe(noise, labels.numpy(), seed=1)
    assert readable["auc"] > 0.9 and readable["accuracy"] > 0.85
    assert abs(blind["auc"] - 0.5) < 0.12
    assert readable["majority_accuracy"] == pytest.approx(
        max(labels.float().mean(), 1 - labels.float().mean())
    )
    assert linear_probe(carried, labels.numpy(), seed=1) == readable  # seeded folds
    with pytest.raises(ValueError, match="needs at least 10 POIs"):
        linear_probe(carried[:6], labels[:6].numpy())


def test_grouped_folds_stop_the_probe_from_memorising_groups():
    # 40 "dishes" with a random attribute each; the embedding only says which dish a POI serves
    generator = torch.Generator().manual_seed(2)
    dish_of = torch.arange(200) % 40
    attribute = (torch.rand(40, generator=generator) < 0.5).long()
    identity = torch.nn.functional.one_hot(dish_of, 40).double() + 0.01 * torch.randn(
        200, 40, generator=generator
    )
    labels = attribute[dish_of].numpy()
    memorised = linear_probe(identity, labels, seed=1)
    grouped = linear_probe(identity, labels, groups=dish_of.numpy(), seed=1)
    assert memorised["auc"] > 0.95  # every test POI's dish was seen in training
    assert grouped["auc"] < 0.7 and grouped["groups"] == 40  # unseen dishes: nothing to generalise from
    with pytest.raises(ValueError, match="at least 5 groups"):
        linear_probe(identity, labels, groups=(dish_of % 3).numpy())


@pytest.fixture()
def probe_catalog(spark, catalog, world_catalog):
    _, pois, _ = clean_world(spark, world_catalog)
    catalog.write(pois, "clean.pois")
    catalog.write(world_catalog.read(spark, "truth.pois"), "truth.pois")
    write_schema(spark, catalog, SCHEMA)
    return catalog


def test_probe_set_labels_hot_against_cold_from_the_truth(spark, probe_catalog):
    probe = probe_set(spark, probe_catalog, "temperature", max_pois=40, seed=3)
    assert len(probe.poi_ids) == 40 == len(set(probe.poi_ids))
    truth = {r["poi_id"]: r["temperature"] for r in probe_catalog.read(spark, "truth.pois").collect()}
    assert all(truth[p] == (1 if label else -1) for p, label in zip(probe.poi_ids, probe.labels, strict=True))
    dish = {r["poi_id"]: r["dish_idx"] for r in probe_catalog.read(spark, "truth.pois").collect()}
    assert probe.groups == tuple(dish[p] for p in probe.poi_ids)
    assert all(t.startswith("<POI_name>") and t.endswith(">") for t in probe.texts)
    assert probe_set(spark, probe_catalog, "temperature", max_pois=40, seed=3) == probe  # seeded choice
    spicy = probe_set(spark, probe_catalog, "spicy", max_pois=0, seed=3)
    assert len(spicy.poi_ids) == probe_catalog.read(spark, "clean.pois").count()
    with pytest.raises(ValueError, match="probe attribute must be one of"):
        probe_set(spark, probe_catalog, "colour", 10, 3)
    business = probe_set(spark, probe_catalog, "temperature", max_pois=40, seed=3, text="business")
    assert business.poi_ids == probe.poi_ids and business.labels == probe.labels
    assert all("<POI_intro>" in t for t in probe.texts) and not any(
        "<POI_intro>" in t for t in business.texts
    )
    assert all(t.endswith("</POI_dishes>") for t in business.texts)


def test_stage2_reports_the_probe_before_and_after(spark, probe_catalog, tmp_path):
    schema = "pair_type string, anchor_id long, positive_id long, text_a string, text_b string, split string"
    write_schema(spark, probe_catalog, SCHEMA)
    probe_catalog.write(
        spark.createDataFrame(_pair_rows(), schema), "pairs.contrastive", partition_by=["pair_type"]
    )
    tokenizer = tiny_tokenizer()
    model = tiny_llama(tokenizer)
    add_special_tokens(model, tokenizer, SLICES)
    backbone = save_backbone(model, tokenizer, tmp_path / "stage1")
    cfg = _config(backbone, tmp_path, probe_attribute="temperature", probe_max_pois=60, max_steps=1)
    summary = run(spark, probe_catalog, cfg, log=lambda _: None)
    assert summary["probe_pois"] == 60 and 5 <= summary["probe_dishes"] <= 40
    for key in ("probe_auc_temperature", "probe_auc_temperature_start", "probe_accuracy_temperature"):
        assert 0 <= summary[key] <= 1
    assert 0.5 <= summary["probe_majority_accuracy_temperature"] <= 1
