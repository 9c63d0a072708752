"""Fault injection for the crash tests: kill this process with SIGKILL at a chosen table commit.

`LARR_FAULT_KILL_AFTER_COMMITS=N` kills the process when a job is about to make its commit number
N + 1 (0: before the first table is written; a job's table count: after every table, before the
run manifest). Unset, it costs one environment lookup per commit. Tests only: it exists so that
tests/core/test_consistent_layers.py can stop a real job between its commits, as `kill -9` would.
"""

from __future__ import annotations

import os
import signal

VARIABLE = "LARR_FAULT_KILL_AFTER_COMMITS"
_commits_done = 0


def before_commit() -> None:
    """Called before each table commit and before the run manifest's commit."""
    target = os.environ.get(VARIABLE)
    if target is not None and int(target) == _commits_done:
        os.kill(os.getpid(), signal.SIGKILL)


def after_commit() -> None:
    global _commits_done
    _commits_done += 1
