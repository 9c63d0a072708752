"""Spark's `xxhash64` outside Spark, so the scoring model hashes a request exactly as the samples job did.

`F.xxhash64(F.lit(prefix), F.col(c))` (the `<field>_id` and `scene_<f>_id` columns) is XXH64 with
seed 42, chained over its arguments: each argument's hash is the seed of the next, and a null
argument leaves the seed unchanged. A string is hashed as its UTF-8 bytes, an int column as one
4-byte word and a long column as one 8-byte word (Spark's `XXH64.hashInt` / `hashLong`, which are
XXH64 of the little-endian bytes). Results are Spark's signed longs.

Strings are hashed in pure Python once per distinct value and remembered per process (a request
repeats its values across candidates, and requests repeat cities, cuisines and scene values), ints
and longs with vectorised uint64 numpy arithmetic.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

SPARK_SEED = 42
KINDS = ("string", "long", "int")

_MASK = (1 << 64) - 1
_P1 = 0x9E3779B185EBCA87
_P2 = 0xC2B2AE3D27D4EB4F
_P3 = 0x165667B19E3779F9
_P4 = 0x85EBCA77C2B2AE63
_P5 = 0x27D4EB2F165667C5
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


SMALL_REQUEST = 4096  # string arrays up to this size are hashed value by value through the cache


class HashingError(ValueError):
    pass


def spark_xxhash64(prefix: str | None, values, kind: str = "string") -> np.ndarray:
    """Spark's `xxhash64(lit(prefix), col)` of every value (int64); `prefix=None` = `xxhash64(col)`.

    `kind` is the Spark type of the column: "string", "long" or "int". Nulls (None, NaN, pd.NA)
    give the hash of the prefix alone, as in Spark.
    """
    if kind not in KINDS:
        raise HashingError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    seed = SPARK_SEED if prefix is None else _prefix_seed(prefix)
    if kind == "string" and len(values) <= SMALL_REQUEST:
        return _small_string_hashes(values, seed)
    codes, uniques = pd.factorize(pd.Series(np.asarray(values, dtype=object), dtype=object))
    if kind == "string":
        distinct = _hash_strings(uniques, seed)
    else:
        distinct = _hash_words(_integers(uniques, kind), seed, kind)
    hashes = np.full(len(codes), seed, dtype=np.uint64)
    present = codes >= 0
    hashes[present] = distinct[codes[present]]
    return hashes.view(np.int64)


def xxh64_bytes(data: bytes, seed: int) -> int:
    """XXH64 of `data` (unsigned 64-bit), as Spark's `XXH64.hashUnsafeBytes`."""
    length, offset = len(data), 0
    if length >= 32:
        v = [(seed + _P1 + _P2) & _MASK, (seed + _P2) & _MASK, seed & _MASK, (seed - _P1) & _MASK]
        while offset <= length - 32:
            for lane in range(4):
                word = int.from_bytes(data[offset : offset + 8], "little")
                v[lane] = _round(v[lane], word)
                offset += 8
        acc = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & _MASK
        for lane in v:
            acc = ((acc ^ _round(0, lane)) * _P1 + _P4) & _MASK
    else:
        acc = (seed + _P5) & _MASK
    acc = (acc + length) & _MASK
    while offset + 8 <= length:
        acc ^= _round(0, int.from_bytes(data[offset : offset + 8], "little"))
        acc = (_rotl(acc, 27) * _P1 + _P4) & _MASK
        offset += 8
    if offset + 4 <= length:
        acc ^= (int.from_bytes(data[offset : offset + 4], "little") * _P1) & _MASK
        acc = (_rotl(acc, 23) * _P2 + _P3) & _MASK
        offset += 4
    while offset < length:
        acc ^= (data[offset] * _P5) & _MASK
        acc = (_rotl(acc, 11) * _P1) & _MASK
        offset += 1
    return _avalanche(acc)


def _round(acc: int, word: int) -> int:
    return (_rotl((acc + word * _P2) & _MASK, 31) * _P1) & _MASK


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _MASK


