import numpy as np
import pytest

from features import recall
from features.embeddings import texts
from features.embeddings.encoder_runtime import resolve_encoder
from features.embeddings.texts import EmbedTextsConfig
from features.recall import RecallConfig, RecallError
from jobs.config import ConfigError, default_config_path, load_config
from tests.etl.text_fixtures import POIS, POIS_SCHEMA, write_clean
from tests.features.builders import tiny_encoder_model
from training.embedding.encoder import encode_texts

QUIET = lambda _: None  # noqa: E731
SCENE = "a user visiting Chengdu on vacation"
CITY_OF = {1: "Guangzhou", 2: "Chengdu", 3: "Chengdu"}  # tests/etl/text_fixtures.py POIS
DISH_OF = {1: "claypot rice", 2: "dan dan noodles", 3: "beef hotpot"}
DIM = 16  # tiny_encoder_model default


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_encoder_model(tmp_path_factory.mktemp("enc") / "model", max_length=64)


def _write_poi_vectors(spark, catalog, version: str, decoy: np.ndarray) -> dict[int, np.ndarray]:
    """Seeded, deliberately unnormalised vectors for POIs 1-3 and 9 (9 is not in clean.pois), and a
    row of another encoder version that must not be read: `decoy`, the query itself."""
    rng = np.random.default_rng(5)
    vectors = {
        p: (rng.normal(size=DIM) * scale).astype(np.float32)
        for p, scale in {1: 1, 2: 3, 3: 0.5, 9: 2}.items()
    }
    rows = [(p, "text", v.tolist(), version) for p, v in vectors.items()] + [
        (3, "text", decoy.tolist(), "enc-other")
    ]
    schema = "poi_id long, text string, vector array<float>, encoder_version string"
    catalog.write(
        spark.createDataFrame(rows, schema), "features.poi_embeddings", partition_by=["encoder_version"]
    )
    return vectors


def _query(tiny, text: str) -> np.ndarray:
    """`text` embedded by the training-side encoder (not the pyfunc model recall loads)."""
    return encode_texts(tiny[1], tiny[2], [text], max_length=64)[0].numpy().astype(np.float64)


def _reference(vectors: dict[int, np.ndarray], tiny, text: str) -> tuple[list[int], np.ndarray]:
    """POI ids by numpy cosine (best first, ties by id) and their cosines."""
    ids = np.array(list(vectors))
    matrix = np.array(list(vectors.values()), dtype=np.float64)
    query = _query(tiny, text)
    scores = matrix @ query / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(query))
    order = np.lexsort((ids, -scores))
    return ids[order].tolist(), scores[order]


def test_recall_ranks_pois_as_numpy_cosine_over_the_stored_vectors(spark, catalog, tiny):
    catalog.write(spark.createDataFrame(POIS, POIS_SCHEMA), "clean.pois")
    version = resolve_encoder(str(tiny[0]))[0].version
    vectors = _write_poi_vectors(spark, catalog, version, decoy=_query(tiny, f"<user_env>{SCENE}</user_env>"))
    lines = []
    cfg = RecallConfig(scene=SCENE, encoder=str(tiny[0]), top_k=3)
    result = recall.run(spark, catalog, cfg, log=lines.append)

    expected_ids, expected_scores = _reference(vectors, tiny, f"<user_env>{SCENE}</user_env>")
    top = result["top"]
    assert [r["poi_id"] for r in top] == expected_ids[:3] and [r["rank"] for r in top] == [1, 2, 3]
    assert np.allclose([r["cosine"] for r in top], expected_scores[:3], atol=1e-3)
    cities = [CITY_OF.get(i) for i in expected_ids[:3]]  # POI 9 is not in clean.pois: no city
    assert [(r["city"], r["main_dish"]) for r in top] == [
        (CITY_OF.get(i), DISH_OF.get(i)) for i in expected_ids[:3]
    ]
    assert result["in_scene_city"] == cities.count("Chengdu") and result["scene_cities"] == ["Chengdu"]
    assert result["encoder_version"] == version
    first = top[0]
    assert f"1. {first['city']}; {first['main_dish'] or first['name']} ({first['cosine']:.3f})" in lines

    raw = recall.run(spark, catalog, RecallConfig(scene=SCENE, encoder=str(tiny[0]), wrap=False), log=QUIET)
    raw_ids, raw_scores = _reference(vectors, tiny, SCENE)
    assert [r["poi_id"] for r in raw["top"]] == raw_ids  # top_k 10 > 4 POIs: all of them
    assert np.allclose([r["cosine"] for r in raw["top"]], raw_scores, atol=1e-3)
    assert raw["query_text"] == SCENE and not np.allclose(raw_scores, expected_scores)


