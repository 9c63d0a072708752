"""larr train contrastive: pairs.contrastive (split = train) -> the stage-2 text encoder (one MLflow
pyfunc model `encoder`); a row is one positive pair (text_a, text_b) of a pair type; partitioned
by pair_type.

Stage 2 of LARR (docs/method.md): the stage-1 backbone (`backbone: latest:cpt`, the newest finished
`larr train cpt` run of this lakehouse's MLflow store, or `runs:/<id>/backbone`) plus a linear
projection to 128 dimensions (`training/embedding/encoder.py`) is trained with symmetric InfoNCE
and in-batch negatives (`losses.info_nce`, temperature 0.05, candidates gathered across ranks
under DDP and DeepSpeed).

Ablations (`ablation`, for the CTR issue's Table 3): `none` is the method; `no_cpt` trains stage 2
from the base model (`backbone` must be a base model); `no_ft` skips stage 2: the stage-1 model
becomes the encoder with the seeded initial projection (the same `nn.Linear` default init stage 2
starts from: a random projection, which keeps cosine geometry roughly as it is), evaluated and
logged like a trained one. `base` (not a CTR ablation: the case study's fourth encoder, `larr
casestudy`) logs the untouched base model (`backbone` must be one) with the same seeded
projection. A backbone has been through stage 1 when its tokenizer already holds the registry's
special tokens; `none` and `no_ft` require that, `no_cpt` and `base` the opposite, so a mixed-up
URI is an error, not a mislabelled row of the ablation table.

Batches: every batch holds pairs of ONE type. Each type is read through its own `DeltaBatches`
(`where pair_type = '...'`, Petastorm over the pinned snapshot; the `split` column is filtered in
the trainer and the rows re-cut into full batches of `batch_size`). The order of types is a
smooth weighted round-robin over the types with a positive weight (`weight_user_user`,
`weight_poi_poi`, `weight_user_poi`: a1, a2, a3), and a batch of type t has loss
weight[t] * InfoNCE: with the default weights of 1 the types alternate and weigh alike. One
epoch of the loop is sum over types of ceil(train rows / (batch_size * ranks)) batches; the
stream is a pure function of (epoch, position), which is what resuming needs.

Evaluation on held-out pairs (`split = 'heldout'`, at most `eval_max_pairs` per type, chosen by a
seeded hash): user -> POI (`user_poi`: each anchor text_a ranks the pool of distinct held-out
POIs' text_b) and POI -> POI (`poi_poi`), recall@1, recall@10 and MRR; the anchor's other true
positives are left out of its ranking, and a tie with the positive counts against it. The same
protocol scores three encoders, each with the seeded projection where untrained: the untouched
base model (`base_model`, the `_base` figures), the model stage 2 starts from (the stage-1 backbone
as loaded, `_start`) and the fine-tuned encoder (no suffix); `random_recall_at_10_*` is what a
random ranking gets in expectation.
A linear probe (`probe.py`) reads a hidden dish attribute (`probe_attribute`) off the POI
embeddings before and after, when the lakehouse has the synthetic world's `truth.pois`.

Bad input: pairs with a blank text are skipped and counted (`empty_pairs`); texts longer than
`max_length` are cut in the middle, keeping the closing token, and counted (`texts_truncated`), as
are texts that do not end with a closing special token (`texts_without_closing_token`).

Distributed: under `torchrun` / `deepspeed`, or launched from the driver by pyspark's
TorchDistributor (`launch.launcher: torch_distributor`) / DeepspeedTorchDistributor
(`deepspeed_distributor`, with `deepspeed_config`): `batch_size` pairs per rank, so the global
batch is `batch_size x ranks`. Every rank reads the same seeded stream of global batches (each
type's loader unsharded) and keeps its contiguous slice; InfoNCE gathers the candidates from every
rank. A run on W ranks is therefore the single-process run with `batch_size x W` (same batches,
same candidates, same init), up to float reduction order and the padding of each rank's slice
(2 CPU ranks of 2 pairs vs one process of 4 on the tiny test model: loss curve within 3e-6, equal
recalls; tests/training/test_launch.py). Rank 0 evaluates and logs.

Which weights train: the projection always; the backbone as in stage 1 (`train_layers`, see
`training/lm/cpt.py`). Checkpoints as in stage 1 (`<lakehouse>/_checkpoints/contrastive/<key>`);
DeepSpeed ZeRO-2/3 with `deepspeed_config`, as in stage 1.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from core.paths import BASE_MODEL
from core.tracking import BASE_ONLY, ENCODER_VARIANTS, FULL_METHOD, NO_CPT, NO_FT
from etl.text.pairs import PAIR_TYPES, POI_POI, SCENE_POI, USER_POI, USER_USER  # noqa: F401 - re-exported
from training.common.data import DeltaBatches, DeltaSnapshot, delta_snapshot
from training.common.device import autocast, dist_info
from training.common.engine import full_weights, zero_stage
from training.common.launch import LaunchConfig, agree_on_snapshots, check_launch
from training.common.loop import StepOutput, train_loop
from training.common.seed import seed_everything
from training.common.text import TextCounts
from training.common.tracking import STEP_METRICS, active, log_loss_curve, log_metrics
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
from training.embedding.encoder import EMBEDDING_DIM, TextEncoder, encode_texts, pad, pad_id, tokenize_texts
from training.embedding.losses import info_nce
from training.embedding.probe import ATTRIBUTES, ProbeSet, linear_probe, probe_set
from training.embedding.probe import TEXTS as PROBE_TEXTS
from training.lm.backbone import add_special_tokens, load_backbone
from training.lm.cpt import select_trainable

TABLE = "pairs.contrastive"
EVAL_TYPES = (USER_POI, POI_POI)  # user -> POI and POI -> POI retrieval
COLUMNS = ["text_a", "text_b", "split"]
EPOCH_STRIDE = 1_000_000  # a type's data epochs inside loop epoch e are e * EPOCH_STRIDE + r


class ContrastiveError(ValueError):
    pass


@dataclass(frozen=True)
class ContrastiveConfig:
    backbone: str = "latest:cpt"  # stage 1's model: latest:cpt, runs:/<id>/backbone or an HF folder
    # none | no_cpt (stage 2 from the base model) | no_ft (stage 1's, as is) | base (the base model, as is)
    ablation: str = FULL_METHOD
    base_model: str = BASE_MODEL  # the untouched model the `_base` figures evaluate; "" = none
    dim: int = EMBEDDING_DIM
    temperature: float = 0.05
    weight_user_user: float = 1.0  # a1
    weight_poi_poi: float = 1.0  # a2
    weight_user_poi: float = 1.0  # a3
    # beyond the paper: one order's scene -> the ordered item (etl pairs' scene_poi); 0 = the paper's three
    weight_scene_poi: float = 0.0
    max_length: int = 256  # tokens per text (middle-truncated; the closing token stays)
    batch_size: int = 16  # pairs per batch per rank (2 x batch_size texts per forward)
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 10
    max_steps: int = 100
    min_lr_ratio: float = 0.1
    clip_norm: float = 1.0
    train_layers: int = 0  # 0 = all backbone weights; N = last N blocks + final norm + special rows
    checkpoint_dir: str = ""  # "" = <lakehouse>/_checkpoints/contrastive/<config key>
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    resume: bool = True
    eval_batch_size: int = 16
    eval_max_pairs: int = 0  # held-out pairs per evaluated type; 0 = all
    probe_attribute: str = "temperature"  # hidden dish attribute probed (truth.pois); "" = no probe
    probe_max_pois: int = 0  # POIs in the probe; 0 = all
    probe_text: str = "comprehensive"  # comprehensive | business (dishes only imply the attribute)
    seed: int = 17
    device: str = "auto"  # auto | cpu | cuda
    deepspeed_config: str = ""  # a ZeRO JSON (jobs/deepspeed/zero2.json) on GPUs; "" = plain torch / DDP
    progress: bool = True
    launch: LaunchConfig = field(default_factory=LaunchConfig)  # distributed training from the driver

    def __post_init__(self) -> None:
        for name in ("dim", "max_length", "max_steps", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (in-batch negatives), got {self.batch_size}")
        for name in ("warmup_steps", "checkpoint_every", "train_layers", "eval_max_pairs", "probe_max_pois"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("temperature", "lr"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.ablation not in ENCODER_VARIANTS:
            raise ValueError(f"ablation must be one of {ENCODER_VARIANTS}, got {self.ablation!r}")
        if self.probe_text not in PROBE_TEXTS:
            raise ValueError(f"probe_text must be one of {PROBE_TEXTS}, got {self.probe_text!r}")
        if self.probe_attribute not in ("", *ATTRIBUTES):
            raise ValueError(
                f"probe_attribute must be one of {ATTRIBUTES} or empty, got {self.probe_attribute!r}"
            )
        weights = self.weights()
        if any(not (w >= 0 and math.isfinite(w)) for w in weights.values()) or not any(weights.values()):
            raise ValueError(f"pair-type weights must be >= 0 and not all 0, got {weights}")
        problem = check_launch(self.launch, deepspeed_config=self.deepspeed_config, device=self.device)
        if problem:
            raise ValueError(problem)

    def weights(self) -> dict[str, float]:
        return {
            USER_USER: self.weight_user_user,
            POI_POI: self.weight_poi_poi,
            USER_POI: self.weight_user_poi,
            SCENE_POI: self.weight_scene_poi,
        }

    def key(self) -> str:
        """A short hash of the settings that shape the trained weights (not of evaluation or bookkeeping)."""
        evaluation = ("eval_batch_size", "eval_max_pairs", "probe_attribute", "probe_max_pois", "probe_text")
        # a scene weight of 0 (the paper's three types) keeps the keys of checkpoints made before it
        later = () if self.weight_scene_poi else ("weight_scene_poi",)
        return config_key(self, skip=(*evaluation, "base_model", *later))


@dataclass(frozen=True)
class HeldOut:
    """One evaluated type's held-out pairs: anchors rank the pool of distinct positives."""

    anchor_ids: tuple[int, ...]
    anchors: tuple[str, ...]
    targets: tuple[int, ...]  # index into the pool of each anchor's positive
    pool_ids: tuple[int, ...]
    pool: tuple[str, ...]