def _avalanche(acc: int) -> int:
    acc = ((acc ^ (acc >> 33)) * _P2) & _MASK
    acc = ((acc ^ (acc >> 29)) * _P3) & _MASK
    return acc ^ (acc >> 32)


def _hash_strings(uniques, seed: int) -> np.ndarray:
    bad = [type(v).__name__ for v in uniques if not isinstance(v, str)]
    if bad:
        raise HashingError(f"kind='string' needs str values (or nulls), got {bad[0]}")
    return np.array([_string_hash(v, seed) for v in uniques], dtype=np.uint64)


@functools.lru_cache(maxsize=1024)
def _prefix_seed(prefix: str) -> int:
    return xxh64_bytes(prefix.encode("utf-8"), SPARK_SEED)


# A scoring process sees the same cities, cuisines and scene values again and again: each string's
# hash is computed once (pure-Python XXH64 costs ~20 us a string, a cache hit well under 1 us).
@functools.lru_cache(maxsize=1 << 18)
def _string_hash(value: str, seed: int) -> int:
    return xxh64_bytes(value.encode("utf-8"), seed)


def _small_string_hashes(values, seed: int) -> np.ndarray:
    """`spark_xxhash64` of a request-sized array of strings: per value through the cache (no
    factorize: at 100 values pandas' set-up costs more than the lookups)."""
    values = np.asarray(values, dtype=object)
    if len(values) and isinstance(values[0], str) and (values == values[0]).all():
        # the request's own fields and scene are one value across its candidates: hash it once
        return np.full(len(values), _string_hash(values[0], seed), dtype=np.uint64).view(np.int64)
    hashes = np.empty(len(values), dtype=np.uint64)
    for position, value in enumerate(values):  # a scoring request's rows, not a table's
        if isinstance(value, str):
            hashes[position] = _string_hash(value, seed)
        elif value is None or value is pd.NA or (isinstance(value, float) and value != value):
            hashes[position] = seed  # null: the hash of the prefix alone, as in Spark
        else:
            raise HashingError(f"kind='string' needs str values (or nulls), got {type(value).__name__}")
    return hashes.view(np.int64)


def _integers(uniques, kind: str) -> np.ndarray:
    """The distinct values as Python ints checked against the Spark type's range, as int64."""
    low, high = _INT32 if kind == "int" else _INT64
    try:
        ints = [int(v) for v in uniques]
    except (TypeError, ValueError) as error:
        raise HashingError(f"kind={kind!r} needs integer values (or nulls): {error}") from None
    if any(i != v for i, v in zip(ints, uniques, strict=True)):
        raise HashingError(f"kind={kind!r} needs integer values, got a fractional one")
    if ints and not (low <= min(ints) and max(ints) <= high):
        raise HashingError(f"kind={kind!r} values must lie in [{low}, {high}]")
    return np.array(ints, dtype=np.int64)


def _hash_words(values: np.ndarray, seed: int, kind: str) -> np.ndarray:
    """Spark's `hashInt` / `hashLong`: XXH64 of one 4- or 8-byte little-endian word, vectorised."""
    u = np.uint64
    with np.errstate(over="ignore"):
        if kind == "int":
            word = values.astype(np.uint32).astype(np.uint64)  # Spark: input & 0xFFFFFFFFL
            acc = np.full(values.shape, u((seed + _P5 + 4) & _MASK), dtype=np.uint64)
            acc ^= word * u(_P1)
            acc = _rotl_np(acc, 23) * u(_P2) + u(_P3)
        else:
            word = values.view(np.uint64)
            acc = np.full(values.shape, u((seed + _P5 + 8) & _MASK), dtype=np.uint64)
            acc ^= _rotl_np(word * u(_P2), 31) * u(_P1)
            acc = _rotl_np(acc, 27) * u(_P1) + u(_P4)
        acc = (acc ^ (acc >> u(33))) * u(_P2)
        acc = (acc ^ (acc >> u(29))) * u(_P3)
        return acc ^ (acc >> u(32))


def _rotl_np(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))