def test_recall_reads_what_embed_texts_writes(spark, catalog, tiny):
    """The schema contract with `larr embed texts`: its table is what recall scores."""
    write_clean(spark, catalog)
    texts.run(spark, catalog, EmbedTextsConfig(encoder=str(tiny[0]), sides=["poi"], partitions=1), log=QUIET)
    result = recall.run(spark, catalog, RecallConfig(scene=SCENE, encoder=str(tiny[0])), log=QUIET)
    rows = catalog.read(spark, "features.poi_embeddings").collect()
    vectors = {r["poi_id"]: np.array(r["vector"], dtype=np.float32) for r in rows}
    assert [r["poi_id"] for r in result["top"]] == _reference(vectors, tiny, f"<user_env>{SCENE}</user_env>")[
        0
    ]


def test_missing_poi_embeddings_name_the_table_and_the_encoder_version(spark, catalog, tiny):
    cfg = RecallConfig(scene=SCENE, encoder=str(tiny[0]))
    version = resolve_encoder(cfg.encoder)[0].version
    with pytest.raises(RecallError, match=r"features.poi_embeddings does not exist.*larr embed texts"):
        recall.run(spark, catalog, cfg, log=QUIET)
    other = spark.createDataFrame(
        [(1, [1.0, 0.0], "enc-other")], "poi_id long, vector array<float>, encoder_version string"
    )
    catalog.write(other, "features.poi_embeddings", partition_by=["encoder_version"])
    with pytest.raises(RecallError, match=rf"no rows for encoder version {version}.*--set encoder="):
        recall.run(spark, catalog, cfg, log=QUIET)


def test_query_text_strips_registry_tokens_before_wrapping():
    typed = "visiting <user_env>Chengdu</POI_name> on <b>vacation</b>"
    assert recall.query_text(RecallConfig(scene=typed)) == (
        "<user_env>visiting Chengdu on <b>vacation</b></user_env>"
    )
    assert recall.query_text(RecallConfig(scene=typed, slice="scene_city", wrap=False)) == (
        "visiting Chengdu on <b>vacation</b>"
    )
    assert recall.query_text(RecallConfig(scene=typed, slice="scene_city")).startswith("<scene_city>visiting")


def test_scene_cities_match_whole_words_and_provinces():
    assert recall.scene_cities("a user visiting Guangdong on vacation") == ["Guangzhou", "Shenzhen"]
    assert recall.scene_cities("lunch in XI'AN, then chengdu") == ["Chengdu", "Xi'an"]
    assert recall.scene_cities("a rainy evening at home") == []
    assert recall.scene_cities("Chengdudu") == []


def test_config_checks_and_yaml():
    for scene in ("", "   ", "<user_env></user_env>"):
        with pytest.raises(ValueError, match="scene: "):
            RecallConfig(scene=scene)
    with pytest.raises(ValueError, match="top_k"):
        RecallConfig(scene=SCENE, top_k=0)
    with pytest.raises(ValueError, match="slice: unknown slice 'user_mood'"):
        RecallConfig(scene=SCENE, slice="user_mood")
    path = default_config_path("recall")
    assert load_config(RecallConfig, path, [f"scene={SCENE}"]) == RecallConfig(scene=SCENE)
    with pytest.raises(ConfigError, match="scene: "):
        load_config(RecallConfig, path)
