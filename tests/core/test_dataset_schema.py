"""The dataset schema: strict loading, one-line errors naming the key, round trips, differences."""

import copy
import json

import pytest

from core.dataset_schema import (
    DatasetSchema,
    RequestItemFeature,
    SchemaError,
    load_schema_file,
    parse_schema,
    sample_fields,
    schema_difference,
)
from etl.synthetic.job import SCHEMA_FILE

# a click log with a conversion label, 3 scene features (one bucketed numeric, one derived from
# the timestamp), two item categorical fields and one user numeric field
CLICK_LOG = {
    "version": 1,
    "name": "click-log",
    "events": {"conversion": True, "columns": {"channel": "string"}},
    "scene_features": [
        {"name": "weather", "column": "weather", "template": "weather: {value}"},
        {
            "name": "temperature",
            "column": "temp",
            "column_type": "double",
            "buckets": {"edges": [0, 15, 25], "labels": ["cold", "cool", "warm", "hot"]},
        },
        {"name": "daypart", "derive": "part_of_day"},
    ],
    "users": {"numeric": [{"column": "age", "transform": "none"}]},
    "items": {
        "text": [
            {"name": "POI_name", "fields": ["title"]},
            {"name": "POI_intro", "fields": ["blurb"], "role": "target"},
        ],
        "categorical": ["brand", "category"],
    },
}


def _with(path: str, value, base=CLICK_LOG) -> dict:
    """A copy of `base` with the dotted `path` (list indexes as numbers) set to `value`."""
    data = copy.deepcopy(base)
    node, *parts = data, *path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


# the click log with coordinates and opening hours, and the two request-item derivations of them
REQUEST_ITEM_LOG = {
    **CLICK_LOG,
    "events": {**CLICK_LOG["events"], "columns": {"channel": "string", "lat": "double", "lon": "double"}},
    "items": {**CLICK_LOG["items"], "columns": {"shop_lat": "double", "shop_lon": "long", "hours": "string"}},
    "request_item": [
        {
            "name": "distance_km",
            "derive": "distance_km",
            "event": ["lat", "lon"],
            "item": ["shop_lat", "shop_lon"],
        },
        {"name": "open_now", "derive": "open_now", "item": "hours"},
    ],
}


def test_a_declared_schema_builds_and_round_trips_through_json():
    schema = parse_schema(CLICK_LOG, "mapping.yaml")
    assert schema.scene_names == ("weather", "temperature", "daypart")
    assert schema.scene_feature("temperature").kind == "bucketed"
    assert schema.scene_feature("weather").text("rainy") == "weather: rainy"
    assert schema.raw_columns("impressions") == {
        "event_id": "long",
        "ts": "timestamp",
        "user_id": "long",
        "poi_id": "long",
        "weather": "string",
        "temp": "double",
        "channel": "string",
        "clicked": "int",
        "ordered": "int",
        "dt": "date",
    }
    assert schema.raw_columns("users") == {"user_id": "long", "age": "double"}
    assert schema.raw_columns("pois") == {
        "poi_id": "long",
        "title": "string",
        "blurb": "string",
        "brand": "string",
        "category": "string",
    }
    assert schema.events.labels() == ("clicked", "ordered")
    assert parse_schema(json.loads(json.dumps(schema.to_dict())), "stored") == schema


