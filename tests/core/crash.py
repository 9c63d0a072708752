"""Kill a real `larr` command with SIGKILL at a chosen table commit (core/faults.py), in a
subprocess, as `kill -9` would: the tables it had committed stay on disk."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from core import faults

REPO = Path(__file__).resolve().parents[2]


def kill_at(lakehouse: Path, commits: int, *command: str) -> None:
    """Run `larr <command> --lakehouse <lakehouse> --force`, killed before its commit number
    `commits` + 1 (the run manifest's commit comes after every table's)."""
    env = {**os.environ, faults.VARIABLE: str(commits), "PYSPARK_PYTHON": sys.executable}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(
        [sys.executable, "-m", "jobs.cli", *command, "--lakehouse", str(lakehouse), "--force"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == -9, done.stderr[-2000:]
