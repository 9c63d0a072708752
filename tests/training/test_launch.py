"""Distributed training launched the Spark way (training/common/launch.py): pyspark's
TorchDistributor / DeepspeedTorchDistributor in local mode, 2 processes, gloo on the CPU.

- CTR on 2 ranks equals 1 process with the same global batch (loss curve, AUCs: < 1e-4 apart);
- stage 2 on 2 ranks of `batch_size` b equals 1 process of 2b (loss curve, recalls);
- rank 0 alone logs to MLflow, nested seed runs under the driver's run;
- a relaunch resumes from the distributed run's checkpoint;
- ranks that pinned different snapshot versions are refused before training, in one line.

The ranks import this module (the disagreeing rank function), so PYTHONPATH names the repo.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace

import mlflow
import numpy as np
import pytest
import torch

from core import tracking
from tests.conftest import REPO_ROOT
from tests.training.test_contrastive import _config as contrastive_config
from tests.training.test_contrastive import backbone_dir, base_dir, pairs  # noqa: F401 - fixtures
from tests.training.test_cpt import _config as cpt_config
from tests.training.test_cpt import corpus  # noqa: F401 - fixture
from training.common.data import DataError, DeltaSnapshot
from training.common.device import dist_info
from training.common.launch import (
    LaunchConfig,
    agree_on_snapshots,
    check_launch,
    rank_report,
    run_distributed,
)
from training.ctr import train
from training.ctr.inputs import ModelConfig
from training.ctr.train import CtrConfig, CtrData
from training.embedding import contrastive
from training.lm import cpt
from training.lm.cpt import CptConfig

QUIET = lambda _: None  # noqa: E731
TWO = LaunchConfig(launcher="torch_distributor", num_processes=2, local_mode=True, use_gpu=False)
TOLERANCE = 1e-4  # |1 process - 2 processes| of losses and metrics (measured: ~1e-7 .. 1e-6)
# GAUC averages per-user AUCs over a handful of impressions each: a 1e-7 difference in a
# prediction (gloo sums gradients in another order) flips a near-tie and moves it by ~1e-4
GAUC_TOLERANCE = 1e-3


@pytest.fixture()
def ranks_import_tests(monkeypatch):
    """The rank processes unpickle functions of this module: put the repo on their path."""
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    )


def _ctr_cfg(tmp_path, name: str, **kwargs) -> CtrConfig:
    base = dict(
        model="larr",
        seeds=(1,),
        batch_size=256,
        max_steps=6,
        network=ModelConfig(
            embedding_dim=4, hidden=(16,), expert_hidden=(16,), tower_hidden=(8,), scene_heads=2
        ),
        checkpoint_dir=str(tmp_path / name),
        progress=False,
        log_model=False,
    )
    return CtrConfig(**{**base, **kwargs})


def _history(run_id: str, key: str = "train_loss") -> list[float]:
    return [
        m.value for m in sorted(mlflow.MlflowClient().get_metric_history(run_id, key), key=lambda m: m.step)
    ]


def _children(parent_id: str) -> list:
    client = mlflow.MlflowClient()
    experiment = client.get_run(parent_id).info.experiment_id
    return client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent_id}'")


# -- config and pure functions ---------------------------------------------------------------------
def test_the_launch_section_is_checked_and_leaves_checkpoint_keys_alone():
    assert CtrConfig().launch == LaunchConfig() and not CtrConfig().launch.enabled
    with pytest.raises(
        ValueError, match="launcher must be one of none, torch_distributor, deepspeed_distributor"
    ):
        LaunchConfig(launcher="mpirun")
    with pytest.raises(ValueError, match="batch_size 2400 must divide by launch.num_processes 7"):
        CtrConfig(batch_size=2400, launch=replace(TWO, num_processes=7))
    with pytest.raises(ValueError, match="CTR trains with torch_distributor"):
        CtrConfig(launch=replace(TWO, launcher="deepspeed_distributor"))
    with pytest.raises(ValueError, match="deepspeed_distributor needs deepspeed_config"):
        CptConfig(launch=replace(TWO, launcher="deepspeed_distributor"))
    with pytest.raises(ValueError, match="launch with launch.launcher deepspeed_distributor"):
        CptConfig(launch=TWO, deepspeed_config="jobs/deepspeed/zero2.json")
    assert check_launch(replace(TWO, launcher="deepspeed_distributor"), deepspeed_config="z.json") is None
    with pytest.raises(ValueError, match="device cuda needs launch.use_gpu: true"):
        CtrConfig(device="cuda", launch=TWO)
    # how the processes start is bookkeeping: the same checkpoints resume either way
    assert CtrConfig(launch=TWO).key("samples@0") == CtrConfig().key("samples@0")
    assert CptConfig(launch=TWO).key() == CptConfig().key()
    assert contrastive.ContrastiveConfig(launch=TWO).key() == contrastive.ContrastiveConfig().key()


def test_rank_slices_of_a_global_batch_give_its_loss_weighted_or_not():
    """The mean over ranks of the rank losses (DDP's average) is the global batch's loss."""
    from types import SimpleNamespace

    rng = np.random.default_rng(0)
    batch = {"click": rng.integers(0, 2, 8).astype(np.float32), "weight": rng.uniform(0, 5, 8)}
    logits = torch.from_numpy(rng.normal(size=8).astype(np.float32))

    def loss(rows, weights=None, norm=None):
        out = SimpleNamespace(ctr_logit=logits[rows], ctcvr_logit=-logits[rows], align_loss=None)
        click = torch.from_numpy(batch["click"][rows])
        return train.loss_of(out, click, click, 0.05, weights, norm)

    parts = [train.rank_slice(batch, r, 2) for r in range(2)]
    assert [p["click"].tolist() for p in parts] == [batch["click"][:4].tolist(), batch["click"][4:].tolist()]
    everything = np.arange(8)
    assert float((loss(everything[:4]) + loss(everything[4:])) / 2) == pytest.approx(float(loss(everything)))
    w = train.sample_weights(batch["weight"], "log", "cpu")
    norm = w.sum() / 2
    halves = (loss(everything[:4], w[:4], norm) + loss(everything[4:], w[4:], norm)) / 2
    assert float(halves) == pytest.approx(float(loss(everything, w)), rel=1e-6)
    with pytest.raises(train.CtrError, match="does not split evenly over 3 ranks"):
        train.rank_slice(batch, 0, 3)


def test_one_process_agrees_with_itself_without_a_process_group():
    snapshot = DeltaSnapshot("samples.ctr", 3, "/x", ("file:///x/a.parquet",), ("click",), (), (), 10)
    agree_on_snapshots([snapshot])  # no group: nothing to compare


def test_the_distributor_starts_two_gloo_ranks_and_returns_rank_0s_value(spark):
    report = run_distributed(rank_report, TWO)
    assert report["world_size"] == 2
    assert [r["rank"] for r in report["ranks"]] == [0, 1] and {r["backend"] for r in report["ranks"]} == {
        "gloo"
    }
    assert {r["device"] for r in report["ranks"]} == {"cpu"} and report["ranks"][0]["pid"] != os.getpid()


# -- the ranks disagree -----------------------------------------------------------------------------
def _disagreeing_ranks(cfg: CtrConfig, data: CtrData, folders: dict) -> dict:
    """Rank 1 trains on a newer samples.ctr version than rank 0 pinned (as if it had pinned its own)."""
    if dist_info().rank == 1:
        data = replace(data, train=replace(data.train, version=data.train.version + 1))
    return train.train_seeds(cfg, data, folders)


def test_ranks_that_pinned_different_versions_are_refused_before_training(
    spark, tmp_path, ranks_import_tests
):
    snapshot = DeltaSnapshot(
        "samples.ctr", 7, "/x", ("file:///x/a.parquet",), ("click",), (), ("split",), 10, "split = 'train'"
    )
    data = CtrData(
        train=snapshot,
        test=replace(snapshot, where="split = 'test'"),
        neg_rate=0.3,
        bayes={},
        scene_vectors=None,
        encoder_uri=None,
    )
    cfg = _ctr_cfg(tmp_path, "ckpt", model="ple", launch=TWO)
    with pytest.raises(DataError) as refused:
        run_distributed(_disagreeing_ranks, cfg.launch, cfg, data, {1: str(tmp_path / "ckpt" / "seed-1")})
    message = str(refused.value)
    assert "\n" not in message  # one line, as `larr` prints it
    assert message.startswith(
        "ranks disagree on the data: rank 1 pinned samples.ctr where split = 'train' version 8, rank 0 version 7"
    )
    assert "refused before training" in message
    assert not (tmp_path / "ckpt").exists()  # nothing was trained or written


def _rank_1_fails_alone(message: str) -> None:
    import torch.distributed as dist

    if dist_info().rank == 1:
        raise train.CtrError(message)
    dist.barrier()  # rank 0 waits for rank 1, which never comes: the run must stop, not hang


def test_a_user_error_of_one_rank_stops_the_run_and_reaches_the_driver(
    spark, ranks_import_tests, monkeypatch
):
    from training.common import launch

    monkeypatch.setattr(launch, "AGREE_SECONDS", 2.0)
    with pytest.raises(train.CtrError, match="^only rank 1 saw this$"):
        run_distributed(_rank_1_fails_alone, TWO, "only rank 1 saw this")


# -- CTR: 2 processes = 1 process ---------------------------------------------------------------------
@pytest.mark.slow
def test_ctr_on_two_ranks_equals_one_process_and_rank_0_alone_logs(spark, ctr_world, tmp_path):  # noqa: F811
    catalog, export = ctr_world
    single = _ctr_cfg(tmp_path, "ckpt-1", scene_vectors=export)
    with tracking.stage_run("ctr", catalog.root, single) as one_run:
        one = train.run(spark, catalog, single, log=QUIET)
    double = replace(single, checkpoint_dir=str(tmp_path / "ckpt-2"), launch=TWO)
    with tracking.stage_run("ctr", catalog.root, double) as two_run:
        two = train.run(spark, catalog, double, log=QUIET)
    assert two["world_size"] == 2 and one["world_size"] == 1
    (seed_one,), (seed_two,) = one["per_seed"], two["per_seed"]
    assert seed_two["train_steps"] == seed_one["train_steps"] == 6
    assert seed_two["final_loss"] == pytest.approx(seed_one["final_loss"], abs=TOLERANCE)
    for key in ("ctr_auc", "ctcvr_auc", "logloss"):
        assert seed_two[key] == pytest.approx(seed_one[key], abs=TOLERANCE), key
    for key in ("ctr_gauc", "ctcvr_gauc"):
        assert seed_two[key] == pytest.approx(seed_one[key], abs=GAUC_TOLERANCE), key
    assert seed_two["unknown_scene_values_train"] == seed_one["unknown_scene_values_train"]
    # rank 0 alone logged: one nested seed run under the driver's run, one loss per step
    (child_one,), (child_two,) = _children(one_run.info.run_id), _children(two_run.info.run_id)
    assert two["seed_runs"] == [child_two.info.run_id]
    curve_one, curve_two = _history(child_one.info.run_id), _history(child_two.info.run_id)
    assert len(curve_two) == 6 and np.abs(np.subtract(curve_two, curve_one)).max() < TOLERANCE
    assert _history(child_two.info.run_id, "lr") == pytest.approx(_history(child_one.info.run_id, "lr"))
    assert _history(child_two.info.run_id, "lr") == pytest.approx([single.learning_rate] * 6)
    assert len(_history(child_two.info.run_id, "samples_per_s")) == 6  # rank 0 logged while training
    print(
        "ctr 1 vs 2 processes: max |d loss| over the curve "
        f"{np.abs(np.subtract(curve_two, curve_one)).max():.2e}, |d ctr_auc| "
        f"{abs(seed_two['ctr_auc'] - seed_one['ctr_auc']):.2e}, |d ctcvr_auc| "
        f"{abs(seed_two['ctcvr_auc'] - seed_one['ctcvr_auc']):.2e}"
    )


@pytest.mark.slow
def test_a_relaunch_resumes_the_distributed_checkpoint(spark, ctr_world, tmp_path):  # noqa: F811
    catalog, _ = ctr_world
    cfg = _ctr_cfg(tmp_path, "ckpt", model="ple", max_steps=4, launch=TWO)
    first = train.run(spark, catalog, cfg, log=QUIET)
    folder = tmp_path / "ckpt" / "seed-1" / "step-000004"
    assert first["per_seed"][0]["resumed_from_step"] is None
    assert {p.name for p in folder.iterdir()} >= {"model.pt", "rng-rank0.pt", "rng-rank1.pt", "state.json"}
    again = train.run(spark, catalog, replace(cfg, max_steps=6), log=QUIET)  # a new set of processes
    resumed = again["per_seed"][0]
    assert resumed["resumed_from_step"] == 4 and resumed["train_steps"] == 6
    straight = train.run(
        spark,
        catalog,
        replace(cfg, max_steps=6, launch=LaunchConfig(), checkpoint_dir=str(tmp_path / "one")),
        log=QUIET,
    )
    assert resumed["final_loss"] == pytest.approx(straight["per_seed"][0]["final_loss"], abs=TOLERANCE)
    assert resumed["ctr_auc"] == pytest.approx(straight["per_seed"][0]["ctr_auc"], abs=TOLERANCE)


# -- stage 2: 2 ranks of b pairs = 1 process of 2b ----------------------------------------------------
@pytest.mark.slow
def test_contrastive_on_two_ranks_equals_one_process_with_the_global_batch(
    spark,
    pairs,  # noqa: F811
    backbone_dir,  # noqa: F811
    tmp_path,
):
    single = contrastive_config(backbone_dir, tmp_path, batch_size=4, checkpoint_dir=str(tmp_path / "c1"))
    with tracking.stage_run("contrastive", pairs.root, single) as one_run:
        one = contrastive.run(spark, pairs, single, log=QUIET)
    double = replace(single, batch_size=2, checkpoint_dir=str(tmp_path / "c2"), launch=TWO)
    with tracking.stage_run("contrastive", pairs.root, double) as two_run:
        two = contrastive.run(spark, pairs, double, log=QUIET)
    assert two["world_size"] == 2 and two["steps"] == one["steps"] == 3
    curve_one, curve_two = _history(one_run.info.run_id), _history(two_run.info.run_id)
    assert len(curve_two) == 3 and all(math.isfinite(v) for v in curve_two)  # rank 0 alone logged
    gap = np.abs(np.subtract(curve_two, curve_one)).max()
    assert gap < TOLERANCE
    for key in ("recall_at_1_user_poi", "recall_at_10_poi_poi", "mrr_user_poi", "mrr_poi_poi"):
        assert two[key] == pytest.approx(one[key], abs=TOLERANCE), key
    assert two["model_uri"] and mlflow.MlflowClient().get_run(two_run.info.run_id).data.tags["larr.model_uri"]
    print(f"contrastive 2 x 2 pairs vs 1 x 4 pairs: max |d loss| over the curve {gap:.2e}")


# -- stage 1 with DeepSpeed: DeepspeedTorchDistributor on the CPU ----------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_cpt_under_the_deepspeed_distributor_on_two_cpu_ranks(
    spark,
    corpus,  # noqa: F811
    base_dir,  # noqa: F811
    tmp_path,
    zero,
):
    launch = replace(TWO, launcher="deepspeed_distributor")
    cfg = cpt_config(base_dir, tmp_path / "ckpt", max_steps=3, train_layers=0, checkpoint_every=0)
    cfg = replace(cfg, deepspeed_config=str(REPO_ROOT / "jobs" / "deepspeed" / f"{zero}.json"), launch=launch)
    with tracking.stage_run("cpt", corpus.root, cfg) as mlflow_run:
        summary = cpt.run(spark, corpus, cfg, log=QUIET)
    assert summary["world_size"] == 2 and summary["steps"] == 3 and math.isfinite(summary["final_loss"])
    assert math.isfinite(summary["heldout_ppl_after"]) and summary["model_uri"]
    assert (tmp_path / "ckpt" / "step-000003" / "deepspeed").is_dir()  # DeepSpeed's engine wrote it
    assert len(_history(mlflow_run.info.run_id)) == 3  # rank 0 alone logged the curve