def test_the_synthetic_world_schema_declares_the_ten_scene_features():
    schema = load_schema_file(SCHEMA_FILE)
    assert isinstance(schema, DatasetSchema)
    assert len(schema.scene_features) == 10
    assert [(f.name, f.inputs) for f in schema.request_item] == [
        ("distance_km", ("user_lat", "user_lon", "poi_latitude", "poi_longitude")),
        ("open_now", ("ts", "poi_opening_hours")),
    ]
    assert sample_fields(schema).numeric[-2:] == ("distance_km", "open_now")
    assert (
        schema.scene_feature("season").buckets.labels[0] == schema.scene_feature("season").buckets.labels[-1]
    )


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("colour", 1, "unknown schema key colour"),
        ("events.positive_only", "yes", "schema key events.positive_only: expected bool"),
        ("scene_features.0.kind", "x", "unknown schema key scene_features[0].kind"),
        (
            "scene_features.1.buckets.edges",
            [0, 25, 15],
            "buckets.edges must be increasing, got [0.0, 25.0, 15.0]",
        ),
        ("scene_features.1.buckets.labels", ["a", "b"], "buckets.labels must hold 4 labels"),
        (
            "scene_features.0.template",
            "weather is",
            "scene feature 'weather': template 'weather is' has no {value}",
        ),
        ("scene_features.0.template", "{weather}", "names {weather}"),
        ("scene_features.2.name", "weather", "scene_features: two features are named weather"),
        (
            "scene_features.2.column",
            "ts_local",
            "derive part_of_day needs a timestamp column, ts_local is declared string",
        ),
        ("scene_features.0.buckets", {"edges": [1], "labels": ["a", "b"]}, "buckets need a numeric source"),
        ("scene_features.0.derive", "fortnight", "derive must be one of hour, part_of_day"),
        ("scene_features.0.name", "Weather", "name must be lower snake case"),
        ("scene_features", [], "scene_features must declare 1 to 32 features, got 0"),
        ("items.text.0.fields", [], "text slice 'POI_name': fields must name at least one column"),
        ("items.text.0.role", "label", "role must be one of input, target"),
        ("events.columns", {"clicked": "int"}, "events column clicked is one of the platform's own columns"),
        ("events.weight", "channel", "events.weight: channel must be a declared numeric event column"),
        (
            "items.vocabularies",
            {"colour": ["red"]},
            "items.vocabularies: colour is not a declared items column",
        ),
        ("events.test_days", 0, "events.test_days must be >= 1"),
        ("items.text.1.contrastive", "profile", "items.text POI_intro: contrastive must be one of business"),
        ("items.text.1.name", "scene_blurb", "names starting scene_ are the scene features' slices"),
        (
            "user_actions",
            {"history": {"name": "POI_name", "fields": ["title"]}},
            "two text slices are named POI_name",
        ),
        (
            "user_actions",
            {"history": {"name": "hist", "fields": ["colour"]}},
            "user_actions.history: colour is not a declared items column",
        ),
        (
            "user_actions",
            {"environment": {"name": "env", "fields": ["daypart", "mood"]}},
            "user_actions.environment: mood is not a scene feature, an events column or a derivation",
        ),
        (
            "user_actions",
            {"statistics": {"name": "stats", "fields": ["brand"]}},
            "user_actions.statistics: brand is not a numeric items column",
        ),
        (
            "user_actions",
            {"statistics": {"name": "stats", "field": ["x"]}},
            "unknown schema key user_actions.statistics.field",
        ),
    ],
)
def test_bad_declarations_are_one_line_errors_naming_the_key(path, value, message):
    with pytest.raises(SchemaError) as err:
        parse_schema(_with(path, value), "mapping.yaml")
    text = str(err.value)
    assert text.startswith("mapping.yaml: ") and "\n" not in text
    assert message in text


