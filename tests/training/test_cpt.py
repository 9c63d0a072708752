import json
import math
import pickle
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import mlflow
import pytest
import torch

from core import tracking
from core.schema_table import write_schema
from etl.text.slices import token_slices
from etl.tokens import special_tokens, wrap_text
from tests.conftest import REPO_ROOT
from tests.etl.text_fixtures import SCHEMA
from training.common.checkpoint import TMP_PREFIX, checkpoints, latest
from training.common.guard import NonFiniteLossError
from training.common.schedule import warmup_cosine
from training.common.text import truncate_middle
from training.lm.backbone import add_special_tokens, load_backbone, save_backbone
from training.lm.cpt import CptConfig, build_sample, collate, encode, prepare, run, train
from training.lm.tiny import tiny_llama, tiny_tokenizer

SLICES = token_slices(SCHEMA)  # the synthetic world's declared slices

DISHES = ["claypot rice", "roast goose", "cold noodles", "hot pot", "iced tea", "dumplings", "milk tea"]


def _corpus_rows(n_train: int = 40, n_heldout: int = 8) -> list[tuple]:
    rows = []
    for i in range(n_train + n_heldout):
        name = wrap_text("POI_name", f"Shop {i}") + wrap_text("POI_loc", f"Guangzhou, district {i % 4}")
        dishes = ", ".join(DISHES[(i + k) % len(DISHES)] for k in range(1 + i % 4))  # lengths differ
        target = wrap_text("POI_dishes", dishes) + wrap_text("POI_price", ["cheap", "medium"][i % 2])
        rows.append((i, "poi", name, target, "train" if i < n_train else "heldout"))
    return rows


@pytest.fixture()
def corpus(spark, catalog):
    schema = "poi_id long, source string, input_text string, target_text string, split string"
    write_schema(spark, catalog, SCHEMA)
    catalog.write(spark.createDataFrame(_corpus_rows(), schema).repartition(2), "corpus.cpt")
    return catalog


@pytest.fixture()
def backbone_dir(tmp_path) -> Path:
    tokenizer = tiny_tokenizer()
    return save_backbone(tiny_llama(tokenizer), tokenizer, tmp_path / "tiny")


def _config(backbone_dir: Path, checkpoint_dir: Path, **overrides) -> CptConfig:
    settings = dict(
        backbone=str(backbone_dir),
        max_length=48,
        batch_size=4,
        grad_accum=2,
        lr=1e-2,
        warmup_steps=1,
        max_steps=6,
        checkpoint_every=2,
        keep_checkpoints=2,
        length_buffer=3,  # 3 batches per buffer: the kill at step 2 (4 batches done) is mid-buffer
        eval_batch_size=8,
        device="cpu",
        progress=False,
        seed=3,
        checkpoint_dir=str(checkpoint_dir),
    )
    settings.update(overrides)
    return CptConfig(**settings)


def test_labels_mask_input_tokens_and_padding():
    ids, labels = build_sample([5, 6, 7], [8, 9], eos_id=2, max_length=16)
    assert ids == [5, 6, 7, 8, 9, 2]
    assert labels == [-100, -100, -100, 8, 9, 2]
    batch = collate([(ids, labels), build_sample([11], [12], eos_id=2, max_length=16)], pad_id=2)
    assert torch.equal(batch["input_ids"], torch.tensor([[5, 6, 7, 8, 9, 2], [11, 12, 2, 2, 2, 2]]))
    assert torch.equal(batch["attention_mask"], torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]]))
    assert torch.equal(
        batch["labels"], torch.tensor([[-100, -100, -100, 8, 9, 2], [-100, 12, 2, -100, -100, -100]])
    )
    # too long: each side loses its middle, the input at most half, the target keeps its end and eos
    ids, labels = build_sample(list(range(10, 20)), list(range(30, 40)), eos_id=2, max_length=8)
    assert ids == [10, 11, 18, 19, 30, 31, 39, 2] and labels == [-100] * 4 + [30, 31, 39, 2]
    assert truncate_middle([1, 2, 3, 4, 5], 3) == [1, 2, 5] and truncate_middle([1, 2], 5) == [1, 2]
    # a short target leaves the input more than half
    assert build_sample(list(range(10, 20)), [], eos_id=2, max_length=8)[1] == [-100] * 7 + [2]

    # with a real tokenizer: the loss sees exactly the target's tokens (the closing token last, then eos)
    tokenizer = tiny_tokenizer()
    add_special_tokens(tiny_llama(tokenizer), tokenizer, SLICES)
    source, target = wrap_text("POI_name", "Aunt Li"), wrap_text("POI_dishes", "claypot rice")
    [(ids, labels)] = encode(tokenizer, [source], [target], max_length=64)
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    n_input = len(tokenizer(source, add_special_tokens=False)["input_ids"])
    assert labels == [-100] * n_input + target_ids + [tokenizer.eos_token_id]
    assert ids[n_input:] == labels[n_input:] and labels[-2] == tokenizer.convert_tokens_to_ids(
        "</POI_dishes>"
    )


