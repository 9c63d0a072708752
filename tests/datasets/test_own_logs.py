"""Two datasets that are not the synthetic world, end to end at tiny size, with no code change:
only a mapping with its dataset schema. Each goes ingest -> clean -> stage-1 corpus -> stage-2
pairs -> scene dictionary -> statistics -> CTR samples -> stage 1 and stage 2 on a tiny random Llama (the dataset's own
slice tokens) -> scene and text vectors of that encoder -> DeepFM, PLE and LARR -> the LARR
scoring pyfunc on raw rows.

(a) a positive-only app-usage log: 8 categorical context fields, no list position, no conversion
    label, no timestamp finer than a day (the part of the day is a field), a usage count, items
    with a name, a category and a description, some with no text at all;
(b) a click log with a conversion label, 3 scene features (a column, a bucketed numeric, a
    derivation from the timestamp), two item categorical fields and one user numeric field.
"""

from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml

from jobs.cli import main
from jobs.commands import COMMANDS

pytestmark = pytest.mark.slow
CONTEXT = {  # app usage: 8 categorical context fields and their values
    "daypart": ["morning", "afternoon", "evening", "night"],
    "weekday": ["workday", "weekend"],
    "place": ["home", "work", "transit"],
    "weather": ["clear", "rain"],
    "network": ["wifi", "cellular"],
    "battery": ["low", "ok"],
    "headphones": ["on", "off"],
    "activity": ["still", "walking"],
}
CATEGORIES = ["music", "news", "games", "maps", "chat"]


