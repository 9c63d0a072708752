"""From a `larr bench etl` run to a cluster's bill: core-hours and shuffle volume per job for a
target number of impressions (issue 17, part 5). The assumptions travel with the figures
(`ASSUMPTIONS`, in the output): `task_core_hours` and `wall_core_hours` bound the truth from
below and above."""

from __future__ import annotations

import math

ASSUMPTIONS = (
    "linear in impressions from the largest size measured (growth_exponent: measured growth "
    "between the smallest and largest size; above 1 the projection is optimistic); a cluster "
    "executor core does what a core did in this run; task_core_hours = executor run time only "
    "(perfect spreading), wall_core_hours = wall time x the run's cores (driver and idle cores "
    "included); shuffle_tb = shuffle written (compressed)"
)


def growth_exponent(
    first_rows: int, last_rows: int, first_seconds: float, last_seconds: float
) -> float | None:
    """k in seconds ~ rows^k between two sizes (1 = linear); None from a single size."""
    if last_rows <= first_rows or first_seconds <= 0:
        return None
    return round(math.log(last_seconds / first_seconds) / math.log(last_rows / first_rows), 3)


def target_label(target: int) -> str:
    """1000000000 -> "1e9"."""
    mantissa, exponent = f"{target:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _steps(entry: dict) -> dict[str, dict]:
    """Every measured step of one size: the copy, then the jobs (generate among them when timed)."""
    copy = {"seconds": entry["copy_seconds"], "spark": entry.get("copy_spark")}
    return {"plain Delta copy": copy, **entry["jobs"]}


def project(per_size: list[dict], cores: int, targets: list[int]) -> dict:
    """Core-hours and shuffle volume of each step at each target size, from the largest size run."""
    first, last = per_size[0], per_size[-1]
    rows = last["impressions"]
    jobs = {}
    for name, step in _steps(last).items():
        spark = step.get("spark") or {}
        before = _steps(first).get(name)
        per_target = {}
        for target in targets:
            scale = target / rows
            figures = {"wall_core_hours": round(step["seconds"] * cores * scale / 3600, 1)}
            if spark:
                figures["task_core_hours"] = round(spark["task_seconds"] * scale / 3600, 1)
                figures["shuffle_tb"] = round(spark["shuffle_write_mb"] * scale / 1e6, 3)
            per_target[target_label(target)] = figures
        jobs[name] = {
            "task_seconds_per_million": round(spark["task_seconds"] * 1e6 / rows, 2) if spark else None,
            "growth_exponent": growth_exponent(first["impressions"], rows, before["seconds"], step["seconds"])
            if before
            else None,
            **per_target,
        }
    return {"from_impressions": rows, "cores": cores, "assumptions": ASSUMPTIONS, "jobs": jobs}
