import numpy as np
import pytest

from core.schema_table import write_schema
from features import recall
from features.embeddings import texts
from features.embeddings.encoder_runtime import resolve_encoder
from features.embeddings.texts import EmbedTextsConfig
from features.recall import RecallConfig, RecallError
from jobs.config import ConfigError, default_config_path, load_config
from tests.etl.text_fixtures import POIS, POIS_SCHEMA, SCHEMA, write_clean
from tests.features.builders import tiny_encoder_model
from training.embedding.encoder import encode_texts

QUIET = lambda _: None  # noqa: E731
SCENE = "a user visiting Chengdu on vacation"
# tests/etl/text_fixtures.py POIS: name, then the synthetic schema's categorical fields
NAME_OF = {1: "Aunt Li's Claypot", 2: "Noodle No. 7", 3: "Hotpot King"}
FIELDS_OF = {
    1: {"city": "Guangzhou", "cuisine": "Cantonese", "price_level": "2"},
    2: {"city": "Chengdu", "cuisine": "Noodles", "price_level": "1"},
    3: {"city": "Chengdu", "cuisine": "Hotpot", "price_level": "4"},
}
NO_FIELDS = {"city": None, "cuisine": None, "price_level": None}
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
    write_schema(spark, catalog, SCHEMA)
    version = resolve_encoder(str(tiny[0]))[0].version
    vectors = _write_poi_vectors(spark, catalog, version, decoy=_query(tiny, f"<user_env>{SCENE}</user_env>"))
    lines = []
    cfg = RecallConfig(scene=SCENE, encoder=str(tiny[0]), top_k=3)
    result = recall.run(spark, catalog, cfg, log=lines.append)

    expected_ids, expected_scores = _reference(vectors, tiny, f"<user_env>{SCENE}</user_env>")
    top = result["top"]
    assert [r["poi_id"] for r in top] == expected_ids[:3] and [r["rank"] for r in top] == [1, 2, 3]
    assert np.allclose([r["cosine"] for r in top], expected_scores[:3], atol=1e-3)
    # POI 9 is not in clean.pois: its id as title, no fields
    assert [(r["title"], r["fields"]) for r in top] == [
        (NAME_OF.get(i, f"item {i}"), FIELDS_OF.get(i, NO_FIELDS)) for i in expected_ids[:3]
    ]
    chengdu = [FIELDS_OF.get(i, NO_FIELDS)["city"] == "Chengdu" for i in expected_ids[:3]]
    assert [r["in_scene"] for r in top] == [["city=Chengdu"] if c else [] for c in chengdu]
    assert result["in_scene"] == sum(chengdu) and result["scene_values"] == (
        ["city=Chengdu"] if any(chengdu) else []
    )
    assert result["encoder_version"] == version and result["slice"] == "user_env"
    first = top[0]
    described = "; ".join(v for v in first["fields"].values() if v)
    title = f"1. {first['title']}" + (f" ({described})" if described else "")
    assert f"{title} {first['cosine']:.3f}" in lines

    raw = recall.run(spark, catalog, RecallConfig(scene=SCENE, encoder=str(tiny[0]), wrap=False), log=QUIET)
    raw_ids, raw_scores = _reference(vectors, tiny, SCENE)
    assert [r["poi_id"] for r in raw["top"]] == raw_ids  # top_k 10 > 4 POIs: all of them
    assert [r["title"] for r in raw["top"]] == [NAME_OF.get(i, f"item {i}") for i in raw_ids]  # 9: its id
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
    write_schema(spark, catalog, SCHEMA)
    with pytest.raises(RecallError, match=r"features.poi_embeddings does not exist.*larr embed texts"):
        recall.run(spark, catalog, cfg, log=QUIET)
    other = spark.createDataFrame(
        [(1, [1.0, 0.0], "enc-other")], "poi_id long, vector array<float>, encoder_version string"
    )
    catalog.write(other, "features.poi_embeddings", partition_by=["encoder_version"])
    with pytest.raises(RecallError, match=rf"no rows for encoder version {version}.*--set encoder="):
        recall.run(spark, catalog, cfg, log=QUIET)


def test_query_text_strips_slice_tokens_before_wrapping():
    typed = "visiting <user_env>Chengdu</POI_name> on <b>vacation</b>"
    assert recall.query_text(RecallConfig(scene=typed, slice="user_env")) == (
        "<user_env>visiting Chengdu on vacation</user_env>"
    )
    assert recall.query_text(RecallConfig(scene=typed, wrap=False)) == "visiting Chengdu on vacation"
    assert recall.query_text(RecallConfig(scene=typed, slice="scene_city")).startswith("<scene_city>visiting")


def test_the_default_slice_and_a_slice_the_dataset_lacks():
    assert recall.default_slice(SCHEMA) == "user_env"
    recall.check_slice(SCHEMA, "scene_city")
    with pytest.raises(RecallError, match="slice: user_mood is not a slice of dataset"):
        recall.check_slice(SCHEMA, "user_mood")


def test_named_values_match_whole_words_case_insensitively():
    fields = {"city": "Xi'an", "cuisine": "Noodles", "price_level": "2", "brand": None}
    assert recall.named_values("lunch in XI'AN, then noodles", fields) == ["city=Xi'an", "cuisine=Noodles"]
    assert recall.named_values("a rainy evening at home", fields) == []
    assert recall.named_values("Xi'anese noodle", fields) == []


def test_config_checks_and_yaml():
    for scene in ("", "   ", "<user_env></user_env>"):
        with pytest.raises(ValueError, match="scene: "):
            RecallConfig(scene=scene)
    with pytest.raises(ValueError, match="top_k"):
        RecallConfig(scene=SCENE, top_k=0)
    with pytest.raises(ValueError, match="slice: bad slice name 'user mood'"):
        RecallConfig(scene=SCENE, slice="user mood")
    path = default_config_path("recall")
    assert load_config(RecallConfig, path, [f"scene={SCENE}"]) == RecallConfig(scene=SCENE)
    with pytest.raises(ConfigError, match="scene: "):
        load_config(RecallConfig, path)