def _write_csv(path: Path, header: list[str], rows: list[tuple]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def app_usage_export(folder: Path, seed: int = 0) -> Path:
    """Users' app launches over 4 days; the app's category depends on the place and the daypart."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    apps = []
    for app in range(1, 41):
        category = CATEGORIES[app % len(CATEGORIES)]
        text = app % 7 != 0  # some apps have no text at all
        apps.append(
            (app, f"App {app}" if text else "", category, f"A {category} app, number {app}." if text else "")
        )
    _write_csv(folder / "apps.csv", ["app_id", "title", "category", "about"], apps)
    _write_csv(folder / "people.csv", ["person"], [(u,) for u in range(1, 61)])
    events = []
    for event in range(1, 1601):
        context = {k: rng.choice(v) for k, v in CONTEXT.items()}
        preferred = {"home": "games", "work": "chat", "transit": "maps"}[context["place"]]
        category = preferred if rng.random() < 0.6 else rng.choice(CATEGORIES)
        app = rng.choice([a[0] for a in apps if a[2] == category])
        day = f"2026-05-0{1 + event % 4}"
        events.append((event, rng.randint(1, 60), app, day, *context.values(), rng.randint(1, 9)))
    _write_csv(folder / "launches.csv", ["id", "person", "app", "day", *CONTEXT, "uses"], events)
    mapping = {
        "version": 1,
        "schema": {
            "name": "app-usage",
            "events": {"positive_only": True, "weight": "uses", "columns": {"uses": "int"}, "test_days": 1},
            "scene_features": [
                {"name": name, "column": name, "template": f"{name}: {{value}}"} for name in CONTEXT
            ],
            "items": {
                "text": [
                    {"name": "app_title", "fields": ["title"]},
                    {"name": "app_about", "fields": ["about"], "role": "target", "contrastive": "basic"},
                ],
                "categorical": ["category"],
                "required": ["category"],
            },
        },
        "users": {"path": "people.csv", "columns": {"person": "user_id"}},
        "pois": {"path": "apps.csv", "columns": {"app_id": "poi_id"}},
        "impressions": {
            "path": "launches.csv",
            "columns": {"id": "event_id", "person": "user_id", "app": "poi_id", "day": "ts"},
        },
    }
    path = folder / "mapping.yaml"
    path.write_text(yaml.safe_dump(mapping, sort_keys=False))
    return path


def click_log_export(folder: Path, seed: int = 1) -> Path:
    """Impressions with clicks and orders; warm weather and evenings favour the drinks shops."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    shops = [
        (s, f"Shop {s}", ["drinks", "meals"][s % 2], ["cheap", "dear"][s // 2 % 2]) for s in range(1, 31)
    ]
    _write_csv(folder / "shops.csv", ["shop", "label", "kind", "price_band"], shops)
    _write_csv(folder / "buyers.csv", ["buyer", "age"], [(u, rng.randint(18, 70)) for u in range(1, 51)])
    rows = []
    for event in range(1, 2401):
        shop = rng.choice(shops)
        hour, temperature = rng.randint(0, 23), round(rng.uniform(-5, 35), 1)
        warm = temperature > 22 or hour >= 18
        p = 0.45 if (shop[2] == "drinks") == warm else 0.1
        click = int(rng.random() < p)
        order = int(click and rng.random() < 0.4)
        ts = f"2026-06-0{1 + event % 5}T{hour:02d}:{rng.randint(0, 59):02d}:00Z"
        rows.append(
            (
                event,
                rng.randint(1, 50),
                shop[0],
                ts,
                rng.choice(["ios", "android"]),
                temperature,
                click,
                order,
            )
        )
    _write_csv(folder / "log.csv", ["id", "buyer", "shop", "at", "os", "temp", "click", "order"], rows)
    mapping = {
        "version": 1,
        "schema": {
            "name": "click-log",
            "events": {"conversion": True, "test_days": 1},
            "scene_features": [
                {"name": "os", "column": "os"},
                {
                    "name": "warmth",
                    "column": "temp",
                    "column_type": "double",
                    "buckets": {"edges": [10, 22], "labels": ["cold", "mild", "warm"]},
                    "template": "it is {value}",
                },
                {"name": "daypart", "derive": "part_of_day"},
            ],
            "users": {"numeric": [{"column": "age", "transform": "none"}]},
            "items": {
                "text": [
                    {"name": "shop_label", "fields": ["label"]},
                    {"name": "shop_kind", "fields": ["kind"], "template": "sells {value}", "role": "target"},
                ],
                "categorical": ["kind", "price_band"],
            },
        },
        "users": {"path": "buyers.csv", "columns": {"buyer": "user_id"}},
        "pois": {"path": "shops.csv", "columns": {"shop": "poi_id"}},
        "impressions": {
            "path": "log.csv",
            "columns": {
                "id": "event_id",
                "buyer": "user_id",
                "shop": "poi_id",
                "at": "ts",
                "click": "clicked",
                "order": "ordered",
            },
        },
    }
    path = folder / "mapping.yaml"
    path.write_text(yaml.safe_dump(mapping, sort_keys=False))
    return path


def _larr(*args: str) -> None:
    assert main(list(args)) == 0, args


def _pipeline(
    lakehouse: Path, mapping: Path, samples_mode: str, tmp_path: Path, missing_pairs: tuple[str, ...]
) -> dict:
    """Every job from the export to three trained CTR models; returns what the test checks.
    `missing_pairs`: the stage-2 pair types the dataset has no text for (weighted 0)."""
    from core.catalog import TableCatalog
    from core.schema_table import read_schema
    from features.embeddings.export import EXPORT_DIR
    from training.lm.backbone import save_backbone
    from training.lm.tiny import tiny_llama, tiny_tokenizer

    lh = ["--lakehouse", str(lakehouse)]
    _larr("etl", "ingest", *lh, "--set", f"mapping={mapping}")
    _larr("etl", "clean", *lh)
    _larr("etl", "corpus", *lh)
    _larr("etl", "pairs", *lh)
    _larr("features", "scene", *lh)
    _larr("features", "stats", *lh)
    _larr("etl", "samples", *lh, "--set", f"mode={samples_mode}")
    catalog = TableCatalog.resolve(str(lakehouse))
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    # re-runs with unchanged config and inputs are up to date: no table gets a new version
    written = [t for name in ("features stats", "etl samples") for t in COMMANDS[name].writes]
    versions = {t: catalog.latest_version(spark, t) for t in written}
    _larr("features", "stats", *lh)
    _larr("etl", "samples", *lh, "--set", f"mode={samples_mode}")
    assert {t: catalog.latest_version(spark, t) for t in written} == versions
    schema = read_schema(spark, catalog)
    # stages 1 and 2 on a tiny random Llama: the dataset's own slice tokens, no synthetic ones
    tokenizer = tiny_tokenizer()
    backbone = save_backbone(tiny_llama(tokenizer), tokenizer, tmp_path / "tiny")
    quick = ["--set", "device=cpu", "--set", "progress=false", "--set", "train_layers=1"]
    _larr(
        "train", "cpt", *lh, *quick, "--set", f"backbone={backbone}", "--set", "max_steps=2",
        "--set", "batch_size=4", "--set", "max_length=48", "--set", "heldout_max_rows=8",
        "--set", f"checkpoint_dir={tmp_path / 'ck' / 'cpt'}",
    )  # fmt: skip
    _larr(
        "train", "contrastive", *lh, *quick, "--set", "backbone=latest:cpt", "--set", "base_model=",
        "--set", "probe_attribute=", "--set", "dim=16", "--set", "max_length=40", "--set", "batch_size=4",
        "--set", "max_steps=2", "--set", f"checkpoint_dir={tmp_path / 'ck' / 'contrastive'}",
        *[arg for pair_type in missing_pairs for arg in ("--set", f"weight_{pair_type}=0")],
    )  # fmt: skip
    encoder = "latest:contrastive"
    _larr("embed", "scenes", *lh, "--set", f"encoder={encoder}")
    _larr("embed", "texts", *lh, "--set", f"encoder={encoder}", "--set", "partitions=1")
    (export,) = (Path(catalog.root) / EXPORT_DIR).glob("*.npz")
    summaries = {}
    for model in ("deepfm", "ple", "larr"):
        args = ["train", "ctr", *lh, "--model", model, "--set", "seeds=[1]", "--set", "max_steps=6"]
        args += ["--set", "batch_size=128", "--set", f"checkpoint_dir={tmp_path / 'ck' / model}"]
        if model == "larr":
            args += ["--set", f"scene_vectors={export}"]
        _larr(*args)
        runs = mlflow.search_runs(
            experiment_names=["larr-ctr"],
            filter_string=f"tags.`larr.ctr_model` = '{model}'",
            order_by=["start_time DESC"],
        )
        summaries[model] = runs.iloc[0]
    return {"spark": spark, "catalog": catalog, "schema": schema, "runs": summaries}


# app_usage (positive_only: docs/bring_your_own_logs.md's example) runs in CI; click_log (impressions
# mode, which the synthetic world's tests also cover) in `make test-extended`
@pytest.mark.parametrize("dataset", ["app_usage", pytest.param("click_log", marks=pytest.mark.extended)])
def test_a_declared_dataset_goes_from_export_to_a_scored_pyfunc(dataset, tmp_path, lakehouse, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    make = {"app_usage": app_usage_export, "click_log": click_log_export}[dataset]
    mapping = make(tmp_path / "export")
    mode = "positive_only" if dataset == "app_usage" else "impressions"
    # no user has profile text (no user-user pairs); the click log declares no basic item text
    missing = ("user_user",) if dataset == "app_usage" else ("user_user", "poi_poi")
    out = _pipeline(lakehouse, mapping, mode, tmp_path, missing)
    spark, catalog, schema = out["spark"], out["catalog"], out["schema"]

    samples = catalog.read(spark, "samples.ctr")
    columns = set(samples.columns)
    for feature in schema.scene_names:  # the declared scene, nothing of the synthetic world
        assert {f"scene_{feature}", f"scene_{feature}_id"} <= columns
    assert not {"scene_city", "device", "poi_cuisine", "user_gender"} & columns
    dictionary = catalog.read(spark, "features.scene_dictionary")
    assert {r[0] for r in dictionary.select("feature").distinct().collect()} == set(schema.scene_names)
    # the stage-2 encoder's tokenizer holds this dataset's slice tokens, none of the synthetic world's
    from core.tracking import resolve_latest
    from etl.text.slices import token_slices

    model_uri = resolve_latest("latest:contrastive")
    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(tmp_path / "enc")))
    tokenizer_file = next(folder.rglob("tokenizer.json"))
    added = {t["content"] for t in json.loads(tokenizer_file.read_text())["added_tokens"]}
    assert {f"</{name}>" for name in token_slices(schema)} <= added
    assert not {"<POI_name>", "<user_profile>", "<scene_city>"} & added

    corpus, pairs = catalog.read(spark, "corpus.cpt"), catalog.read(spark, "pairs.contrastive")
    first_slice = schema.items.text[0].name
    assert corpus.where(f"input_text like '<{first_slice}>%'").count() == corpus.count() > 0
    assert pairs.where(
        "text_a like '%POI_%' or text_b like '%POI_%' or text_a like '%user_profile%'"
    ).isEmpty()
    user_poi = pairs.where("pair_type = 'user_poi'")
    assert user_poi.count() > 0
    assert (
        user_poi.where("text_a like '<user_hist>%</user_hist><user_env>%</user_env>'").count()
        == user_poi.count()
    )
    assert pairs.where("pair_type = 'user_user'").isEmpty()  # no user has profile text
    embedded = catalog.read(spark, "features.poi_embeddings")
    if dataset == "app_usage":
        # apps 7, 14, ... have no text: left out of the corpus and of the item texts, and counted
        assert corpus.count() == 35 and embedded.count() == 35
        assert pairs.where("pair_type = 'poi_poi'").count() == 35
        env = user_poi.first()["text_a"].split("<user_env>")[1].split(";")[0]
        assert len(env.split(", ")) == len(CONTEXT)  # the 8 context fields of one launch
        rejects = catalog.read(spark, "features.embedding_rejects").where("source = 'poi'")
        assert rejects.count() == 5
        assert "position" not in columns and "poi_category_id" in columns
        # the declared usage count is each launch's weight; a drawn negative weighs 1
        uses = catalog.read(spark, "clean.impressions").agg({"uses": "sum"}).first()[0]
        assert samples.where("click = 1").agg({"weight": "sum"}).first()[0] == uses
        assert samples.where("click = 0 and weight != 1.0").isEmpty()
        negatives = samples.where("click = 0").count()
        assert negatives == 4 * samples.where("click = 1").count()  # k = 4 from 40 apps, every positive
        text = dictionary.where("feature = 'place'").orderBy("value").first()["text"]
        assert text == "<scene_place>place: home</scene_place>"
    else:
        assert corpus.count() == 30 and corpus.where("target_text like '<shop_kind>sells %'").count() == 30
        assert pairs.where("pair_type = 'poi_poi'").isEmpty()  # no slice is declared basic
        assert embedded.count() == 30
        assert {"user_age", "poi_kind_id", "poi_price_band_id"} <= columns and "weight" not in columns
        values = {r[0] for r in dictionary.where("feature = 'warmth'").select("text").collect()}
        assert "<scene_warmth>it is warm</scene_warmth>" in values
    for model, run in out["runs"].items():
        assert run["status"] == "FINISHED", model
        assert 0.0 <= run["metrics.ctr_auc"] <= 1.0 and math.isfinite(run["metrics.logloss"]), model

    # the LARR seed run's pyfunc scores raw rows (ids, the declared fields, statistics, scene text)
    scorer = mlflow.pyfunc.load_model(f"runs:/{out['runs']['larr']['run_id']}/model")
    from training.ctr.encoding import raw_columns

    layout = scorer.unwrap_python_model().layout
    signature = scorer.metadata.get_input_schema()  # derived from the dataset schema
    assert signature.input_names() == list(raw_columns(layout))
    assert {c.name: c.type.name for c in signature.inputs}[f"scene_{schema.scene_names[0]}"] == "string"
    rows = (
        samples.where("split = 'test'").orderBy("sample_id").limit(20).toPandas()[list(raw_columns(layout))]
    )
    first = schema.scene_names[0]
    rows.loc[rows.index[0], f"scene_{first}"] = "never seen before"
    scored = scorer.predict(rows)
    assert np.isfinite(scored["p_ctr"]).all() and ((scored["p_ctr"] > 0) & (scored["p_ctr"] < 1)).all()
    assert scored["unknown_scene_values"].iloc[0] == 1 and scored["unknown_scene_values"].iloc[1:].sum() == 0