def test_request_item_features_are_declared_numeric_sample_columns_and_round_trip():
    schema = parse_schema(REQUEST_ITEM_LOG, "mapping.yaml")
    assert schema.request_item == (
        RequestItemFeature("distance_km", "distance_km", ("lat", "lon"), ("shop_lat", "shop_lon")),
        RequestItemFeature("open_now", "open_now", item="hours"),
    )
    assert [f.inputs for f in schema.request_item] == [
        ("lat", "lon", "poi_shop_lat", "poi_shop_lon"),
        ("ts", "poi_hours"),
    ]
    assert parse_schema(json.loads(json.dumps(schema.to_dict())), "stored") == schema
    fields = sample_fields(schema)
    assert fields.numeric == ("user_age", "distance_km", "open_now")
    assert fields.log1p == ("distance_km",)  # user_age: transform none; open_now as it is
    # a schema stored before the section existed reads as one without request-item features
    stored = parse_schema(CLICK_LOG, "mapping.yaml").to_dict()
    del stored["request_item"]
    old = parse_schema(json.loads(json.dumps(stored)), "stored")
    assert old.request_item == () and sample_fields(old).numeric == ("user_age",)
    assert schema_difference(old, schema)[0] == "request_item added: distance_km, open_now"


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("request_item.0.event", ["user_latt", "lon"], "request_item[0].event: user_latt is not a declared events column"),
        ("request_item.0.event", ["channel", "lon"], "request_item[0].event: channel is declared string, distance_km needs double / long / int"),
        ("request_item.0.item", ["shop_lat", "colour"], "request_item[0].item: colour is not a declared items column"),
        ("request_item.0.item", ["shop_lat"], "schema request_item[0]: item: distance_km needs [lat, lon] items columns"),
        ("request_item.0.event", [], "schema request_item[0]: event: distance_km needs [lat, lon] events columns, got []"),
        ("request_item.1.item", "shop_lat", "request_item[1].item: shop_lat is declared double, open_now needs string"),
        ("request_item.1.item", ["hours"], "schema request_item[1]: item: open_now needs one opening-hours items column"),
        ("request_item.1.event", ["lat"], "schema request_item[1]: event: open_now reads the event's ts"),
        ("request_item.1.item", 3, "schema key request_item[1].item: expected str, got int 3"),
        ("request_item.0.derive", "eta", "schema request_item[0]: derive must be one of distance_km, open_now, got 'eta'"),
        ("request_item.0.name", "Distance", "schema request_item[0]: name 'Distance' must be lower snake case"),
        ("request_item.0.why", 1, "unknown schema key request_item[0].why"),
        ("request_item.1.name", "distance_km", "request_item: two features are named distance_km"),
        ("request_item.1.name", "poi_open", "request_item[1].name: poi_open clashes with a sample column"),
        ("request_item.1.name", "ctcvr", "request_item[1].name: ctcvr clashes with a sample column"),
        ("request_item.1.name", "channel", "request_item[1].name: channel clashes with a sample column"),
        ("request_item", {"name": "x"}, "schema key request_item: expected a list"),
    ],
)  # fmt: skip
def test_bad_request_item_declarations_are_one_line_errors_naming_the_key(path, value, message):
    with pytest.raises(SchemaError) as err:
        parse_schema(_with(path, value, base=REQUEST_ITEM_LOG), "mapping.yaml")
    text = str(err.value)
    assert text.startswith("mapping.yaml: ") and "\n" not in text
    assert message in text


def test_user_actions_default_to_the_first_item_slice_and_the_event_scene():
    schema = parse_schema(CLICK_LOG, "mapping.yaml")
    actions = schema.user_actions
    assert (actions.history.name, actions.history.fields) == ("user_hist", ("title",))
    assert (actions.environment.name, actions.environment.fields) == ("user_env", schema.scene_names)
    assert actions.statistics is None
    declared = parse_schema(_with("user_actions", {}), "mapping.yaml").user_actions
    assert declared.slices() == ()  # declared empty: no action text
    with_hour = _with(
        "user_actions", {"environment": {"name": "env", "fields": ["weekday", "hour", "channel"]}}
    )
    assert parse_schema(with_hour, "mapping.yaml").user_actions.environment.fields == (
        "weekday",
        "hour",
        "channel",
    )
    recent = _with("scene_features.2", {"name": "last_brand", "recent": "brand", "recent_label": "click"})
    assert "last_brand" not in parse_schema(recent, "mapping.yaml").user_actions.environment.fields
    bad = _with("user_actions", {"environment": {"name": "env", "fields": ["last_brand"]}}, base=recent)
    with pytest.raises(SchemaError, match="last_brand is a `recent` scene feature"):
        parse_schema(bad, "mapping.yaml")


def test_recent_features_need_a_declared_item_field_and_a_conversion_label():
    recent = {"name": "last_brand", "recent": "brand", "default": "none yet"}
    ok = _with("scene_features", [*CLICK_LOG["scene_features"], recent])
    assert parse_schema(ok, "m").scene_feature("last_brand").recent == "brand"
    with pytest.raises(SchemaError, match="recent names colour, not a declared items column"):
        parse_schema(_with("scene_features", [{**recent, "recent": "colour"}]), "m")
    no_conversion = _with("events.conversion", False, ok)
    with pytest.raises(SchemaError, match="recent_label conversion needs events.conversion: true"):
        parse_schema(no_conversion, "m")


def test_the_difference_between_two_schemas_names_what_changed():
    stored = parse_schema(CLICK_LOG, "a")
    assert schema_difference(stored, stored) == []
    new = parse_schema(
        _with("scene_features", [*CLICK_LOG["scene_features"][1:], {"name": "weekday", "derive": "weekday"}]),
        "b",
    )
    difference = schema_difference(stored, new)
    assert "scene features added: weekday" in difference
    assert "scene features removed: weather" in difference
    assert "raw.impressions columns: -weather" in difference
    retemplated = parse_schema(_with("scene_features.0.template", "it is {value}"), "c")
    assert schema_difference(stored, retemplated) == ["scene feature weather changed"]
