"""DeepSpeed on the CPU (gloo, torch AdamW): ZeRO-2 and ZeRO-3 runs of both stages reproduce the
plain-torch run of the same config, and ZeRO-3 saves a whole model from partitioned weights.

Each DeepSpeed run is its own process (DeepSpeed joins a process group and patches torch)."""

import json
import pickle
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from etl.text.slices import token_slices
from tests.conftest import REPO_ROOT
from tests.etl.text_fixtures import SCHEMA
from tests.training.test_contrastive import _config as contrastive_config
from tests.training.test_contrastive import backbone_dir, base_dir, pairs  # noqa: F401 - fixtures
from tests.training.test_cpt import _config as cpt_config
from tests.training.test_cpt import corpus  # noqa: F401 - fixture
from training.embedding import contrastive
from training.lm import cpt
from training.lm.backbone import add_special_tokens, load_backbone

SLICES = token_slices(SCHEMA)  # the synthetic world's declared slices
ZERO2 = str(REPO_ROOT / "jobs" / "deepspeed" / "zero2.json")
ZERO3 = str(REPO_ROOT / "jobs" / "deepspeed" / "zero3.json")

RUN = """
import json, pickle, sys
import torch
torch.set_num_threads(1)
from training.common.engine import full_weights
from training.lm.backbone import save_backbone

stage, cfg, data, out = pickle.loads(open(sys.argv[1], "rb").read())
module = __import__(f"training.{stage}", fromlist=["train"])
trained = module.train(cfg, data, cfg.checkpoint_dir, log=lambda _: None)
model = trained.model
with full_weights(model.parameters()):
    backbone = model if stage == "lm.cpt" else model.backbone
    save_backbone(backbone, trained.preprocessor, out)
    projection = None if stage == "lm.cpt" else model.projection.weight.detach().clone().tolist()
print(json.dumps({"losses": trained.losses, "summary": trained.summary, "projection": projection}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _deepspeed_run(tmp_path: Path, stage: str, cfg, data) -> tuple[dict, Path]:
    out = tmp_path / f"saved-{Path(cfg.deepspeed_config).stem}"
    job = tmp_path / f"job-{Path(cfg.deepspeed_config).stem}.pkl"
    job.write_bytes(pickle.dumps((stage, cfg, data, str(out))))
    env = {
        **__import__("os").environ,
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
    }
    done = subprocess.run(
        [sys.executable, "-c", RUN, str(job)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), out


def _assert_same_weights(folder: Path, reference: torch.nn.Module, initial: Path) -> None:
    """The saved model is the plain-torch one: per matrix, the two differ by under 1% of how far
    training moved it (Adam's normalised steps turn float noise in the gradients into visible, but
    small, differences, so exact equality is not the bar)."""
    saved, _ = load_backbone(folder, dtype=torch.float32)
    start, tokenizer = load_backbone(initial, dtype=torch.float32)
    add_special_tokens(start, tokenizer, SLICES)
    expected, start = reference.state_dict(), start.state_dict()
    assert saved.state_dict().keys() == expected.keys()
    moved = 0
    for name, tensor in saved.state_dict().items():
        assert tensor.shape == expected[name].shape, name
        travel = float((expected[name] - start[name]).abs().mean())
        moved += travel > 0
        assert float((tensor - expected[name]).abs().mean()) <= 0.01 * travel + 1e-7, name
    assert moved > 0


@pytest.mark.parametrize("zero", [ZERO2, ZERO3], ids=["zero2", "zero3"])
def test_cpt_under_deepspeed_matches_plain_torch(spark, corpus, base_dir, tmp_path, zero):  # noqa: F811
    cfg = cpt_config(base_dir, tmp_path / "ckpt-torch", max_steps=3, train_layers=0, checkpoint_every=0)
    data = cpt.prepare(spark, corpus, cfg)
    plain = cpt.train(cfg, data, cfg.checkpoint_dir, log=lambda _: None)
    ds_cfg = replace(cfg, deepspeed_config=zero, checkpoint_dir=str(tmp_path / "ckpt-ds"))
    result, saved = _deepspeed_run(tmp_path, "lm.cpt", ds_cfg, data)
    assert torch.allclose(torch.tensor(result["losses"]), torch.tensor(plain.losses), atol=1e-4)
    assert result["summary"]["trainable_params"] == plain.summary["trainable_params"]
    assert result["summary"]["heldout_ppl_after"] == pytest.approx(
        plain.summary["heldout_ppl_after"], rel=1e-3
    )
    _assert_same_weights(saved, plain.model, base_dir)  # ZeRO-3: gathered from the partitions
    assert (tmp_path / "ckpt-ds" / "step-000003" / "deepspeed").is_dir()


def test_zero3_refuses_the_partial_training_of_the_cpu_demo(base_dir, tmp_path):  # noqa: F811
    cfg = cpt_config(base_dir, tmp_path / "ckpt", train_layers=1, deepspeed_config=ZERO3)
    data = cpt.CptData(train=None, heldout=None, train_rows=1, heldout_rows=0, empty_targets=0)
    with pytest.raises(cpt.CptError, match="train_layers > 0 .* ZeRO-3: set train_layers: 0"):
        cpt.train(cfg, data, cfg.checkpoint_dir, log=lambda _: None)


def test_contrastive_under_zero2_matches_plain_torch(spark, pairs, backbone_dir, tmp_path):  # noqa: F811
    cfg = contrastive_config(
        backbone_dir, tmp_path, checkpoint_dir=str(tmp_path / "ckpt-torch"), probe_attribute=""
    )
    data = contrastive.prepare(spark, pairs, cfg)
    plain = contrastive.train(cfg, data, cfg.checkpoint_dir, log=lambda _: None)
    ds_cfg = replace(cfg, deepspeed_config=ZERO2, checkpoint_dir=str(tmp_path / "ckpt-ds"))
    result, saved = _deepspeed_run(tmp_path, "embedding.contrastive", ds_cfg, data)
    assert torch.allclose(torch.tensor(result["losses"]), torch.tensor(plain.losses), atol=1e-4)
    assert result["summary"]["recall_at_10_user_poi"] == pytest.approx(plain.summary["recall_at_10_user_poi"])
    assert torch.allclose(torch.tensor(result["projection"]), plain.model.projection.weight, atol=2e-5)
    _assert_same_weights(saved, plain.model.backbone, backbone_dir)
