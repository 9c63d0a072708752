import numpy as np
import pytest

from features.embeddings import texts
from features.embeddings.encoder_runtime import get_encoder, resolve_encoder
from features.embeddings.export import ExportTooLarge
from features.embeddings.texts import EmbedTextsConfig
from features.embeddings.vectors import load_scene_meta, load_scene_vectors
from jobs.config import default_config_path, load_config
from tests.etl.text_fixtures import POIS, POIS_SCHEMA, write_clean
from tests.features.builders import tiny_encoder_model

QUIET = lambda _: None  # noqa: E731


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_encoder_model(tmp_path_factory.mktemp("enc") / "model", max_length=64)


def test_embed_texts_matches_the_encoder_and_reembeds_only_changed_texts(spark, catalog, tiny):
    write_clean(spark, catalog)
    cfg = EmbedTextsConfig(encoder=str(tiny[0]), history_end_date="2026-04-08", batch_size=2, partitions=1)
    first = texts.run(spark, catalog, cfg, log=QUIET)
    assert (first["poi_embedded"], first["user_embedded"], first["embedded"]) == (
        3,
        2,
        5,
    )  # user 12 never clicked
    assert first["skipped_existing"] == 0 and first["poi_rejected"] == 0
    pois = {r["poi_id"]: r for r in catalog.read(spark, "features.poi_embeddings").collect()}
    users = {r["user_id"]: r for r in catalog.read(spark, "features.user_embeddings").collect()}
    assert sorted(pois) == [1, 2, 3] and sorted(users) == [10, 11]
    assert pois[1]["text"].startswith("<POI_name>Aunt Li's Claypot</POI_name><POI_loc>")
    assert users[10]["text"].startswith("<user_profile>") and users[10]["text"].endswith("</user_price>")
    model = get_encoder(resolve_encoder(cfg.encoder)[0])
    rows = list(pois.values()) + list(users.values())
    direct, _ = model.embed([r["text"] for r in rows], batch_size=2)
    assert np.allclose(np.array([r["vector"] for r in rows]), direct, atol=1e-5)
    # the compact export larr_plus reads: each side's ids and vectors, then its unknown (mean) row
    exported = load_scene_vectors(first["export_path"])
    meta = load_scene_meta(first["export_path"])
    assert first["export_path"].endswith(f"_exports/text_vectors/{meta['encoder_version']}.npz")
    assert meta["encoder_uri"] == resolve_encoder(cfg.encoder)[0].uri and set(exported) == {"poi", "user"}
    assert exported["poi"].ids.tolist() == [1, 2, 3] and exported["user"].ids.tolist() == [10, 11]
    assert np.allclose(exported["user"].matrix[:2], np.array([users[10]["vector"], users[11]["vector"]]))
    assert exported["poi"].matrix.shape == (4, len(pois[1]["vector"]))

    again = texts.run(spark, catalog, cfg, log=QUIET)
    assert (again["embedded"], again["skipped_existing"]) == (0, 5)

    changed = [(p[0], p[1] + " II", *p[2:]) if p[0] == 1 else p for p in POIS]
    catalog.write(spark.createDataFrame(changed, POIS_SCHEMA), "clean.pois")
    third = texts.run(spark, catalog, EmbedTextsConfig(**{**cfg.__dict__, "sides": ["poi"]}), log=QUIET)
    assert (third["poi_embedded"], third["poi_skipped_existing"]) == (1, 2) and "user_embedded" not in third
    updated = {r["poi_id"]: r for r in catalog.read(spark, "features.poi_embeddings").collect()}
    assert len(updated) == 3 and updated[1]["text_hash"] != pois[1]["text_hash"]
    assert updated[1]["text"].startswith("<POI_name>Aunt Li's Claypot II</POI_name>")
    assert updated[2]["vector"] == pois[2]["vector"]
    # a POI-only run still exports the user vectors an earlier run embedded, and the new POI text
    exported = load_scene_vectors(third["export_path"])
    assert exported["user"].ids.tolist() == [10, 11]
    assert np.allclose(exported["poi"].matrix[0], updated[1]["vector"])
    # an export the driver should not hold is refused in one line
    with pytest.raises(ExportTooLarge, match=r"features.poi_embeddings holds 3 vectors .* max_export_rows=2"):
        texts.run(spark, catalog, EmbedTextsConfig(**{**cfg.__dict__, "max_export_rows": 2}), log=QUIET)


def test_blank_texts_are_rejects(spark):
    df = spark.createDataFrame(
        [(1, "<POI_name>A</POI_name>"), (2, None), (3, " ")], "poi_id long, text string"
    )
    valid, rejects = texts.split_texts(df, "poi", "enc-1")
    assert [r["poi_id"] for r in valid.collect()] == [1] and len(valid.first()["text_hash"]) == 64
    assert sorted(tuple(r) for r in rejects.collect()) == [
        ("poi", "2", None, "empty text", "enc-1"),
        ("poi", "3", " ", "empty text", "enc-1"),
    ]


def test_yaml_defaults_and_config_checks():
    assert load_config(EmbedTextsConfig, default_config_path("embed_texts")) == EmbedTextsConfig()
    with pytest.raises(ValueError, match="sides"):
        EmbedTextsConfig(sides=["shop"])
    with pytest.raises(ValueError, match="history_end_date"):
        EmbedTextsConfig(history_end_date="soon")
    with pytest.raises(ValueError, match="max_export_rows must be >= 1"):
        EmbedTextsConfig(max_export_rows=0)
