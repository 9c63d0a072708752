"""larr train cpt: corpus.cpt (split = train) -> a continually pretrained backbone (MLflow artifact
`backbone`); a row is one POI (or general text) sample: input_text -> target_text; not partitioned.

Stage 1 of LARR (docs/method.md): causal-LM loss on the target tokens only. A sample is
`input ids + target ids + eos`; labels are -100 on the input and on padding, so the loss is the
negative log-likelihood of the target (and its end) given the input. Held-out target perplexity
(`split = 'heldout'`, same masking) is measured before and after training.

Data: the corpus is read through `training/common/data.py` (Petastorm over the pinned Delta
snapshot; rank 0 pins it and hands it to the other ranks) as text, and tokenized in the training
process (the text is short; no Spark job or extra table). When corpus.cpt is not partitioned by
`split`, the loaders read the `split` column and keep their own rows. Length-aware batching:
`length_buffer` loader batches at a time are tokenized, their rows sorted by token length and cut
into batches, and the batches' order shuffled with the seed (seed, epoch, buffer): little padding,
and the stream stays a pure function of (epoch, position), which is what resuming needs.

Truncation (a sample longer than `max_length`): the input keeps at most
max(max_length // 2, max_length - target length) tokens and the target (with eos) the rest, each
cut in the MIDDLE (`training/common/text.truncate_middle`): the name/location head, the last
slices with their closing special token, and eos survive. An empty target trains eos alone
(counted as `empty_targets`): every sample has a target token, so no batch divides 0 by 0.

Which weights train: `train_layers = 0` trains the whole model (the cluster config, as the paper);
`train_layers = N` (the CPU demo) trains only the last N transformer blocks, the final norm and
the embedding rows of the registry's special tokens (a gradient mask on the embedding matrix,
kept out of weight decay, so every other row stays exactly as it was).

Runs: plain torch on one CPU or GPU; under `torchrun` as DDP; under `deepspeed --no_local_rank`
with `deepspeed_config` set (ZeRO-2: `jobs/deepspeed/zero2.json`; ZeRO-3 for 7B-class models:
`jobs/deepspeed/zero3.json`, which loads the weights partitioned, gathers them to save the final
model, and needs `train_layers: 0`); or launched from the driver by pyspark's TorchDistributor
(`launch.launcher: torch_distributor`, DDP) or DeepspeedTorchDistributor (`deepspeed_distributor`,
with `deepspeed_config`): the corpus is pinned on the driver once and every rank checks it trains
on that snapshot (training/common/launch.py). Each rank reads its Petastorm shard (row groups) with
`batch_size` samples per micro-batch, so a W-rank run sees other batches than one process: it is
the same training, not the same numbers. Checkpoints go to
`checkpoint_dir` (default `<lakehouse>/_checkpoints/cpt/<config key>`: the same config resumes,
a finished run re-run returns its result, another config starts fresh).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from core.paths import BASE_MODEL
from core.tracking import record_model
from training.common.data import DeltaBatches, DeltaSnapshot, delta_snapshot
from training.common.device import all_reduce_sum, autocast, dist_info
from training.common.engine import full_weights, zero_stage
from training.common.launch import LaunchConfig, agree_on_snapshots, check_launch
from training.common.loop import StepOutput, train_loop
from training.common.seed import seed_everything
from training.common.text import IGNORE, TextCounts, pad_right, truncate_middle
from training.common.tracking import active, log_loss_curve, log_metrics
from training.common.trainer import (
    Trained,
    checkpoint_folder,
    config_key,
    deepspeed_setup,
    join,
    loop_settings,
    prepare_on_rank0,
    run_ranks,
    trainable_params,
    trainer_engine,
)
from training.lm.backbone import add_special_tokens, load_backbone, log_backbone, save_backbone

TABLE = "corpus.cpt"
COLUMNS = ["input_text", "target_text"]
TRAIN_WHERE, HELDOUT_WHERE = "split = 'train'", "split = 'heldout'"


class CptError(ValueError):
    pass


@dataclass(frozen=True)
class CptConfig:
    backbone: str = BASE_MODEL  # HF folder or MLflow URI (training.lm.backbone)
    max_length: int = 256  # tokens per sample, input + target + eos
    batch_size: int = 8  # samples per micro-batch (per rank)
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 2e-4
    weight_decay: float = 0.1
    warmup_steps: int = 10
    max_steps: int = 100  # optimizer steps
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at max_steps
    clip_norm: float = 1.0  # 0 = no clipping
    length_buffer: int = 16  # loader batches sorted together by length
    train_layers: int = 0  # 0 = all weights; N = last N blocks + final norm + special-token rows
    checkpoint_dir: str = ""  # "" = <lakehouse>/_checkpoints/cpt/<config key>
    checkpoint_every: int = 50  # optimizer steps between checkpoints (and one at the end)
    keep_checkpoints: int = 2
    resume: bool = True  # start from the newest checkpoint in checkpoint_dir
    eval_batch_size: int = 8
    heldout_max_rows: int = 0  # held-out rows for perplexity; 0 = all
    output_dir: str = ""  # also save the trained backbone folder here ("" = MLflow only)
    seed: int = 17
    device: str = "auto"  # auto | cpu | cuda
    deepspeed_config: str = ""  # a ZeRO JSON (jobs/deepspeed/zero2.json) on GPUs; "" = plain torch / DDP
    progress: bool = True  # tqdm bar on rank 0
    launch: LaunchConfig = field(default_factory=LaunchConfig)  # distributed training from the driver

    def __post_init__(self) -> None:
        positive = ("max_length", "batch_size", "grad_accum", "max_steps", "length_buffer", "eval_batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_length < 4:
            raise ValueError(f"max_length must be >= 4, got {self.max_length}")
        for name in ("warmup_steps", "checkpoint_every", "train_layers", "heldout_max_rows"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be > 0, got {self.lr}")
        problem = check_launch(self.launch, deepspeed_config=self.deepspeed_config, device=self.device)
        if problem:
            raise ValueError(problem)

    def key(self) -> str:
        """A short hash of the settings that shape the trained weights (not of bookkeeping)."""
        return config_key(self, skip=("output_dir",))


@dataclass(frozen=True)
class CptData:
    """What the trainer reads: the train and held-out snapshots (the same one, with a `split` column
    filtered on the trainer, when corpus.cpt is not partitioned by split) and their row counts."""

    train: DeltaSnapshot
    heldout: DeltaSnapshot
    train_rows: int
    heldout_rows: int
    empty_targets: int  # train rows with a blank target (trained on eos alone)
    slices: tuple[str, ...] = ()  # the dataset schema's (token_slices): their special tokens are added


# -- samples ---------------------------------------------------------------------------------------
def build_sample(input_ids: list[int], target_ids: list[int], eos_id: int, max_length: int):
    """(ids, labels) of one sample: input + target + eos, labels -100 on the input."""
    target = list(target_ids) + [eos_id]
    inputs = truncate_middle(input_ids, min(len(input_ids), max(max_length // 2, max_length - len(target))))
    target = truncate_middle(target, max_length - len(inputs))
    return inputs + target, [IGNORE] * len(inputs) + target


def encode(
    tokenizer, inputs: list[str], targets: list[str], max_length: int, counts: TextCounts | None = None
) -> list[tuple[list[int], list[int]]]:
    """Tokenize (input, target) texts (no bos/eos added by the tokenizer) into (ids, labels);
    `counts` adds the samples and how many of them were cut to `max_length`."""
    enc_in = tokenizer(list(inputs), add_special_tokens=False)["input_ids"]
    enc_target = tokenizer(list(targets), add_special_tokens=False)["input_ids"]
    if counts is not None:
        counts.texts += len(enc_in)
        counts.truncated += sum(
            len(a) + len(b) + 1 > max_length for a, b in zip(enc_in, enc_target, strict=True)
        )
    return [
        build_sample(a, b, tokenizer.eos_token_id, max_length)
        for a, b in zip(enc_in, enc_target, strict=True)
    ]


def collate(samples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """`input_ids`, `attention_mask`, `labels` padded on the right (label -100 on padding)."""
    return pad_right(samples, pad_id)


def _rows(batch: dict, split: str) -> tuple[list[str], list[str]]:
    """A loader batch's (inputs, targets), keeping only `split` rows when the batch has a split column."""
    keep = np.ones(len(batch["input_text"]), dtype=bool)
    if "split" in batch:
        keep = np.asarray([str(v) == split for v in batch["split"]])
    return [str(t) for t in batch["input_text"][keep]], [str(t) for t in batch["target_text"][keep]]


