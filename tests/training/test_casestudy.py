"""larr casestudy: typed scenes with targets from the truth table, scored per encoder against a
numpy reference over the same vectors; bad input is one line naming the case, target or encoder."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from features.embeddings.encoder_runtime import resolve_encoder
from tests.etl.text_fixtures import POIS, write_clean
from tests.features.builders import tiny_encoder_model
from training.embedding import casestudy
from training.embedding.casestudy import Case, CaseStudyConfig, CaseStudyError
from training.embedding.encoder import encode_texts

QUIET = lambda _: None  # noqa: E731
DIM = 16
CITIES = {"Guangzhou": "Guangdong", "Chengdu": "Sichuan", "Harbin": "Heilongjiang", "Xi'an": "Shaanxi"}
N_POIS = 16
CASES = [
    Case(
        "vacation", "a user visiting {city} on vacation", "dish_province = {province}", ["city", "province"]
    ),
    Case("place", "a shop in {city}", "city = {city}", ["city"]),  # Xi'an: a quote inside the literal
    Case("weather", "a hot summer afternoon", "temperature = -1"),
]


def _city(poi_id: int) -> str:
    return list(CITIES)[poi_id % len(CITIES)]


def _pois() -> list[tuple]:
    """N_POIS shops: the fixture's rows with new ids, names and cities."""
    rows = []
    for i in range(1, N_POIS + 1):
        row = list(POIS[i % len(POIS)])
        row[0], row[1], row[2] = i, f"Shop {i}", _city(i)
        rows.append(tuple(row))
    return rows


def _truth_rows() -> list[tuple]:
    """The shops' hidden facts: a Sichuan dish in Chengdu shops 2 and 6 and Guangzhou shop 4, no
    Heilongjiang dish anywhere (Harbin's vacation scene: left out), cold food on every third shop."""
    local = {2: "Sichuan", 6: "Sichuan", 4: "Sichuan", 8: "Guangdong", 3: "Shaanxi"}
    return [
        (i, CITIES[_city(i)], local.get(i, ""), -1 if i % 3 == 0 else 1, "any") for i in range(1, N_POIS + 1)
    ]


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    folder = tmp_path_factory.mktemp("encoders")
    return {
        "first": tiny_encoder_model(folder / "first", max_length=64, seed=0),
        "second": tiny_encoder_model(folder / "second", max_length=64, seed=1),
    }


@pytest.fixture()
def lakehouse(spark, catalog):
    write_clean(spark, catalog, pois=_pois())
    truth = spark.createDataFrame(
        _truth_rows(), "poi_id long, province string, dish_province string, temperature int, meal string"
    )
    catalog.write(truth, "truth.pois")
    return catalog


def _write_vectors(spark, catalog, version: str) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(7)
    vectors = {i: rng.normal(size=DIM).astype(np.float32) for i in range(1, N_POIS + 1)}
    rows = [(i, "text", "hash", v.tolist(), False, "uri", version) for i, v in vectors.items()]
    schema = (  # as `larr embed texts` writes it
        "poi_id long, text string, text_hash string, vector array<float>, truncated boolean,"
        " encoder_uri string, encoder_version string"
    )
    catalog.write(
        spark.createDataFrame(rows, schema), "features.poi_embeddings", partition_by=["encoder_version"]
    )
    return vectors


def _reference(
    vectors: dict[int, np.ndarray], encoder, scene: str, fits, top_k: int
) -> tuple[float, list[int]]:
    """Precision@top_k and the recalled ids by numpy cosine (ties by id)."""
    ids = np.array(sorted(vectors))
    matrix = np.array([vectors[i] for i in ids], dtype=np.float64)
    query = encode_texts(encoder[1], encoder[2], [f"<user_env>{scene}</user_env>"], max_length=64)[0].numpy()
    scores = matrix @ query / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(query))
    top = ids[np.lexsort((ids, -scores))][:top_k].tolist()
    return sum(fits(i) for i in top) / top_k, top