def test_warmup_then_cosine():
    values = [warmup_cosine(s, warmup_steps=2, max_steps=10, min_ratio=0.1) for s in range(12)]
    assert values[:3] == [0.5, 1.0, 1.0]
    assert all(a >= b for a, b in zip(values[2:], values[3:], strict=False))
    assert math.isclose(values[10], 0.1) and values[11] == 0.1


def test_one_step_through_petastorm_trains_only_the_chosen_weights(spark, corpus, backbone_dir, tmp_path):
    cfg = _config(backbone_dir, tmp_path / "ckpt", max_steps=1, grad_accum=1, train_layers=1)
    with tracking.stage_run("cpt", corpus.root, cfg) as mlflow_run:
        summary = run(spark, corpus, cfg, log=lambda _: None)
    assert summary["steps"] == 1 and math.isfinite(summary["final_loss"])
    assert summary["train_rows"] == 40 and summary["heldout_rows"] == 8 and summary["empty_targets"] == 0
    assert math.isfinite(summary["heldout_ppl_before"]) and math.isfinite(summary["heldout_ppl_after"])
    assert summary["heldout_ppl_before"] != summary["heldout_ppl_after"] and summary["tokens_per_s"] > 0

    before, tokenizer = load_backbone(backbone_dir)
    add_special_tokens(before, tokenizer, SLICES)
    after, after_tokenizer = load_backbone(summary["model_uri"])
    assert after_tokenizer.get_vocab() == tokenizer.get_vocab()  # the special tokens travel with the model
    old, new = before.state_dict(), after.state_dict()
    changed = {k for k in old if not torch.equal(old[k], new[k])}
    assert any(k.startswith("model.layers.1.") for k in changed)  # the last block trained
    assert not any(k.startswith("model.layers.0.") for k in changed)  # the first did not
    special = tokenizer.convert_tokens_to_ids(list(special_tokens(SLICES)))
    other = [i for i in range(len(tokenizer)) if i not in set(special)]
    embed = "model.embed_tokens.weight"
    assert torch.equal(old[embed][other], new[embed][other])  # ordinary rows untouched
    assert not torch.equal(old[embed][special], new[embed][special])  # special-token rows trained

    client = mlflow.MlflowClient()
    for key in ("train_loss", "lr", "tokens_per_s"):  # per step while training, once each
        assert [m.step for m in client.get_metric_history(mlflow_run.info.run_id, key)] == [1], key
    assert "train_loss.png" in {a.path for a in client.list_artifacts(mlflow_run.info.run_id)}


KILLED_RUN = """
import os, pickle, signal, sys, json
import mlflow
import torch
torch.set_num_threads(1)
from training.lm.cpt import train

cfg, data, kill_at, tracking_uri, run_id = pickle.loads(open(sys.argv[1], "rb").read())
def hook(step, path, model):
    if step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
mlflow.set_tracking_uri(tracking_uri)
with mlflow.start_run(run_id=run_id):  # both processes log into one run, as a relaunched job would
    out = train(cfg, data, cfg.checkpoint_dir, log=lambda _: None, on_checkpoint=hook)
print(json.dumps({"resumed_from": out.summary["resumed_from_step"], "losses": out.losses}))
"""