@dataclass(frozen=True)
class ContrastiveData:
    snapshots: dict[str, DeltaSnapshot]  # per trained pair type
    train_rows: dict[str, int]  # train pairs with two non-blank texts
    heldout: dict[str, HeldOut] = field(default_factory=dict)  # per evaluated type
    version: int = 0
    backbone: str = ""  # cfg.backbone with `latest:` resolved (the same on every rank)
    empty_pairs: int = 0  # train pairs skipped for a blank text
    probe: ProbeSet | None = None
    slices: tuple[str, ...] = ()  # the dataset schema's (token_slices): their special tokens are added


class ContrastiveBatch(NamedTuple):
    pair_type: str
    size: int  # pairs: rows [0, size) are the a texts, [size, 2 size) the b texts
    input_ids: torch.Tensor
    attention_mask: torch.Tensor


# -- batches ---------------------------------------------------------------------------------------
def type_schedule(weights: dict[str, float], length: int) -> list[str]:
    """`length` pair types by smooth weighted round-robin (types with weight 0 never come)."""
    active_types = [t for t in PAIR_TYPES if weights.get(t, 0) > 0]
    if not active_types:
        raise ContrastiveError("no pair type has a positive weight")
    total = sum(weights[t] for t in active_types)
    current = dict.fromkeys(active_types, 0.0)
    out = []
    for _ in range(length):
        for t in active_types:
            current[t] += weights[t]
        pick = max(active_types, key=lambda t: current[t])  # ties: the first in PAIR_TYPES
        current[pick] -= total
        out.append(pick)
    return out


