"""Atomic, resumable checkpoints: `<folder>/step-000040/` holds everything a run needs to go on.

Layout of one checkpoint:
    trainer_config.json   the trainer's config (a dataclass)
    state.json            step, data position (epoch, batches done in it), loss curve, tokens
    model.pt optimizer.pt scheduler.pt   (plain torch / DDP; DeepSpeed writes `deepspeed/` instead)
    rng-rank<r>.pt        every rank's Python / NumPy / torch RNG states
    tokenizer/            the tokenizer (with the special tokens) that goes with the weights
    checksums.json        SHA-256 of every other file, written last

Atomicity: everything is written into `.tmp-step-000040/` and renamed to `step-000040/` only
when complete (a POSIX rename is atomic), so a run killed mid-write leaves a `.tmp-*` folder that
`latest` ignores and the next save removes. Only the newest `keep` checkpoints stay.

Corruption (a disk or copy that damaged a file after the rename): `resume` checks a checkpoint's
checksums before loading it (nothing half-loaded, and every rank decides before any collective
load starts), then guards the load itself (checkpoints from before the checksums, or a file
that matches but still fails). An unusable checkpoint is renamed `step-000040.unusable` (so
pruning and later saves ignore it) and the one before it is tried; with none left the run
starts over (or, after a rejected load, stops: the next run starts over). Either way one line
says so. All ranks share one verdict (`_agree`).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from training.common.device import barrier, dist_info, is_distributed
from training.common.seed import rng_state, set_rng_state

PREFIX = "step-"
TMP_PREFIX = ".tmp-"
MANIFEST = "checksums.json"
UNUSABLE = ".unusable"  # suffix of a checkpoint set aside by `resume`
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
    digests = _digests(tmp, _files(tmp))  # every rank's files are on disk now
    if info.is_primary:
        (tmp / MANIFEST).write_text(json.dumps(digests, indent=1))  # inside tmp: renamed with the rest
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
    rng = torch.load(path / f"rng-rank{info.rank}.pt", weights_only=False)  # read before the engine changes
    engine.load(path)
    set_rng_state(rng)
    return state


def resume(
    folder: str | Path, engine: StatefulEngine, log: Callable[[str], None] = print
) -> tuple[Path, dict] | None:
    """Load the newest usable checkpoint in `folder` (call it on every rank): its path and state,
    or None to train from scratch. Unusable ones are set aside, and rank 0 logs one line if any.
    With none usable after a rejected load, some rank may hold part of it (a DDP rank that loaded
    while another failed, a DeepSpeed load that failed midway): that run stops, the next starts over."""
    unusable: list[str] = []
    loaded = False
    for path in reversed(checkpoints(folder)):
        problem = _agree(verify(path))
        if problem is None:
            state, problem = _guarded_load(path, engine)
            if problem is None:
                _report(unusable, f"using {path.name}", log)
                return path, state
            loaded = True
        unusable.append(f"checkpoint {path} is unusable ({problem})")
        _set_aside(path)
    if loaded:
        raise CheckpointError(
            "; ".join(
                [*unusable, "none left, and a rejected one may be half-loaded: run again to start over"]
            )
        )
    _report(unusable, "starting over from scratch", log)
    return None


def verify(path: str | Path) -> str | None:
    """What is wrong with checkpoint `path` by its checksums (`model.pt: checksum mismatch`), or None
    (call it on every rank: they share the hashing). A checkpoint without `checksums.json` (written
    before them) passes: its load decides."""
    manifest = Path(path) / MANIFEST
    if not manifest.exists():
        return None
    try:
        expected = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return f"{MANIFEST}: cannot be read"
    found = _digests(Path(path), sorted(expected))
    bad = next((name for name in sorted(expected) if found[name] != expected[name]), None)
    if bad is None:
        return None
    return f"{bad}: {'missing' if found[bad] is None else 'checksum mismatch'}"


def load_trainer_config(path: str | Path) -> dict:
    return json.loads((Path(path) / "trainer_config.json").read_text())


def _guarded_load(path: Path, engine: StatefulEngine) -> tuple[dict | None, str | None]:
    problem, state = None, None
    try:
        state = load_checkpoint(path, engine)
    except (CheckpointError, torch.cuda.OutOfMemoryError):
        raise  # a wrong number of ranks or too little memory: not the checkpoint's fault
    except Exception as error:  # whatever a damaged file raises ("PytorchStreamReader failed ...")
        problem = f"cannot be loaded: {_first_line(error)}"
    problem = _agree(problem)  # a rank whose own file failed makes every rank fall back
    return (None, problem) if problem else (state, None)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().split("\n")[0].split(". ")[0]
    return text or type(error).__name__  # EOFError of an empty file has no message


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _digests(folder: Path, names: list[str]) -> dict[str, str | None]:
    """SHA-256 of `folder`'s files `names` (None: missing); each rank hashes its share (DeepSpeed
    checkpoints of a large model are big), and every rank gets them all."""
    info = dist_info()
    mine = {name: _sha256(folder / name) for name in names[info.rank :: info.world_size]}
    return {name: digest for part in _gather(mine) for name, digest in part.items()}


def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _gather(obj: Any) -> list[Any]:
    """Every rank's `obj`, on every rank."""
    if not is_distributed():
        return [obj]
    import torch.distributed as dist

    found: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(found, obj)
    return found


def _agree(problem: str | None) -> str | None:
    """The first rank's problem on every rank, so that all ranks fall back to the same checkpoint."""
    return next((p for p in _gather(problem) if p), None)


def _set_aside(path: Path) -> None:
    if dist_info().is_primary:
        aside = path.with_name(path.name + UNUSABLE)
        shutil.rmtree(aside, ignore_errors=True)  # one set aside before, at the same step
        path.rename(aside)
    barrier()


def _report(unusable: list[str], outcome: str, log: Callable[[str], None]) -> None:
    if unusable and dist_info().is_primary:
        log("; ".join([*unusable, outcome]))