def length_batches(
    loader: DeltaBatches,
    tokenizer,
    cfg: CptConfig,
    epoch: int,
    skip: int = 0,
    split: str = "train",
    counts: TextCounts | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """Length-sorted batches of one epoch after skipping the first `skip` of them (resume).

    A buffer of `length_buffer` loader batches with n `split` rows gives ceil(n / batch_size)
    batches, so buffers wholly before `skip` are passed over without tokenizing them.
    """
    raw = iter(loader.epoch(epoch))
    done = 0  # batches of this epoch produced or skipped so far
    for buffer_index in itertools.count():
        chunk = list(itertools.islice(raw, cfg.length_buffer))
        if not chunk:
            return
        inputs, targets = [], []
        for batch in chunk:
            a, b = _rows(batch, split)
            inputs += a
            targets += b
        count = math.ceil(len(inputs) / cfg.batch_size)
        if done + count <= skip:
            done += count
            continue
        samples = encode(tokenizer, inputs, targets, cfg.max_length, counts)
        order = sorted(range(len(samples)), key=lambda i: len(samples[i][0]))  # stable: ties keep file order
        batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        rng = np.random.default_rng([cfg.seed, epoch, buffer_index])
        for j in rng.permutation(len(batches)):
            if done >= skip:
                yield collate([samples[i] for i in batches[j]], tokenizer.pad_token_id)
            done += 1


# -- model -----------------------------------------------------------------------------------------
def select_trainable(model, tokenizer, train_layers: int, slices: Sequence[str]) -> tuple[str, ...]:
    """Freeze all but what `train_layers` says (module docstring); returns the parameter-name parts
    to keep out of weight decay (the masked embeddings). The trained embedding rows are those of
    the dataset's special tokens (`slices`: the dataset schema's token_slices)."""
    for param in model.parameters():
        param.requires_grad_(train_layers == 0)
    if train_layers == 0:
        return ()
    base = model.base_model
    layers, norm = getattr(base, "layers", None), getattr(base, "norm", None)
    if layers is None or norm is None:
        raise CptError(
            f"train_layers needs a Llama-style model (base_model.layers, .norm); got {type(model)}"
        )
    if train_layers > len(layers):
        raise CptError(f"train_layers = {train_layers} but the model has {len(layers)} blocks")
    for module in [*layers[len(layers) - train_layers :], norm]:
        for param in module.parameters():
            param.requires_grad_(True)
    from etl.tokens import special_tokens

    special = torch.tensor(tokenizer.convert_tokens_to_ids(special_tokens(slices)), dtype=torch.long)
    embeddings = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight is not embeddings[0]:
        embeddings.append(output.weight)
    for weight in embeddings:
        mask = torch.zeros(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)
        mask[special] = 1
        weight.requires_grad_(True)
        weight.register_hook(lambda grad, mask=mask: grad * mask)
    return ("embed_tokens", "lm_head")


def lm_loss(module, batch: dict[str, torch.Tensor], device: torch.device) -> StepOutput:
    """Mean causal-LM loss over the target tokens of one batch."""
    batch = {k: v.to(device) for k, v in batch.items()}
    with autocast(device):
        out = module(**batch)
    return StepOutput(out.loss.float(), int(batch["attention_mask"].sum()))


@torch.no_grad()
def perplexity(model, batches, device: torch.device) -> tuple[float, int]:
    """exp(mean NLL of the target tokens) over `batches` (all ranks' shards); and the token count."""
    was_training = model.training
    model.eval()
    nll, count = 0.0, 0
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(device):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"][:, 1:]
        nll += float(
            torch.nn.functional.cross_entropy(
                logits[:, :-1].float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction="sum"
            )
        )
        count += int((labels != IGNORE).sum())
    model.train(was_training)
    nll, count = all_reduce_sum([nll, float(count)], device)
    if count == 0:
        return float("nan"), 0
    return math.exp(nll / count), int(count)


def heldout_batches(data: CptData, tokenizer, cfg: CptConfig) -> list[dict[str, torch.Tensor]]:
    """This rank's held-out batches, in file order (every held-out row once over all ranks)."""
    if data.heldout_rows == 0:
        return []
    info = dist_info()
    loader = DeltaBatches(
        data.heldout,
        cfg.eval_batch_size,
        shuffle=False,
        rank=info.rank,
        world_size=info.world_size,
        balance_ranks=False,
    )
    limit = math.ceil(cfg.heldout_max_rows / info.world_size) if cfg.heldout_max_rows else None
    inputs, targets = [], []
    for batch in loader:
        a, b = _rows(batch, "heldout")
        inputs += a
        targets += b
        if limit is not None and len(inputs) >= limit:
            inputs, targets = inputs[:limit], targets[:limit]
            break
    samples = encode(tokenizer, inputs, targets, cfg.max_length)
    size = cfg.eval_batch_size
    return [collate(samples[i : i + size], tokenizer.pad_token_id) for i in range(0, len(samples), size)]


# -- run -------------------------------------------------------------------------------------------
def prepare(spark, catalog, cfg: CptConfig) -> CptData:
    """Pin the corpus snapshot, count train / held-out rows and blank targets (driver side).

    When corpus.cpt is partitioned by `split`, the train and held-out loaders read only their own
    files; otherwise both read every file with the `split` column and keep their rows.
    """
    from pyspark.sql import functions as F

    from core.schema_table import read_schema
    from etl.text.slices import token_slices

    whole = delta_snapshot(spark, catalog, TABLE, [*COLUMNS, "split"])
    if "split" in whole.partition_columns:
        train = delta_snapshot(spark, catalog, TABLE, COLUMNS, where=TRAIN_WHERE)
        heldout = delta_snapshot(spark, catalog, TABLE, COLUMNS, where=HELDOUT_WHERE)
    else:
        train = heldout = whole
    counts = (
        catalog.read(spark, TABLE, version=whole.version)
        .groupBy("split")
        .agg(
            F.count("*").alias("rows"),
            F.sum(F.when(F.coalesce(F.trim("target_text"), F.lit("")) == "", 1).otherwise(0)).alias("empty"),
        )
        .collect()
    )
    by_split = {r["split"]: (int(r["rows"]), int(r["empty"] or 0)) for r in counts}
    return CptData(
        slices=token_slices(read_schema(spark, catalog)),
        train=train,
        heldout=heldout,
        train_rows=by_split.get("train", (0, 0))[0],
        heldout_rows=by_split.get("heldout", (0, 0))[0],
        empty_targets=by_split.get("train", (0, 0))[1],
    )


def default_checkpoint_dir(catalog, cfg: CptConfig) -> str:
    return checkpoint_folder(catalog.root, "cpt", cfg.key(), cfg.checkpoint_dir, error=CptError)


def train(
    cfg: CptConfig,
    data: CptData,
    checkpoint_dir: str,
    log: Callable[[str], None] = print,
    on_checkpoint=None,
) -> Trained:
    """Everything after the snapshot (no Spark: runs on every rank)."""
    info, device = join(cfg.device)
    seed_everything(cfg.seed)
    settings = deepspeed_setup(
        cfg.deepspeed_config,
        micro_batch_size=cfg.batch_size,
        grad_accum=cfg.grad_accum,
        clip_norm=cfg.clip_norm,
        device=device,
        train_layers=cfg.train_layers,
        error=CptError,
    )
    # fp32 master weights (bf16 autocast on GPUs)
    model, tokenizer = load_backbone(cfg.backbone, dtype=torch.float32, deepspeed_settings=settings)
    added = add_special_tokens(model, tokenizer, data.slices)
    no_decay = select_trainable(model, tokenizer, cfg.train_layers, data.slices)
    if zero_stage(settings) != 3:
        model.to(device)
    trainable = trainable_params(model)

    engine = trainer_engine(model, cfg, device, settings, no_decay=no_decay, grad_accum=cfg.grad_accum)
    heldout = heldout_batches(data, tokenizer, cfg)
    ppl_before, heldout_tokens = perplexity(engine.model, heldout, device)
    if info.is_primary:
        log(f"cpt: held-out perplexity before {ppl_before:.3f} over {heldout_tokens} target tokens")
    counts = TextCounts()
    loader = DeltaBatches(
        data.train, cfg.batch_size, shuffle_seed=cfg.seed, rank=info.rank, world_size=info.world_size
    )
    settings = loop_settings(cfg, checkpoint_dir, cfg.max_steps, cfg.grad_accum)
    result = train_loop(
        engine,
        lambda epoch, skip: length_batches(loader, tokenizer, cfg, epoch, skip, counts=counts),
        lambda module, batch: lm_loss(module, batch, device),
        settings,
        config=cfg,
        tokenizer=tokenizer,
        on_checkpoint=on_checkpoint,
        log=log,
    )
    model = engine.model
    ppl_after, _ = perplexity(model, heldout, device)
    if info.is_primary:
        log(f"cpt: held-out perplexity after {ppl_after:.3f}; {result.steps} steps")
    summary = {
        "heldout_ppl_before": round(ppl_before, 4),
        "heldout_ppl_after": round(ppl_after, 4),
        "tokens_per_s": round(result.tokens_per_s, 1),
        "steps": result.steps,
        "final_loss": round(result.losses[-1], 4) if result.losses else None,
        "resumed_from_step": result.resumed_from,
        "train_rows": data.train_rows,
        "heldout_rows": data.heldout_rows,
        "heldout_target_tokens": heldout_tokens,
        "empty_targets": data.empty_targets,
        "truncated_samples": counts.truncated,  # of the samples this process trained on
        "special_tokens_added": added,
        "trainable_params": trainable,
        "world_size": info.world_size,
        "checkpoint": str(result.last_checkpoint) if result.last_checkpoint else None,
        "input_versions": {TABLE: data.train.version},
    }
    return Trained(summary, result.losses, model, tokenizer, result.resumed_from)


def run(spark, catalog, cfg: CptConfig, log=print, on_checkpoint=None) -> dict:
    """Pin the corpus, train, measure, and (rank 0, inside an MLflow run) log curve and model.

    With `launch.launcher` set, the corpus is pinned here once and the training runs on
    `launch.num_processes` ranks started by the distributor; under `torchrun` / `deepspeed` rank 0
    pins it and hands it to the others."""
    data = prepare_on_rank0(lambda: prepare(spark, catalog, cfg), cfg.device, cfg.launch)
    if data.train_rows == 0:
        raise CptError(f"{TABLE} has no rows where {TRAIN_WHERE}: run `larr etl corpus` first")
    return run_ranks(
        train_and_log,
        cfg.launch,
        cfg,
        data,
        default_checkpoint_dir(catalog, cfg),
        on_checkpoint,
        deepspeed_config=cfg.deepspeed_config,
        announce=f"cpt: {cfg.launch.launcher}, {cfg.launch.num_processes} processes",
        log=log,
    )


def train_and_log(cfg: CptConfig, data: CptData, checkpoint_dir: str, on_checkpoint=None, log=print) -> dict:
    """Every rank: check the ranks pinned the same corpus, train, and (rank 0) save and log the
    backbone; returns the summary."""
    info, _ = join(cfg.device)
    agree_on_snapshots([data.train, data.heldout])
    summary, losses, model, tokenizer, _ = train(
        cfg, data, checkpoint_dir, log=log, on_checkpoint=on_checkpoint
    )
    with full_weights(model.parameters()):  # ZeRO-3: every rank gathers the weights, rank 0 writes
        if info.is_primary:
            if cfg.output_dir:
                save_backbone(model, tokenizer, cfg.output_dir)
                summary["output_dir"] = cfg.output_dir
            if active():
                log_loss_curve(losses)
                log_metrics({"heldout_target_tokens": summary["heldout_target_tokens"]})
                summary["model_uri"] = log_backbone(model, tokenizer)
                record_model(summary["model_uri"])
    return summary
