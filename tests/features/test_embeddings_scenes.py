import numpy as np
import pytest

from core import tracking
from etl.tokens import wrap_text
from features.embeddings import scenes
from features.embeddings.encoder_runtime import EmbedError, get_encoder, resolve_encoder
from features.embeddings.scenes import EmbedScenesConfig
from features.embeddings.vectors import load_scene_meta, load_scene_vectors
from jobs.config import default_config_path, load_config
from tests.features.builders import tiny_encoder_model, write_scene_dictionary

QUIET = lambda _: None  # noqa: E731
LONG = "a sunny holiday weekend by the river with friends and family " * 3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_encoder_model(tmp_path_factory.mktemp("enc") / "model", max_length=10)


def test_embed_scenes_incremental_rejects_truncation_and_export(spark, catalog, tiny):
    values = [("weather", "rainy", 5), ("weather", "sunny", 7), ("city", "Chengdu", 9), ("day_type", LONG, 2)]
    write_scene_dictionary(spark, catalog, values + [("city", None, 1), ("city", " ", 1)])
    cfg = EmbedScenesConfig(encoder=str(tiny[0]), batch_size=2, partitions=2)
    first = scenes.run(spark, catalog, cfg, log=QUIET)
    assert (first["embedded"], first["skipped_existing"], first["rejected"], first["truncated"]) == (
        4,
        0,
        2,
        1,
    )
    assert first["vectors"] == 4 and first["texts_per_s"] > 0 and first["dim"] == 16
    table = catalog.read(spark, "features.scene_embeddings")
    assert table.columns == list(scenes.COLUMNS)
    got = {(r["feature"], r["value"]): r for r in table.collect()}
    assert sorted(got) == sorted((f, v) for f, v, _ in values)
    texts = [wrap_text(f"scene_{f}", v) for f, v, _ in values]
    direct, cut = get_encoder(resolve_encoder(cfg.encoder)[0]).embed(texts, batch_size=2)
    stored = np.array([got[(f, v)]["vector"] for f, v, _ in values])
    assert np.allclose(stored, direct, atol=1e-5) and stored.shape == (4, 16)
    assert [got[(f, v)]["truncated"] for f, v, _ in values] == cut.tolist() == [False, False, False, True]
    assert {r["encoder_version"] for r in got.values()} == {first["encoder_version"]}
    rejects = catalog.read(spark, "features.embedding_rejects").collect()
    assert sorted((r["source"], r["key"], r["reason"]) for r in rejects) == [
        ("scene", "city= ", "empty value"),
        ("scene", "city=<null>", "null value"),
    ]

    exported = load_scene_vectors(first["export_path"])
    ids, matrix = exported["weather"]
    order = np.argsort([got[("weather", v)]["scene_id"] for v in ("rainy", "sunny")])
    assert ids.tolist() == sorted(got[("weather", v)]["scene_id"] for v in ("rainy", "sunny"))
    assert np.allclose(matrix[:2], stored[:2][order], atol=1e-6) and matrix.shape == (3, 16)
    assert load_scene_meta(first["export_path"])["encoder_version"] == first["encoder_version"]
    rows, unknown = exported["city"].rows([got[("city", "Chengdu")]["scene_id"], 12345])
    assert rows.tolist() == [0, 1] and unknown == 1

    again = scenes.run(spark, catalog, cfg, log=QUIET)  # nothing new: no embedding, no new version
    assert (again["embedded"], again["skipped_existing"], again["rejected"]) == (0, 4, 2)
    assert (
        again["output_versions"]["features.scene_embeddings"]
        == first["output_versions"]["features.scene_embeddings"]
    )
    assert catalog.read(spark, "features.scene_embeddings").count() == 4

    write_scene_dictionary(spark, catalog, values + [("weather", "foggy", 1)])  # one new value
    third = scenes.run(spark, catalog, cfg, log=QUIET)
    assert (third["embedded"], third["skipped_existing"], third["rejected"]) == (1, 4, 0)
    assert catalog.read(spark, "features.scene_embeddings").count() == 5
    assert catalog.read(spark, "features.embedding_rejects").count() == 0  # the run's rejects replaced
    assert len(load_scene_vectors(third["export_path"])["weather"].ids) == 3


def test_an_encoder_that_does_not_load_fails_before_any_spark_work(spark, catalog, tmp_path):
    write_scene_dictionary(spark, catalog, [("weather", "rainy", 1)])
    tracking.configure(catalog.root)  # this lakehouse's empty store: no stage-2 run to resolve
    with pytest.raises(EmbedError, match="latest:contrastive: no finished run .* `larr train contrastive`"):
        scenes.run(spark, catalog, EmbedScenesConfig(), log=QUIET)
    with pytest.raises(EmbedError, match="set encoder="):
        scenes.run(spark, catalog, EmbedScenesConfig(encoder=""), log=QUIET)
    with pytest.raises(EmbedError, match=str(tmp_path / "missing")):
        scenes.run(spark, catalog, EmbedScenesConfig(encoder=str(tmp_path / "missing")), log=QUIET)
    assert not catalog.exists(spark, "features.scene_embeddings")
    assert not catalog.exists(spark, "features.embedding_rejects")


def test_yaml_defaults_and_config_checks():
    cfg = load_config(EmbedScenesConfig, default_config_path("embed_scenes"))
    assert cfg == EmbedScenesConfig()
    for bad in ({"batch_size": 0}, {"partitions": -1}, {"precision": "int8"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            EmbedScenesConfig(**bad)