def _filled(text) -> bool:
    return text is not None and bool(str(text).strip())


def pair_rows(loader: DeltaBatches, epoch: int, batch_size: int) -> Iterator[tuple[list[str], list[str]]]:
    """Endless full batches of (text_a, text_b) of `split = 'train'` rows of one type's loader:
    its data epochs epoch * EPOCH_STRIDE + 0, 1, ... one after another."""
    a, b = [], []
    for round_ in itertools.count():
        seen = 0
        for batch in loader.epoch(epoch * EPOCH_STRIDE + round_):
            keep = np.asarray(
                [
                    str(s) == "train" and _filled(x) and _filled(y)
                    for s, x, y in zip(batch["split"], batch["text_a"], batch["text_b"], strict=True)
                ],
                dtype=bool,
            )
            a += [str(t) for t in batch["text_a"][keep]]
            b += [str(t) for t in batch["text_b"][keep]]
            seen += int(keep.sum())
            while len(a) >= batch_size:
                yield a[:batch_size], b[:batch_size]
                a, b = a[batch_size:], b[batch_size:]
        if seen == 0:
            raise ContrastiveError(f"{loader.snapshot.table} where {loader.snapshot.where}: no train rows")


def collate_pairs(
    tokenizer, pair_type: str, a: list[str], b: list[str], max_length: int, counts: TextCounts | None = None
) -> ContrastiveBatch:
    ids = tokenize_texts(tokenizer, [*a, *b], max_length, counts)
    batch = pad(ids, pad_id(tokenizer))
    return ContrastiveBatch(pair_type, len(a), batch["input_ids"], batch["attention_mask"])


