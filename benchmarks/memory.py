"""Peak memory of one benchmarked step, from the processes themselves: the Spark JVM's peak
resident set (Linux's VmHWM, reset before the step through /proc/<pid>/clear_refs) and the peak of
its old generation (the JVM's own MemoryPoolMXBean, reset likewise: what outlived the young
collections, the part of the heap that runs into the driver-memory limit; the pools' peaks are
not summed, since eden's and the old generation's peaks need not coincide), and this Python process's
peak resident set (`ru_maxrss`, which cannot be reset: the process's peak so far).

In local mode the JVM is the driver and the executor at once, so its peak is the whole job's; under
a cluster master it is the driver's alone. Spark's own executor peak metrics are not used: in local
mode they stay at zero unless executor metrics polling is switched on.
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the LLM benchmark reads `python_peak_rss_mb` without Spark
    from pyspark.sql import SparkSession

MB = 1024 * 1024
RESET_PEAK_RSS = "5"  # /proc/<pid>/clear_refs: reset the peak resident set to the current one


def _jvm(spark: SparkSession):
    try:
        return spark.sparkContext._jvm
    except Exception:  # Spark Connect: no JVM on this side
        return None


def _proc_status(pid: int) -> Path | None:
    path = Path(f"/proc/{pid}/status")
    return path if path.exists() else None


def _vm_hwm_mb(status: Path) -> float | None:
    for line in status.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)  # kB
    return None


OLD_GENERATION = ("Old Gen", "Tenured Gen")  # G1 / Parallel / CMS, and Serial's pool names


def _old_generation(jvm) -> list:
    pools = jvm.java.lang.management.ManagementFactory.getMemoryPoolMXBeans()
    found = [pools.get(i) for i in range(pools.size())]
    return [pool for pool in found if any(name in str(pool.getName()) for name in OLD_GENERATION)]


def python_peak_rss_mb() -> float:
    """This process's peak resident set so far, in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


@contextmanager
def peak_memory(spark: SparkSession) -> Iterator[dict]:
    """Yields a dict that is filled, when the block ends, with the block's peak memory figures
    (None where this platform or master does not offer them)."""
    figures: dict = {}
    jvm = _jvm(spark)
    pools, status = [], None
    if jvm is not None:
        pools = _old_generation(jvm)
        for pool in pools:
            pool.resetPeakUsage()
        status = _proc_status(jvm.java.lang.ProcessHandle.current().pid())
        if status is not None:
            # not ours to reset (another user's JVM): the figure is then the process's peak
            with suppress(OSError):
                (status.parent / "clear_refs").write_text(RESET_PEAK_RSS)
    try:
        yield figures
    finally:
        figures["jvm_peak_rss_mb"] = _vm_hwm_mb(status) if status is not None else None
        figures["jvm_old_gen_peak_mb"] = (
            round(sum(pool.getPeakUsage().getUsed() for pool in pools) / MB, 1) if pools else None
        )
        figures["jvm_heap_max_mb"] = (
            round(jvm.java.lang.Runtime.getRuntime().maxMemory() / MB, 1) if jvm else None
        )
        figures["python_peak_rss_mb"] = round(python_peak_rss_mb(), 1)
