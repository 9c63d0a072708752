"""Hash-based randomness as Spark column expressions.

Every random draw is a pure function of (seed, salt, ids), computed with Spark's xxhash64. The
same seed therefore gives the same world whatever the number of partitions, the executor count
or the order rows are processed in, and no random generator state lives on the driver.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pyspark.sql import Column
from pyspark.sql import functions as F

_TWO_POW_53 = float(1 << 53)


def _hash(seed: int, salt: str, keys: Sequence[Column | str]) -> Column:
    return F.xxhash64(F.lit(seed), F.lit(salt), *[F.col(k) if isinstance(k, str) else k for k in keys])


def uniform(seed: int, salt: str, *keys: Column | str) -> Column:
    """Uniform in the open interval (0, 1): 53 hash bits, shifted off zero by half a step."""
    bits = F.shiftrightunsigned(_hash(seed, salt, keys), 11).cast("double")
    return (bits + F.lit(0.5)) / F.lit(_TWO_POW_53)


def normal(seed: int, salt: str, *keys: Column | str) -> Column:
    """Standard normal by Box-Muller from two independent uniforms."""
    u1 = uniform(seed, f"{salt}#a", *keys)
    u2 = uniform(seed, f"{salt}#b", *keys)
    return F.sqrt(F.lit(-2.0) * F.log(u1)) * F.cos(F.lit(2.0 * math.pi) * u2)


def randint(seed: int, salt: str, n: int | Column, *keys: Column | str) -> Column:
    """Uniform integer in [0, n)."""
    n_col = n if isinstance(n, Column) else F.lit(n)
    return F.floor(uniform(seed, salt, *keys) * n_col).cast("long")


def choice(options: Sequence[str], index: Column) -> Column:
    """The option at a 0-based integer index column."""
    return F.element_at(F.array(*[F.lit(o) for o in options]), (index + 1).cast("int"))


def weighted_index(weights: Sequence[float], u: Column) -> Column:
    """Index i with probability weights[i] / sum(weights), by inverting the cumulative sum."""
    total = float(sum(weights))
    cumulative = 0.0
    expr = None
    for i, w in enumerate(weights[:-1]):
        cumulative += w / total
        expr = F.when(u < cumulative, F.lit(i)) if expr is None else expr.when(u < cumulative, F.lit(i))
    last = F.lit(len(weights) - 1)
    return last if expr is None else expr.otherwise(last)