def epoch_length(cfg: ContrastiveConfig, train_rows: dict[str, int], world_size: int) -> int:
    per_step = cfg.batch_size * world_size
    return sum(math.ceil(n / per_step) for t, n in train_rows.items() if cfg.weights()[t] > 0)


def contrastive_batches(
    loaders: dict[str, DeltaBatches],
    tokenizer,
    cfg: ContrastiveConfig,
    length: int,
    epoch: int,
    skip: int,
    counts: TextCounts | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[ContrastiveBatch]:
    """The single-type batches of one loop epoch after skipping the first `skip` (resume).

    `loaders` read the whole table on every rank: each global batch of `batch_size x world_size`
    pairs is cut from the same stream everywhere, and this rank keeps its slice of it."""
    size = cfg.batch_size
    streams = {t: pair_rows(loader, epoch, size * world_size) for t, loader in loaders.items()}
    try:
        for i, pair_type in enumerate(type_schedule(cfg.weights(), length)):
            a, b = next(streams[pair_type])
            if i >= skip:
                a, b = a[rank * size : (rank + 1) * size], b[rank * size : (rank + 1) * size]
                yield collate_pairs(tokenizer, pair_type, a, b, cfg.max_length, counts)
    finally:
        for stream in streams.values():
            stream.close()  # closes an unfinished Petastorm reader


def pair_loss(module, batch: ContrastiveBatch, cfg: ContrastiveConfig, device: torch.device) -> StepOutput:
    """weight[type] * symmetric InfoNCE of one single-type batch (candidates from every rank)."""
    mask = batch.attention_mask.to(device)
    with autocast(device):
        z = module(input_ids=batch.input_ids.to(device), attention_mask=mask)
    gather = dist_info().world_size > 1
    loss = info_nce(z[: batch.size].float(), z[batch.size :].float(), cfg.temperature, gather=gather)
    return StepOutput(cfg.weights()[batch.pair_type] * loss, int(mask.sum()))


# -- evaluation ------------------------------------------------------------------------------------
def retrieval_metrics(
    similarity: torch.Tensor,
    targets: torch.Tensor,
    exclude: torch.Tensor | None = None,
    ks: tuple[int, ...] = (1, 10),
) -> dict[str, float]:
    """recall@k and MRR of ranking candidates (columns) for queries (rows) by similarity.

    similarity: (n, m); targets: (n,) the positive's column per row; exclude: optional (n, m) bool,
    True where a candidate is left out of the row's ranking (the row's other true positives). The
    rank of the positive is 1 + the candidates not excluded scoring >= it (ties count against it).
    """
    if similarity.ndim != 2 or targets.shape != similarity.shape[:1]:
        raise ValueError(
            f"similarity (n, m) and targets (n,), got {tuple(similarity.shape)}, {tuple(targets.shape)}"
        )
    if similarity.shape[0] == 0:
        return {**{f"recall_at_{k}": float("nan") for k in ks}, "mrr": float("nan")}
    rows = torch.arange(similarity.shape[0])
    positive = similarity[rows, targets].unsqueeze(1)
    beats = similarity >= positive
    beats[rows, targets] = False
    if exclude is not None:
        beats &= ~exclude
    rank = 1 + beats.sum(dim=1).double()
    out = {f"recall_at_{k}": float((rank <= k).double().mean()) for k in ks}
    out["mrr"] = float((1.0 / rank).mean())
    return out


def evaluate(encoder: TextEncoder, tokenizer, data: ContrastiveData, cfg: ContrastiveConfig, device) -> dict:
    """{type: recall_at_1, recall_at_10, mrr, pairs, pool} over each evaluated type's held-out
    pairs, and `probe`: the linear probe's figures (when the data has a probe set)."""
    out = {}
    kwargs = dict(batch_size=cfg.eval_batch_size, max_length=cfg.max_length, device=device)
    for pair_type, held in data.heldout.items():
        if not held.anchors:
            continue
        anchors = encode_texts(encoder, tokenizer, held.anchors, **kwargs)
        pool = encode_texts(encoder, tokenizer, held.pool, **kwargs)
        targets = torch.tensor(held.targets, dtype=torch.long)
        anchor_ids = torch.tensor(held.anchor_ids)
        # the anchor's other positives: pool columns that some row with the same anchor points at
        same_anchor = (anchor_ids[:, None] == anchor_ids[None, :]).double()
        exclude = same_anchor @ torch.nn.functional.one_hot(targets, len(held.pool)).double() > 0
        metrics = retrieval_metrics(anchors @ pool.T, targets, exclude=exclude)
        out[pair_type] = {**metrics, "pairs": len(held.anchors), "pool": len(held.pool)}
    if data.probe is not None:
        vectors = encode_texts(encoder, tokenizer, data.probe.texts, **kwargs)
        groups = np.asarray(data.probe.groups) if data.probe.groups else None
        out["probe"] = linear_probe(vectors, np.asarray(data.probe.labels), groups, seed=cfg.seed)
    return out


# -- run -------------------------------------------------------------------------------------------
def _heldout(rows: list) -> HeldOut:
    pool_index: dict[int, int] = {}
    pool_texts: list[str] = []
    targets = []
    for r in rows:
        if r["positive_id"] not in pool_index:
            pool_index[r["positive_id"]] = len(pool_texts)
            pool_texts.append(r["text_b"])
        targets.append(pool_index[r["positive_id"]])
    return HeldOut(
        anchor_ids=tuple(int(r["anchor_id"]) for r in rows),
        anchors=tuple(str(r["text_a"]) for r in rows),
        targets=tuple(targets),
        pool_ids=tuple(int(i) for i in pool_index),
        pool=tuple(str(t) for t in pool_texts),
    )


def prepare(spark, catalog, cfg: ContrastiveConfig) -> ContrastiveData:
    """Resolve the backbone, pin the snapshot (one per trained type), count train rows and blank
    pairs, collect the held-out pairs and the probe set."""
    from pyspark.sql import functions as F

    from core.schema_table import read_schema
    from core.tracking import resolve_latest
    from etl.text.slices import token_slices

    backbone = resolve_latest(cfg.backbone)
    trained = [t for t in PAIR_TYPES if cfg.weights()[t] > 0]
    whole = delta_snapshot(spark, catalog, TABLE, ["pair_type", *COLUMNS])
    if "pair_type" not in whole.partition_columns:
        raise ContrastiveError(f"{TABLE} is not partitioned by pair_type: rebuild it with `larr etl pairs`")
    df = catalog.read(spark, TABLE, version=whole.version)
    blank = F.coalesce(F.trim("text_a"), F.lit("")).eqNullSafe("") | F.coalesce(
        F.trim("text_b"), F.lit("")
    ).eqNullSafe("")
    counts = {
        (r["pair_type"], r["split"]): (int(r["n"]), int(r["blank"]))
        for r in df.groupBy("pair_type", "split")
        .agg(F.count("*").alias("n"), F.sum(blank.cast("int")).alias("blank"))
        .collect()
    }
    train_rows = {
        t: counts.get((t, "train"), (0, 0))[0] - counts.get((t, "train"), (0, 0))[1] for t in trained
    }
    empty = [t for t, n in train_rows.items() if n == 0]
    if empty:
        raise ContrastiveError(
            f"{TABLE} has no train rows of {empty} (weights {cfg.weights()}): run `larr etl pairs` "
            "or set those weights to 0"
        )
    snapshots = {
        t: delta_snapshot(spark, catalog, TABLE, COLUMNS, where=f"pair_type = '{t}'") for t in trained
    }
    heldout = {}
    for t in EVAL_TYPES:
        held = df.where((F.col("pair_type") == t) & (F.col("split") == "heldout") & ~blank)
        held = held.orderBy(
            F.xxhash64("anchor_id", "positive_id", F.lit(cfg.seed)), "anchor_id", "positive_id"
        )
        if cfg.eval_max_pairs:
            held = held.limit(cfg.eval_max_pairs)
        heldout[t] = _heldout(held.select("anchor_id", "positive_id", "text_a", "text_b").collect())
    probe = None
    if cfg.probe_attribute:
        probe = probe_set(spark, catalog, cfg.probe_attribute, cfg.probe_max_pois, cfg.seed, cfg.probe_text)
    return ContrastiveData(
        snapshots,
        train_rows,
        heldout,
        whole.version,
        backbone=backbone,
        empty_pairs=sum(counts.get((t, "train"), (0, 0))[1] for t in trained),
        probe=probe,
        slices=token_slices(read_schema(spark, catalog)),
    )


def default_checkpoint_dir(catalog, cfg: ContrastiveConfig) -> str:
    """`checkpoint_dir`, or one per config key (with the backbone already resolved) in the lakehouse."""
    return checkpoint_folder(
        catalog.root, "contrastive", cfg.key(), cfg.checkpoint_dir, error=ContrastiveError
    )


def check_provenance(cfg: ContrastiveConfig, source: str, added: int) -> None:
    """A backbone that needed the special tokens added has not been through stage 1."""
    if cfg.ablation in (FULL_METHOD, NO_FT) and added:
        raise ContrastiveError(
            f"backbone {source} has not been through stage 1 (its tokenizer lacked {added} special tokens): "
            "pass the stage-1 model (latest:cpt or runs:/<id>/backbone), or set ablation: no_cpt"
        )
    if cfg.ablation in (NO_CPT, BASE_ONLY) and not added:
        raise ContrastiveError(
            f"ablation {cfg.ablation} starts from the base model, but backbone {source} already has "
            "the special tokens of stage 1: pass the base model folder"
        )


def build_encoder(
    cfg: ContrastiveConfig, slices: Sequence[str], backbone: str = "", settings: dict | None = None
):
    """(encoder, tokenizer, no-decay name parts): the backbone (`backbone`, default cfg.backbone)
    with the special tokens of the dataset's `slices`, the seeded projection,
    and `train_layers` applied."""
    source = backbone or cfg.backbone
    model, tokenizer = load_backbone(source, dtype=torch.float32, deepspeed_settings=settings)
    check_provenance(cfg, source, add_special_tokens(model, tokenizer, slices))
    no_decay = select_trainable(model, tokenizer, cfg.train_layers, slices)
    encoder = TextEncoder(model, dim=cfg.dim, seed=cfg.seed)
    return encoder, tokenizer, no_decay


FROM_BASE = (NO_CPT, BASE_ONLY)  # the ablations whose backbone is the base model
UNTRAINED = (NO_FT, BASE_ONLY)  # the ablations that log the model they start from, untrained


def base_source(cfg: ContrastiveConfig) -> str:
    return cfg.backbone if cfg.ablation in FROM_BASE else cfg.base_model


def base_encoder(cfg: ContrastiveConfig, device, slices: Sequence[str]) -> tuple[TextEncoder, object]:
    """The untouched base model with the registry's tokens and the seeded projection (the `_base`
    figures: the same protocol as the fine-tuned encoder)."""
    model, tokenizer = load_backbone(cfg.base_model, dtype=torch.float32)
    add_special_tokens(model, tokenizer, slices)
    return TextEncoder(model, dim=cfg.dim, seed=cfg.seed).to(device), tokenizer


def summarize(cfg: ContrastiveConfig, data: ContrastiveData, base: dict, start: dict, after: dict) -> dict:
    """The summary's evaluation figures: `<metric>_<type>` after training, `..._start` for the model
    stage 2 started from, `..._base` for the untouched base model (each with the seeded projection)."""
    summary = {}
    for short, pair_type in (("user_poi", USER_POI), ("poi_poi", POI_POI)):
        for metric in ("recall_at_1", "recall_at_10", "mrr"):
            summary[f"{metric}_{short}"] = after.get(pair_type, {}).get(metric)
            summary[f"{metric}_{short}_start"] = start.get(pair_type, {}).get(metric)
            summary[f"{metric}_{short}_base"] = base.get(pair_type, {}).get(metric)
        pool = after.get(pair_type, {}).get("pool", 0)
        summary[f"random_recall_at_10_{short}"] = min(10, pool) / pool if pool else None
        summary[f"heldout_pairs_{short}"] = after.get(pair_type, {}).get("pairs", 0)
    if data.probe is not None and "probe" in after:
        name = data.probe.attribute
        for metric in ("auc", "accuracy"):
            summary[f"probe_{metric}_{name}"] = after["probe"][metric]
            summary[f"probe_{metric}_{name}_start"] = start.get("probe", {}).get(metric)
            summary[f"probe_{metric}_{name}_base"] = base.get("probe", {}).get(metric)
        summary[f"probe_majority_accuracy_{name}"] = after["probe"]["majority_accuracy"]
        summary["probe_pois"] = after["probe"]["pois"]
        summary["probe_dishes"] = after["probe"]["groups"]
        summary["probe_text"] = cfg.probe_text
    return summary


def train(
    cfg: ContrastiveConfig, data: ContrastiveData, checkpoint_dir: str, log: Callable[[str], None] = print
) -> Trained:
    """Everything after the snapshot (no Spark: runs on every rank). `no_ft` evaluates and returns."""
    info, device = join(cfg.device)
    seed_everything(cfg.seed)
    settings = deepspeed_setup(
        cfg.deepspeed_config if cfg.ablation not in UNTRAINED else "",  # no_ft and base do not train
        micro_batch_size=cfg.batch_size,
        grad_accum=1,
        clip_norm=cfg.clip_norm,
        device=device,
        train_layers=cfg.train_layers,
        error=ContrastiveError,
    )
    encoder, tokenizer, no_decay = build_encoder(cfg, data.slices, data.backbone, settings)
    if zero_stage(settings) != 3:
        encoder.to(device)
    trainable = trainable_params(encoder)
    counts = TextCounts()
    result = None
    # ZeRO-3 forwards gather weights from every rank, so every rank evaluates; otherwise rank 0
    evaluates = info.is_primary or zero_stage(settings) == 3
    if cfg.ablation in UNTRAINED:
        before = evaluate(encoder, tokenizer, data, cfg, device) if evaluates else {}
        after = before
    else:
        engine = trainer_engine(encoder, cfg, device, settings, no_decay=no_decay)
        encoder = engine.model
        before = evaluate(encoder, tokenizer, data, cfg, device) if evaluates else {}
        # unsharded: every rank reads the global batches and keeps its slice (contrastive_batches)
        loaders = {
            t: DeltaBatches(snapshot, cfg.batch_size * info.world_size, shuffle_seed=cfg.seed)
            for t, snapshot in data.snapshots.items()
        }
        length = epoch_length(cfg, data.train_rows, info.world_size)
        loop = loop_settings(cfg, checkpoint_dir, cfg.max_steps)
        result = train_loop(
            engine,
            lambda epoch, skip: contrastive_batches(
                loaders, tokenizer, cfg, length, epoch, skip, counts, info.rank, info.world_size
            ),
            lambda module, batch: pair_loss(module, batch, cfg, device),
            loop,
            config=cfg,
            tokenizer=tokenizer,
            log=log,
        )
        encoder = engine.model
        after = evaluate(encoder, tokenizer, data, cfg, device) if evaluates else {}
    base = before if cfg.ablation in FROM_BASE else {}  # no_cpt and base start from the base model
    # under ZeRO-3 a second whole model does not fit beside a partitioned 7B one: no base figures
    if cfg.ablation not in FROM_BASE and cfg.base_model and evaluates:
        base = (
            {}
            if zero_stage(settings) == 3
            else evaluate(*base_encoder(cfg, device, data.slices), data, cfg, device)
        )
    if info.is_primary:
        log("contrastive: base model " + json.dumps(base))
        log("contrastive: start " + json.dumps(before))
        if cfg.ablation not in UNTRAINED:
            log("contrastive: fine-tuned " + json.dumps(after))
    summary = {
        "ablation": cfg.ablation,
        "steps": result.steps if result else 0,
        "tokens_per_s": round(result.tokens_per_s, 1) if result else None,
        **summarize(cfg, data, base, before, after),
        "base_model": base_source(cfg),
        "final_loss": round(result.losses[-1], 4) if result and result.losses else None,
        "resumed_from_step": result.resumed_from if result else None,
        "train_rows": dict(data.train_rows),
        "empty_pairs": data.empty_pairs,
        "texts_trained": counts.texts,  # by this process (a resumed run counts from its restart)
        "texts_truncated": counts.truncated,
        "texts_without_closing_token": counts.without_closing_token,
        "backbone": data.backbone,
        "trainable_params": trainable,
        "world_size": info.world_size,
        "checkpoint": str(result.last_checkpoint) if result and result.last_checkpoint else None,
        "input_versions": {TABLE: data.version},
    }
    return Trained(
        summary, result.losses if result else [], encoder, tokenizer, result.resumed_from if result else None
    )


def run(spark, catalog, cfg: ContrastiveConfig, log=print) -> dict:
    """Pin the pairs, train, evaluate, and (rank 0, inside an MLflow run) log curve, metrics and model.

    With `launch.launcher` set, the pairs are pinned here once and the training runs on
    `launch.num_processes` ranks started by the distributor; under `torchrun` / `deepspeed` rank 0
    pins them and hands them to the others."""
    from dataclasses import replace

    data = prepare_on_rank0(lambda: prepare(spark, catalog, cfg), cfg.device, cfg.launch)
    checkpoint_dir = default_checkpoint_dir(catalog, replace(cfg, backbone=data.backbone))
    return run_ranks(
        train_and_log,
        cfg.launch,
        cfg,
        data,
        checkpoint_dir,
        deepspeed_config=cfg.deepspeed_config,
        announce=f"contrastive: {cfg.launch.launcher}, {cfg.launch.num_processes} processes, "
        f"global batch {cfg.batch_size * cfg.launch.num_processes} pairs",
        log=log,
    )


def train_and_log(cfg: ContrastiveConfig, data: ContrastiveData, checkpoint_dir: str, log=print) -> dict:
    """Every rank: check the ranks pinned the same pairs, train, and (rank 0, inside an MLflow run)
    log the curve, the metrics and the encoder; returns the summary."""
    from core.tracking import record_model
    from training.embedding.pyfunc import log_encoder

    info, _ = join(cfg.device)
    agree_on_snapshots(data.snapshots.values())
    summary, losses, encoder, tokenizer, _ = train(cfg, data, checkpoint_dir, log=log)
    summary["model_uri"] = None
    with full_weights(encoder.parameters()):  # ZeRO-3: every rank gathers the weights, rank 0 writes
        if info.is_primary and active():
            if losses:
                log_loss_curve(losses)
            # tokens_per_s: the per-step curve the loop logged (the run's mean stays in the summary)
            final = {k: v for k, v in summary.items() if k not in STEP_METRICS}
            log_metrics({k: v for k, v in final.items() if isinstance(v, float) and math.isfinite(v)})
            summary["model_uri"] = log_encoder(
                encoder.backbone, tokenizer, encoder.projection, cfg.max_length
            )
            record_model(summary["model_uri"], variant=cfg.ablation)
    return summary
