"""Checkpoints that survive corruption: a checkpoint whose files fail their checksums or their load
is reported in one line and set aside, the one before it is used, and with none left the run
starts over; two gloo ranks agree on the checkpoint even when only one rank's file is bad."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch

from tests.training.common.toy import batches, engine, square_loss
from training.common.checkpoint import MANIFEST, CheckpointError, checkpoints
from training.common.loop import LoopSettings, train_loop


def _train(folder: Path, max_steps: int = 6) -> tuple[object, list[str]]:
    """A fresh engine trained to `max_steps` with checkpoints every 2 steps (keep 2), and its log."""
    messages: list[str] = []
    settings = LoopSettings(
        max_steps=max_steps,
        checkpoint_every=2,
        keep_checkpoints=2,
        checkpoint_dir=str(folder),
        progress=False,
    )
    result = train_loop(
        engine(), batches, square_loss, settings, config={}, log=messages.append, step_metrics=False
    )
    return result, messages


@pytest.fixture()
def trained(tmp_path) -> Path:
    folder = tmp_path / "seed-1"
    _train(folder)
    assert [p.name for p in checkpoints(folder)] == ["step-000004", "step-000006"]
    return folder


def _truncate(path: Path, size: int) -> None:
    with path.open("r+b") as f:
        f.truncate(size)


def test_every_file_of_a_checkpoint_has_its_sha256_in_the_manifest(trained):
    manifest = json.loads((trained / "step-000006" / MANIFEST).read_text())
    assert {"model.pt", "optimizer.pt", "scheduler.pt", "rng-rank0.pt", "state.json"} <= set(manifest)
    assert all(len(digest) == 64 for digest in manifest.values())


@pytest.mark.parametrize("size", [1000, 0])
def test_a_truncated_newest_model_falls_back_to_the_previous_checkpoint(trained, size):
    _truncate(trained / "step-000006" / "model.pt", size)
    result, messages = _train(trained, max_steps=8)
    assert messages[0] == (
        f"checkpoint {trained / 'step-000006'} is unusable (model.pt: checksum mismatch); using step-000004"
    )
    assert result.resumed_from == 4 and len(messages) == 2  # then "resuming from ..." and nothing else
    # set aside, so pruning keeps the checkpoints written after the fall-back
    assert [p.name for p in checkpoints(trained)] == ["step-000006", "step-000008"]
    assert (trained / "step-000006.unusable").is_dir()


def test_a_loadable_file_that_fails_its_checksum_is_refused(trained):
    model = trained / "step-000006" / "model.pt"
    weights = torch.load(model, weights_only=True)
    torch.save({k: v + 1 for k, v in weights.items()}, model)  # a valid file, other weights
    result, messages = _train(trained)
    assert messages[0].endswith("is unusable (model.pt: checksum mismatch); using step-000004")
    assert result.resumed_from == 4


def test_a_checkpoint_without_checksums_is_guarded_by_its_load(trained):
    for path in checkpoints(trained):  # as written before the checksums
        (path / MANIFEST).unlink()
    _truncate(trained / "step-000006" / "optimizer.pt", 1000)
    result, messages = _train(trained)
    assert messages[0] == (
        f"checkpoint {trained / 'step-000006'} is unusable (cannot be loaded: PytorchStreamReader failed "
        "reading zip archive: failed finding central directory); using step-000004"
    )
    assert result.resumed_from == 4


def test_when_every_load_failed_the_run_stops_and_the_next_starts_over(trained):
    for path in checkpoints(trained):  # the engine may hold part of a failed load: not a clean start
        (path / MANIFEST).unlink()
        _truncate(path / "scheduler.pt", 1000)
    with pytest.raises(CheckpointError, match=r"step-000004 is unusable .*run again to start over$"):
        _train(trained)
    result, messages = _train(trained)  # both were set aside
    assert result.resumed_from is None and messages == []


def test_a_sound_checkpoint_without_checksums_still_resumes(trained):
    (trained / "step-000006" / MANIFEST).unlink()
    result, messages = _train(trained, max_steps=8)
    assert result.resumed_from == 6 and messages[0].startswith("resuming from")


def test_with_every_checkpoint_corrupt_the_run_starts_over_and_says_so(trained, tmp_path):
    _truncate(trained / "step-000006" / "model.pt", 0)
    _truncate(trained / "step-000004" / "model.pt", 1000)
    result, messages = _train(trained)
    assert messages == [
        f"checkpoint {trained / 'step-000006'} is unusable (model.pt: checksum mismatch); "
        f"checkpoint {trained / 'step-000004'} is unusable (model.pt: checksum mismatch); "
        "starting over from scratch"
    ]
    straight, _ = _train(tmp_path / "straight")
    assert result.resumed_from is None and result.losses == straight.losses  # really from scratch
    assert [p.name for p in checkpoints(trained)] == ["step-000004", "step-000006"]


# -- two ranks ------------------------------------------------------------------------------------
def _rank(rank: int, port: int, folder: str, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        result, messages = _train(Path(folder), max_steps=6)
        Path(out, f"rank{rank}.json").write_text(json.dumps([result.resumed_from, messages]))
        dist.barrier()  # both ranks done before the group goes
    finally:
        dist.destroy_process_group()
    # done: skip the interpreter's teardown, where a gloo thread left joinable can abort the
    # process ("terminate called without an active exception", seen once in CI under load)
    os._exit(0)


def _two_ranks(folder: Path, out: Path) -> list[tuple[int | None, list[str]]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_rank, args=(port, str(folder), str(out)), nprocs=2)
    return [tuple(json.loads((out / f"rank{r}.json").read_text())) for r in (0, 1)]


def test_two_ranks_fall_back_together_when_only_one_ranks_file_is_bad(tmp_path):
    folder = tmp_path / "seed-1"
    assert [r for r, _ in _two_ranks(folder, tmp_path)] == [None, None]
    for path in checkpoints(folder):  # without checksums only rank 1's load finds the damage
        (path / MANIFEST).unlink()
    _truncate(folder / "step-000006" / "rng-rank1.pt", 0)
    (first, log0), (second, log1) = _two_ranks(folder, tmp_path)
    assert first == second == 4
    assert (
        log0[0]
        == f"checkpoint {folder / 'step-000006'} is unusable (cannot be loaded: Ran out of input); using step-000004"
    )
    assert log1 == []  # rank 0 alone logs
