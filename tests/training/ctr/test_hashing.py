"""spark_xxhash64 against Spark's own F.xxhash64, over values that cross every XXH64 branch."""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from training.ctr import hashing
from training.ctr.hashing import HashingError, spark_xxhash64, xxh64_bytes


def _strings() -> list[str | None]:
    """~200 strings: every length 0..70 (the 4/8/32-byte branches), unicode, repeats and nulls."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789 -_"
    by_length = [alphabet[i % 7 :] * 3 for i in range(71)]
    by_length = [s[:n] for n, s in zip(range(71), by_length, strict=True)]
    unicode = [
        "广州",
        "粤菜 Cantonese",
        "café",
        "😀 emoji",
        "naïve résumé",
        "\u00e9" * 33,
        "ü" * 3,
        "日本" * 9,
    ]
    words = [f"value {i} " * (i % 5) for i in range(60)]
    return [*by_length, *unicode, *words, "", "", None, None, "sunny", "sunny", "hot above 28C"] + [
        "x" * n for n in (31, 32, 33, 63, 64, 65, 100)
    ]


def _integers() -> list[int | None]:
    edges = [0, 1, -1, 2**31 - 1, -(2**31), 42, -42, 123456789, None]
    spread = [int(v) for v in np.linspace(-(2**31), 2**31 - 1, 60, dtype=np.int64)]
    return edges + spread


def test_known_xxh64_vectors():
    assert xxh64_bytes(b"", 0) == 0xEF46DB3751D8E999
    assert xxh64_bytes(b"a", 0) == 0xD24EC4F1A98C6E5B


def test_strings_match_spark(spark):
    values = _strings()
    df = spark.createDataFrame([(v,) for v in values], "s string")
    rows = df.select(
        F.xxhash64(F.lit("weather"), F.col("s")).alias("prefixed"),
        F.xxhash64(F.col("s")).alias("plain"),
        F.xxhash64(F.lit("广州 prefix that is longer than thirty-two bytes"), F.col("s")).alias(
            "long_prefix"
        ),
    ).collect()
    expected = {name: np.array([r[name] for r in rows], dtype=np.int64) for name in rows[0].asDict()}
    np.testing.assert_array_equal(spark_xxhash64("weather", values), expected["prefixed"])
    np.testing.assert_array_equal(spark_xxhash64(None, values), expected["plain"])
    np.testing.assert_array_equal(
        spark_xxhash64("广州 prefix that is longer than thirty-two bytes", values), expected["long_prefix"]
    )


@pytest.mark.parametrize("kind", ["int", "long"])
def test_integers_match_spark(spark, kind):
    values = _integers()
    if kind == "long":
        values = values + [2**63 - 1, -(2**63), 2**40 + 7, -(2**40) - 7]
    spark_type = T.IntegerType() if kind == "int" else T.LongType()
    df = spark.createDataFrame([(v,) for v in values], T.StructType([T.StructField("v", spark_type)]))
    rows = df.select(F.xxhash64(F.lit("position"), "v").alias("h"), F.xxhash64("v").alias("p")).collect()
    np.testing.assert_array_equal(
        spark_xxhash64("position", values, kind=kind), np.array([r.h for r in rows], dtype=np.int64)
    )
    np.testing.assert_array_equal(
        spark_xxhash64(None, np.array(values, dtype=object), kind=kind), np.array([r.p for r in rows])
    )


def test_null_gives_the_prefix_hash_and_nan_counts_as_null():
    prefix_only = spark_xxhash64("city", [None])[0]
    assert prefix_only == np.uint64(xxh64_bytes(b"city", hashing.SPARK_SEED)).view(np.int64)
    floats = np.array([3.0, np.nan, 3.0])
    hashed = spark_xxhash64("position", floats, kind="int")
    assert hashed[1] == spark_xxhash64("position", [None], kind="int")[0]
    assert hashed[0] == hashed[2] == spark_xxhash64("position", [3], kind="int")[0]


@pytest.mark.parametrize("copies", [100, 1000])  # a request-sized array and one past SMALL_REQUEST
def test_hashes_each_distinct_value_once_per_process(monkeypatch, copies):
    hashing._string_hash.cache_clear()
    hashing._prefix_seed.cache_clear()
    calls = []
    real = hashing.xxh64_bytes
    monkeypatch.setattr(hashing, "xxh64_bytes", lambda data, seed: calls.append(data) or real(data, seed))
    values = np.array(["a", "b", "a", None, "b", "a"] * copies, dtype=object)
    hashed = spark_xxhash64("f", values)
    assert len(hashed) == 6 * copies and hashed.dtype == np.int64
    assert sorted(calls) == [b"a", b"b", b"f"]  # the prefix once, each distinct value once
    assert (hashed[3::6] == hashed[3]).all() and (hashed[::6] == hashed[0]).all()
    again = spark_xxhash64("f", values[::-1])  # a later request: nothing hashed again
    assert len(calls) == 3 and (again == hashed[::-1]).all()


def test_request_sized_and_large_arrays_hash_alike():
    values = np.array(
        [f"value {k % 37}" if k % 11 else None for k in range(3 * hashing.SMALL_REQUEST)], object
    )
    large = spark_xxhash64("f", values)  # factorize, then each distinct value
    small = np.concatenate([spark_xxhash64("f", part) for part in np.array_split(values, 4)])  # per value
    np.testing.assert_array_equal(large, small)


def test_empty_input():
    assert spark_xxhash64("f", []).shape == (0,)
    assert spark_xxhash64("f", np.array([], dtype=np.int64), kind="long").dtype == np.int64


@pytest.mark.parametrize(
    ("values", "kind", "message"),
    [
        (["a"], "float", "kind must be one of"),
        ([1, "a"], "string", "needs str values"),
        (["a"], "long", "needs integer values"),
        ([1.5], "long", "fractional"),
        ([2**31], "int", "must lie in"),
    ],
)
def test_bad_input(values, kind, message):
    with pytest.raises(HashingError, match=message):
        spark_xxhash64("f", values, kind=kind)


def test_a_request_column_of_one_value_hashes_as_its_values_one_by_one():
    one_value = np.array(["Chengdu"] * 5, dtype=object)
    with_a_null = np.array(["Chengdu"] * 4 + [None], dtype=object)
    want = spark_xxhash64("city", np.array(["Chengdu", "x"], dtype=object))[0]
    assert (spark_xxhash64("city", one_value) == want).all()
    hashed = spark_xxhash64("city", with_a_null)  # not one value: a null keeps the prefix's hash
    assert (hashed[:4] == want).all() and hashed[4] == spark_xxhash64("city", [None])[0]
