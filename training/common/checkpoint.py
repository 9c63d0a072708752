"""Atomic, resumable checkpoints: `<folder>/step-000040/` holds everything a run needs to go on.

Layout of one checkpoint:
    trainer_config.json   the trainer's config (a dataclass)
    state.json            step, data position (epoch, batches done in it), loss curve, tokens
    model.pt optimizer.pt scheduler.pt   (plain torch / DDP; DeepSpeed writes `deepspeed/` instead)
    rng-rank<r>.pt        every rank's Python / NumPy / torch RNG states
    tokenizer/            the tokenizer (with the special tokens) that goes with the weights

Atomicity: everything is written into `.tmp-step-000040/` and renamed to `step-000040/` only
when complete (a POSIX rename is atomic), so a run killed mid-write leaves a `.tmp-*` folder that
`latest` ignores and the next save removes. Only the newest `keep` checkpoints stay.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from training.common.device import barrier, dist_info
from training.common.seed import rng_state, set_rng_state

PREFIX = "step-"
TMP_PREFIX = ".tmp-"
_NAME = re.compile(rf"^{PREFIX}(\d+)$")


class CheckpointError(RuntimeError):
    pass


class StatefulEngine(Protocol):
    def save(self, folder: Path) -> None: ...  # called on every rank
    def load(self, folder: Path) -> None: ...


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:06d}"


def checkpoints(folder: str | Path) -> list[Path]:
    """Complete checkpoints in `folder`, oldest first (temp folders of interrupted saves excluded)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest(folder: str | Path) -> Path | None:
    """The newest complete checkpoint in `folder`, or None."""
    found = checkpoints(folder)
    return found[-1] if found else None


def save_checkpoint(
    folder: str | Path,
    step: int,
    *,
    engine: StatefulEngine,
    state: dict,
    config: Any,
    tokenizer=None,
    keep: int = 2,
) -> Path:
    """Write checkpoint `step` atomically on every rank's behalf; returns its final path.

    Call it on every rank (DeepSpeed shards and every rank's RNG state are written by their own
    rank); rank 0 writes the shared files, renames, and prunes to the newest `keep`.
    """
    if keep < 1:
        raise CheckpointError(f"keep must be >= 1, got {keep}")
    info = dist_info()
    folder = Path(folder)
    final = folder / checkpoint_name(step)
    tmp = folder / f"{TMP_PREFIX}{final.name}"
    if info.is_primary:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(f"{TMP_PREFIX}*"):  # left by a run killed mid-save
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
    barrier()
    engine.save(tmp)
    torch.save(rng_state(), tmp / f"rng-rank{info.rank}.pt")
    if info.is_primary:
        data = asdict(config) if is_dataclass(config) else config
        (tmp / "trainer_config.json").write_text(json.dumps(data, indent=2, default=str))
        (tmp / "state.json").write_text(json.dumps({**state, "step": step, "world_size": info.world_size}))
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp / "tokenizer")
    barrier()
    if info.is_primary:
        if final.exists():  # the same step saved again (a rerun): replace it
            shutil.rmtree(final)
        tmp.rename(final)
        for old in checkpoints(folder)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def load_checkpoint(path: str | Path, engine: StatefulEngine) -> dict:
    """Restore the engine (model, optimizer, scheduler) and this rank's RNG states; returns the state."""
    path = Path(path)
    info = dist_info()
    state = json.loads((path / "state.json").read_text())
    if state.get("world_size", 1) != info.world_size:
        raise CheckpointError(
            f"checkpoint {path} was written by {state['world_size']} ranks; this run has {info.world_size}: "
            "resume with the same number of ranks (the data position is per rank)"
        )
    engine.load(path)
    set_rng_state(torch.load(path / f"rng-rank{info.rank}.pt", weights_only=False))
    return state


def load_trainer_config(path: str | Path) -> dict:
    return json.loads((Path(path) / "trainer_config.json").read_text())
