"""One writer per table on a local lakehouse: an advisory lock file per table a command writes.

Two runs of `larr etl clean` on one lakehouse would race their commits; Delta would keep the data
safe but refuse one run late, after its work. The lock refuses it up front, naming the run that
holds it. The operating system drops a lock when its process dies (even by `kill -9`), so a
crashed run never leaves a stale lock behind. Object-store lakehouses have no such lock: there
Delta's own conflict detection reports the race (core/catalog.py `committing`).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

LOCK_FOLDER = "_locks"


class LakehouseBusyError(RuntimeError):
    pass


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another run"
    run = f", MLflow run {info['run_id']}" if info.get("run_id") else ""
    return f"`larr {info.get('command')}` (pid {info.get('pid')} on {info.get('host')}, started {info.get('started')}{run})"


class HeldLocks:
    """The lock files a run holds; `note_run` adds its MLflow run id for whoever is refused."""

    def __init__(self) -> None:
        self.handles: list = []

    def note_run(self, run_id: str) -> None:
        for handle in self.handles:
            handle.seek(0)
            info = json.loads(handle.read() or "{}")
            handle.seek(0)
            handle.truncate(0)
            handle.write(json.dumps({**info, "run_id": run_id}))
            handle.flush()


@contextmanager
def _lock(path: Path, command: str, table: str) -> Iterator[object]:
    handle = path.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LakehouseBusyError(
                f"table {table} is being written by {_holder(path)} in this lakehouse: wait for it to "
                f"finish (or stop it), then run `larr {command}` again"
            ) from None
        handle.truncate(0)
        started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        handle.write(
            json.dumps(
                {"command": command, "pid": os.getpid(), "host": socket.gethostname(), "started": started}
            )
        )
        handle.flush()
        yield handle
    finally:
        handle.close()  # closing the descriptor releases the lock


@contextmanager
def writing(root: str, command: str, tables: Iterable[str]) -> Iterator[HeldLocks]:
    """Hold the lock of every table in `tables` (sorted: a fixed order) for the block."""
    folder = Path(root) / LOCK_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    held = HeldLocks()
    with ExitStack() as stack:
        for table in sorted(set(tables)):
            held.handles.append(stack.enter_context(_lock(folder / f"{table}.lock", command, table)))
        yield held
