import pytest
from pyspark.sql import functions as F

from etl import tokens
from etl.text import poi_text, user_text
from etl.tokens import (
    SLICES,
    UnknownSliceError,
    closing_token,
    is_closing_token,
    scene_slice,
    special_tokens,
    strip_tokens,
    unwrap_text,
    wrap,
    wrap_text,
)
from tests.etl.text_fixtures import SCHEMA

SCENES = SCHEMA.scene_names


def test_tokens_are_unique_and_follow_the_slice_names():
    special = special_tokens(SCENES)
    assert len(special) == len(set(special)) == 2 * (len(SLICES) + len(SCENES))
    assert len({s.name for s in SLICES}) == len(SLICES)
    for s in SLICES:
        assert (s.open, s.close) == (f"<{s.name}>", f"</{s.name}>")
        assert s.side in tokens.SIDES
    assert special[:4] == ["<POI_name>", "</POI_name>", "<POI_loc>", "</POI_loc>"]
    assert closing_token("scene_weather") == "</scene_weather>"
    assert closing_token("user_profile") == "</user_profile>"


def test_scene_slices_come_from_the_declared_features():
    assert [s.name for s in tokens.slices_of(tokens.SCENE, SCENES)] == [scene_slice(f) for f in SCENES]
    assert special_tokens(["sky", "daypart"])[-4:] == [
        "<scene_sky>",
        "</scene_sky>",
        "<scene_daypart>",
        "</scene_daypart>",
    ]
    assert closing_token("scene_any_feature") == "</scene_any_feature>"
    assert is_closing_token("</scene_sky>") and is_closing_token("</POI_name>")
    assert not is_closing_token("<scene_sky>") and not is_closing_token("</POI_colour>")
    assert not is_closing_token("</scene_Sky>")  # feature names are lower snake case
    assert strip_tokens("a <scene_sky>b</scene_sky> <POI_name>c") == "a b c"


def test_every_slice_the_builders_use_is_registered_and_every_poi_and_user_slice_is_used():
    used_poi = set(poi_text.POI_INPUT_SLICES + poi_text.POI_TARGET_SLICES)
    used_poi |= set(
        poi_text.POI_BUSINESS_SLICES + poi_text.POI_COMPREHENSIVE_SLICES + poi_text.POI_BASIC_SLICES
    )
    used_user = set(user_text.USER_COMPREHENSIVE_SLICES)
    assert used_poi == {s.name for s in tokens.slices_of(tokens.POI)}
    assert used_user == {s.name for s in tokens.slices_of(tokens.USER)}
    # the corpus: input and target together hold every POI slice exactly once
    assert sorted(poi_text.POI_INPUT_SLICES + poi_text.POI_TARGET_SLICES) == sorted(used_poi)


def test_unknown_slices_are_refused():
    with pytest.raises(UnknownSliceError, match="POI_colour"):
        closing_token("POI_colour")
    with pytest.raises(UnknownSliceError, match="POI_colour"):
        wrap("POI_colour", "colour")
    with pytest.raises(UnknownSliceError, match="nope"):
        unwrap_text("<nope>x</nope>")


def test_wrap_text_round_trips_and_strips_tokens_inside_the_text():
    text = wrap_text("POI_name", "Aunt Li's") + wrap_text("POI_loc", "Guangzhou, Tianhe")
    assert text == "<POI_name>Aunt Li's</POI_name><POI_loc>Guangzhou, Tianhe</POI_loc>"
    assert unwrap_text(text) == [("POI_name", "Aunt Li's"), ("POI_loc", "Guangzhou, Tianhe")]
    assert wrap_text("POI_intro", "a <POI_name>fake</POI_name> <b>x") == "<POI_intro>a fake <b>x</POI_intro>"
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