def test_scores_every_scene_as_numpy_and_embeds_an_encoder_without_vectors(spark, lakehouse, encoders):
    first_version = resolve_encoder(str(encoders["first"][0]))[0].version
    first_vectors = _write_vectors(spark, lakehouse, first_version)
    cfg = CaseStudyConfig(
        encoders={label: str(enc[0]) for label, enc in encoders.items()}, cases=CASES, top_k=3
    )
    lines = []
    result = casestudy.run(spark, lakehouse, cfg, log=lines.append)

    # Harbin has no Heilongjiang dish: its vacation scene is left out; every city has a shop
    assert result["skipped"] == ["a user visiting Harbin on vacation"]
    scenes = [s["scene"] for s in result["scenes"]]
    assert scenes == [
        *(f"a user visiting {c} on vacation" for c in sorted(CITIES) if c != "Harbin"),
        *(f"a shop in {c}" for c in sorted(CITIES)),
        "a hot summer afternoon",
    ]
    assert result["scenes"][-1]["target"] == "temperature = -1"
    assert "city = 'Xi\\'an'" in [s["target"] for s in result["scenes"]]

    # the second encoder had no vectors: embedded by the POI side of `larr embed texts`
    second_version = resolve_encoder(str(encoders["second"][0]))[0].version
    stored = lakehouse.read(spark, "features.poi_embeddings").where(f"encoder_version = '{second_version}'")
    second_vectors = {r["poi_id"]: np.array(r["vector"], dtype=np.float32) for r in stored.collect()}
    assert sorted(second_vectors) == list(range(1, N_POIS + 1))
    assert result["encoder_versions"] == {"first": first_version, "second": second_version}

    truth = {r[0]: r for r in _truth_rows()}
    targets = {
        "vacation": lambda scene: (
            lambda i: truth[i][2] == CITIES[scene.split("visiting ")[1].split(" on")[0]]
        ),
        "place": lambda scene: lambda i: _city(i) == scene.removeprefix("a shop in "),
        "weather": lambda scene: lambda i: truth[i][3] == -1,
    }
    for label, vectors in (("first", first_vectors), ("second", second_vectors)):
        precisions = []
        for scene in result["scenes"]:
            fits = targets[scene["group"]](scene["scene"])
            precision, top = _reference(vectors, encoders[label], scene["scene"], fits, top_k=3)
            got = scene[label]
            assert got["precision"] == pytest.approx(precision, abs=1e-4), (label, scene["scene"])
            assert [t["poi_id"] for t in got["top"]] == top
            assert [t["fit"] for t in got["top"]] == [fits(i) for i in top]
            assert [t["title"] for t in got["top"]] == [f"Shop {i}" for i in top]
            fitting = sum(fits(i) for i in range(1, N_POIS + 1))
            assert got["fitting"] == fitting and got["pool"] == N_POIS
            assert got["random"] == pytest.approx(fitting / N_POIS, abs=1e-4)
            assert got["ideal"] == min(fitting, 3) / 3
            precisions.append(precision)
        assert result[f"precision_at_3_{label}"] == pytest.approx(np.mean(precisions), abs=1e-4)
    duel = result["summary"]["last_against"]
    assert duel["encoder"] == "second"
    diffs = [s["second"]["precision"] - s["first"]["precision"] for s in result["scenes"]]
    assert duel["others"]["first"]["wins"] == sum(d > 0 for d in diffs)
    assert duel["others"]["first"]["losses"] == sum(d < 0 for d in diffs)
    assert result["precision_at_3_random_weather"] == pytest.approx(
        sum(r[3] == -1 for r in truth.values()) / N_POIS, abs=1e-4
    )
    # centred: the mean shop vector subtracted before the cosine, as numpy does it
    mean = np.mean([v for v in first_vectors.values()], axis=0)
    shifted = {i: v - mean for i, v in first_vectors.items()}
    centred = casestudy.run(
        spark, lakehouse, replace(cfg, encoders={"first": cfg.encoders["first"]}, center=True), log=QUIET
    )
    for scene in centred["scenes"]:
        fits = targets[scene["group"]](scene["scene"])
        precision, top = _reference(shifted, encoders["first"], scene["scene"], fits, top_k=3)
        assert [t["poi_id"] for t in scene["first"]["top"]] == top
        assert scene["first"]["precision"] == pytest.approx(precision, abs=1e-4)
    table = Path(result["table"]).read_text()
    assert "| second |" in table and "a user visiting Xi'an on vacation" in table
    assert any(line.startswith("casestudy: second") for line in lines)
    assert Path(result["plot"]).read_bytes()[:4] == b"\x89PNG"


def test_bad_cases_and_encoders_are_one_line_naming_them(spark, lakehouse, encoders, tmp_path):
    source = str(encoders["first"][0])
    with pytest.raises(ValueError, match=r"cases\[0\]: placeholder \{city\} is not in for_each"):
        CaseStudyConfig(encoders={"a": source}, cases=[Case("g", "visiting {city}", "x = 1")])
    with pytest.raises(ValueError, match="label 'full model' must be letters"):
        CaseStudyConfig(encoders={"full model": source})

    def run(*cases, **settings):
        settings = {"encoders": {"a": source}, "cases": list(cases), **settings}
        return casestudy.run(spark, lakehouse, CaseStudyConfig(**settings), log=QUIET)

    with pytest.raises(CaseStudyError, match=r"target 'no_such_column = 1' of scene 'hot'"):
        run(Case("g", "hot", "no_such_column = 1"))
    with pytest.raises(CaseStudyError, match=r"target 'temperature = = 1' of scene 'hot'"):
        run(Case("g", "hot", "temperature = = 1"))
    with pytest.raises(CaseStudyError, match=r"cases\[1\].for_each: column 'town' is in neither"):
        run(Case("g", "hot", "temperature = -1"), Case("g", "in {town}", "true", ["town"]))
    with pytest.raises(CaseStudyError, match="no scene has a shop that fits"):
        run(Case("g", "breakfast", "meal = 'breakfast'"))
    with pytest.raises(CaseStudyError, match=r"cases expand into more than max_scenes = 2"):
        run(Case("g", "in {city}", "true", ["city"]), max_scenes=2)
    with pytest.raises(CaseStudyError, match=r"encoders.missing: .*nowhere"):
        casestudy.run(
            spark, lakehouse, CaseStudyConfig(encoders={"missing": str(tmp_path / "nowhere")}), log=QUIET
        )
    with pytest.raises(
        CaseStudyError, match=r"encoders.a: features.poi_embeddings has no rows .*larr embed texts"
    ):
        run(Case("g", "hot", "temperature = -1"), embed_missing=False)
    with pytest.raises(CaseStudyError, match="truth.absent does not exist"):
        run(Case("g", "hot", "temperature = -1"), truth_table="truth.absent")
