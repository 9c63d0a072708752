"""Every `larr` command ends by printing one JSON line and writing it under <lakehouse>/_runs/."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

from core.catalog import is_remote


def _clean(value: Any) -> Any:
    """JSON has no NaN: report a non-finite figure as null rather than writing invalid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_remote(spark, uri: str, text: str) -> None:
    """Write a small text file through Hadoop's FileSystem (object stores, DBFS)."""
    jvm = spark._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    fs = path.getFileSystem(spark._jsc.hadoopConfiguration())
    stream = fs.create(path, True)
    try:
        stream.write(bytearray(text.encode()))
    finally:
        stream.close()


def emit(job: str, figures: dict[str, Any], lakehouse_root: str, spark=None) -> dict[str, Any]:
    record = _clean({"job": job, **figures})
    line = json.dumps(record, sort_keys=False)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    name = f"{job.replace(' ', '-')}-{stamp}.json"
    if is_remote(lakehouse_root):
        if spark is not None:
            write_remote(spark, f"{lakehouse_root.rstrip('/')}/_runs/{name}", line + "\n")
    else:
        runs = Path(lakehouse_root) / "_runs"
        runs.mkdir(parents=True, exist_ok=True)
        (runs / name).write_text(line + "\n")
    print(line, flush=True)
    return record
