import pytest
from pyspark.sql import functions as F

from core.dataset_schema import parse_schema
from etl import tokens
from etl.text.slices import item_slices, profile_slices, token_slices
from etl.tokens import (
    UnknownSliceError,
    closing_token,
    closing_tokens,
    is_closing_token,
    special_tokens,
    strip_tokens,
    unwrap_text,
    wrap,
    wrap_text,
)
from tests.etl.text_fixtures import SCHEMA

# the token order of the synthetic world before its slices were declared: checkpoints keep ids
SYNTHETIC_ORDER = (
    "POI_name", "POI_loc", "POI_intro", "POI_cuisine", "POI_dishes", "POI_tags", "POI_hours", "POI_price",
    "POI_stats", "user_profile", "user_hist", "user_env", "user_price",
)  # fmt: skip


def test_the_synthetic_worlds_slices_keep_their_token_order():
    slices = token_slices(SCHEMA)
    assert slices == (*SYNTHETIC_ORDER, *(f"scene_{name}" for name in SCHEMA.scene_names))
    special = special_tokens(slices)
    assert len(special) == len(set(special)) == 2 * len(slices)
    assert special[:4] == ["<POI_name>", "</POI_name>", "<POI_loc>", "</POI_loc>"]
    assert closing_token("scene_weather") == "</scene_weather>"


def test_slice_groups_come_from_the_schema():
    names = lambda slices: [s.name for s in slices]  # noqa: E731
    assert names(item_slices(SCHEMA, role="input")) == ["POI_name", "POI_loc"]
    assert names(item_slices(SCHEMA, parts=("business",))) == [
        "POI_name",
        "POI_loc",
        "POI_cuisine",
        "POI_dishes",
    ]
    assert names(item_slices(SCHEMA, parts=("basic",))) == ["POI_intro", "POI_tags"]
    assert names(profile_slices(SCHEMA)) == ["user_profile"]
    # the corpus: input and target together hold every item slice exactly once
    inputs, targets = item_slices(SCHEMA, role="input"), item_slices(SCHEMA, role="target")
    assert sorted(names(inputs) + names(targets)) == sorted(names(SCHEMA.items.text))


def test_a_declared_dataset_gets_its_own_slices_and_defaults():
    schema = parse_schema(
        {
            "name": "apps",
            "events": {"positive_only": True, "categorical": ["network"]},
            "scene_features": [{"name": "daypart", "derive": "part_of_day"}, {"name": "network", "column": "network"}],
            "items": {"text": [{"name": "app_title", "fields": ["title"]}, {"name": "app_about", "fields": ["about"], "role": "target"}]},
        },
        "test",
    )  # fmt: skip
    assert token_slices(schema) == (
        "app_title", "app_about", "user_hist", "user_env", "scene_daypart", "scene_network",
    )  # fmt: skip
    assert schema.user_actions.history.fields == ("title",)  # the first item slice's fields
    assert schema.user_actions.environment.fields == ("daypart", "network")
    assert special_tokens(["sky", "daypart"]) == ["<sky>", "</sky>", "<daypart>", "</daypart>"]


def test_closing_tokens():
    assert is_closing_token("</scene_sky>") and is_closing_token("</POI_name>")
    assert not is_closing_token("<scene_sky>") and not is_closing_token("</a b>")
    # a tokenizer's own tokens are not slices: only open / close pairs count
    added = ["<|im_end|>", "</s>", "<POI_name>", "</POI_name>", "<scene_sky>", "</scene_sky>"]
    assert closing_tokens(added) == {"</POI_name>", "</scene_sky>"}
    assert strip_tokens("a <scene_sky>b</scene_sky> <POI_name>c") == "a b c"


def test_bad_slice_names_are_refused():
    with pytest.raises(UnknownSliceError, match="POI colour"):
        closing_token("POI colour")
    with pytest.raises(UnknownSliceError, match="1st"):
        wrap("1st", "colour")
    with pytest.raises(ValueError, match="repeat"):
        special_tokens(["a", "a"])


def test_wrap_text_round_trips_and_strips_tokens_inside_the_text():
    text = wrap_text("POI_name", "Aunt Li's") + wrap_text("POI_loc", "Guangzhou, Tianhe")
    assert text == "<POI_name>Aunt Li's</POI_name><POI_loc>Guangzhou, Tianhe</POI_loc>"
    assert unwrap_text(text) == [("POI_name", "Aunt Li's"), ("POI_loc", "Guangzhou, Tianhe")]
    # anything shaped like a slice token is stripped, an HTML-like tag too; "<3" is not one
    assert (
        wrap_text("POI_intro", "a <POI_name>fake</POI_name> <b>x <3") == "<POI_intro>a fake x <3</POI_intro>"
    )
    assert wrap_text("POI_intro", None) is None
    with pytest.raises(ValueError, match="outside any slice"):
        unwrap_text("loose<POI_name>x</POI_name>")


def test_spark_wrap_matches_wrap_text(spark):
    texts = ["Aunt Li's", "a <user_hist>x</user_hist> y", "", None]
    df = spark.createDataFrame([(t,) for t in texts], "t string")
    got = [r[0] for r in df.select(wrap("user_hist", "t")).collect()]
    assert got == [wrap_text("user_hist", t) for t in texts]
    joined = df.select(tokens.join_wrapped(wrap("POI_name", "t"), wrap("POI_tags", F.lit("quiet")))).collect()
    assert [r[0] for r in joined][-1] == "<POI_tags>quiet</POI_tags>"  # a null slice is left out