def _subprocess(
    tmp_path: Path, cfg: CptConfig, data, kill_at: int, run_id: str
) -> subprocess.CompletedProcess:
    job = tmp_path / f"job-{kill_at}.pkl"
    job.write_bytes(pickle.dumps((cfg, data, kill_at, mlflow.get_tracking_uri(), run_id)))
    return subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(job)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_killed_run_resumes_to_the_state_of_an_uninterrupted_run(spark, corpus, backbone_dir, tmp_path):
    killed_dir = tmp_path / "killed"
    cfg = _config(backbone_dir, killed_dir)  # 6 steps x 2 micro-batches: 12 batches, 10 per epoch
    data = prepare(spark, corpus, cfg)
    tracking.configure(corpus.root)
    client = mlflow.MlflowClient()
    run_id = client.create_run(tracking.experiment_for("cpt")).info.run_id

    first = _subprocess(tmp_path, cfg, data, kill_at=2, run_id=run_id)
    assert first.returncode == -9, first.stderr[-2000:]
    assert [p.name for p in checkpoints(killed_dir)] == ["step-000002"]
    (killed_dir / f"{TMP_PREFIX}step-000004").mkdir()  # as if killed while writing the next one
    (killed_dir / f"{TMP_PREFIX}step-000004" / "model.pt").write_bytes(b"half")

    second = _subprocess(tmp_path, cfg, data, kill_at=0, run_id=run_id)
    assert second.returncode == 0, second.stderr[-2000:]
    resumed = json.loads(second.stdout.strip().splitlines()[-1])
    assert resumed["resumed_from"] == 2
    assert [p.name for p in checkpoints(killed_dir)] == ["step-000004", "step-000006"]  # keep 2
    assert not list(killed_dir.glob(f"{TMP_PREFIX}*"))
    # the run charted every step once while training: 1-2 before the kill, 3-6 after the resume
    history = {
        key: sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        for key in ("train_loss", "lr", "tokens_per_s")
    }
    for key, points in history.items():
        assert [m.step for m in points] == [1, 2, 3, 4, 5, 6], key
    assert [m.value for m in history["train_loss"]] == pytest.approx(resumed["losses"])
    schedule = [warmup_cosine(s, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio) for s in range(6)]
    assert [m.value for m in history["lr"]] == pytest.approx([cfg.lr * r for r in schedule])
    assert all(m.value > 0 for m in history["tokens_per_s"])

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        straight = train(replace(cfg, checkpoint_dir=str(tmp_path / "straight")), data, str(tmp_path / "straight"),
                         log=lambda _: None)  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert straight.summary["resumed_from_step"] is None and len(straight.losses) == 6
    assert torch.allclose(torch.tensor(resumed["losses"]), torch.tensor(straight.losses))
    final = latest(killed_dir)
    weights = torch.load(final / "model.pt", weights_only=True)
    for name, tensor in straight.model.state_dict().items():
        assert torch.allclose(weights[name], tensor, atol=1e-6), name
    optimizer = torch.load(final / "optimizer.pt", weights_only=False)
    reference = torch.load(tmp_path / "straight" / "step-000006" / "optimizer.pt", weights_only=False)
    assert optimizer["state"].keys() == reference["state"].keys()
    for key, state in optimizer["state"].items():
        assert float(state["step"]) == float(reference["state"][key]["step"]) == 6
        assert torch.allclose(state["exp_avg_sq"], reference["state"][key]["exp_avg_sq"], atol=1e-9)
    assert json.loads((final / "state.json").read_text())["losses"] == resumed["losses"]
    assert (final / "tokenizer" / "tokenizer.json").is_file()


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(spark, corpus, backbone_dir, tmp_path):
    cfg = _config(backbone_dir, tmp_path / "ckpt")
    data = prepare(spark, corpus, cfg)

    def poison(step, path, model):
        if step == 2:
            with torch.no_grad():
                model.get_input_embeddings().weight.fill_(float("nan"))

    with pytest.raises(
        NonFiniteLossError, match=r"loss is nan at step 3: run stopped; last good checkpoint: .*step-000002"
    ):
        train(cfg, data, cfg.checkpoint_dir, log=lambda _: None, on_checkpoint=poison)
    kept = latest(cfg.checkpoint_dir)
    assert kept.name == "step-000002"
    weights = torch.load(kept / "model.pt", weights_only=True)
    assert all(torch.isfinite(w).all() for w in weights.values())
