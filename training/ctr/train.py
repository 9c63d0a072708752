"""`larr train ctr`: one trainer for every stage-3 model (LR, Wide&Deep, DeepFM, PLE, LARR, P5-style).

    larr train ctr --model larr [--ablation no_cpt|no_ft|no_al] [--set seeds=[1,2,3]]

Data: samples.ctr through the shared Petastorm module (`training/common/data.py`), the train
split for training (shuffled per seed, `epochs` passes, or `max_steps`), the test split for
evaluation (file order). Loss: BCE(CTR) + BCE(CTCVR) + `align_weight` x LARR's alignment loss
(paper: 0.05), AdamW at the paper's 8e-4 and batch 2400. When the dataset schema declares an
event weight (`events.weight`, e.g. a usage count), the BCE terms are a weighted mean over the
batch (`sample_weight`: log = 1 + ln w, count = w, none = unweighted); metrics stay unweighted. The shared `train_loop` gives
checkpoints (one folder per seed and config key; an interrupted run resumes), the tqdm bar and the
non-finite-loss stop.

Early stopping (with a validation split, `etl samples`' `validation_days`): the validation CTR
AUC every `validate_every` steps (0: once per epoch) is the `val_ctr_auc_by_step` curve; after
`patience` scores without improvement the seed stops, and the weights of its best score are put
back before the test split is read, once (`training/common/early_stop.py`). The seed's run logs
`best_step` and `stopped_early`. Sweeps and `larr tune` choose on the validation metrics.

LARR reads its frozen scene table from the `larr embed scenes` export of an encoder:
`encoder` (default `latest:contrastive`, or `latest:contrastive/<ablation>` for `no_cpt` /
`no_ft`) is resolved in the lakehouse's MLflow store and matched to the export whose header
names that encoder URI; no LLM is loaded. `no_al` keeps the full encoder and drops the
alignment loss (plain concatenation).

Distributed (`launch`, training/common/launch.py): `launch.launcher: torch_distributor` trains
every seed with DDP on `launch.num_processes` ranks started by pyspark's TorchDistributor (or, the
non-Spark path, under `torchrun`). The global batch stays `batch_size`: every rank reads the same
seeded stream of global batches and trains on its 1/world_size slice of each (so `batch_size`
must divide by the world size), DDP averages the gradients, the weighted BCE divides by the global
batch's weight sum and LARR's alignment gathers its candidates from every rank: the same global
batch, order, init (seeded, then DDP's broadcast) and loss as one process, up to float reduction
order (LARR on the tiny test world, 2 CPU ranks: loss curve within 2e-7, AUCs within 4e-6 of
one process; tests/training/test_launch.py allows 1e-4).
Dropout (`network.dropout`, 0 by default) and LARR's sampled extra negatives draw from a per-rank
stream in distributed runs, so with them a run matches one process in distribution only. The test
split is predicted in batches dealt round-robin over the ranks and gathered on rank 0, which
computes the metrics and alone logs to MLflow.

Every seed is a nested MLflow run (tags `larr.ctr_model`, `larr.ablation`, `larr.seed`,
`larr.sweep`, `larr.samples_version`) with `train_loss`, `lr` and `samples_per_s` at every
optimizer step while it trains (the test split is evaluated once, after training), the metrics of
`metrics.evaluate`, the loss curve PNG, the input versions, the encoder URI and the scoring model
(`pyfunc.py`). The command's summary holds the mean over seeds of the headline metrics.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.dataset_schema import SAMPLE_WEIGHT, SampleFields, sample_fields
from core.paths import BASE_MODEL
from core.tracking import FULL_METHOD, NO_CPT, NO_FT
from training.common.data import DeltaBatches, DeltaSnapshot, delta_snapshot
from training.common.device import all_reduce_sum, autocast, dist_info
from training.common.early_stop import Validation
from training.common.engine import TorchEngine
from training.common.launch import LaunchConfig, agree_on_snapshots, check_launch
from training.common.loop import StepOutput, train_loop
from training.common.schedule import build_optimizer, build_scheduler
from training.common.seed import seed_everything
from training.common.trainer import (
    Trained,
    checkpoint_folder,
    config_key,
    join,
    loop_settings,
    prepare_on_rank0,
    run_ranks,
)
from training.ctr import names
from training.ctr.encoding import EncodingConfig, FrozenTables, build_layout, encode, training_columns
from training.ctr.inputs import ModelConfig

TABLE = "samples.ctr"
SAMPLE_WEIGHTS = ("log", "count", "none")  # how samples.ctr's `weight` enters the loss
HEADLINE = ("ctr_auc", "ctcvr_auc", "ctr_gauc", "ctcvr_gauc", "logloss", "bayes_auc_ctr")
VALIDATION_PREFIX = "val_"  # the validation split's metrics: val_ctr_auc, ...
# fields added after checkpoints existed: left out of the key at their default, so those keep their keys
LATER_FIELDS = {"sample_weight": "log", "validate_every": 0, "patience": 2, "text_vectors": ""}
LATER_ENCODING_FIELDS = {"request_item": True, "extra_numeric": ()}  # the same, inside `encoding`
LATER_NETWORK_FIELDS = {"text_in_target": False}  # and inside `network`
VALIDATION_CURVE = "val_ctr_auc_by_step"  # early stopping's scores, one MLflow point per scored step


class CtrError(ValueError):
    pass


@dataclass(frozen=True)
class P5Config:
    """The P5-style baseline: SmolLM2 scores a text prompt; fine-tuned on a subsample of train rows."""

    source: str = BASE_MODEL  # or latest:cpt, runs:/..., a folder
    max_length: int = 96
    train_layers: int = 2  # last blocks (+ final norm) trained; 0 = all
    batch_size: int = 16
    max_steps: int = 40  # batch_size x max_steps shuffled train rows: the training subsample
    learning_rate: float = 1e-4
    eval_rows: int = 1000  # a fixed hashed subsample of the test split (0 = all of it)


@dataclass(frozen=True)
class CtrConfig:
    model: str = names.PLE  # lr | wide_deep | deepfm | ple | larr | larr_plus | p5
    table: str = TABLE  # the CTR samples (features/samples.py)
    ablation: str = FULL_METHOD  # LARR only: none | no_cpt | no_ft | no_al
    seeds: tuple[int, ...] = (1, 2, 3)
    batch_size: int = 2400
    learning_rate: float = 8e-4
    weight_decay: float = 0.0
    epochs: int = 1
    max_steps: int = 0  # 0 = `epochs` passes over the train split
    validate_every: int = 0  # steps between validation CTR AUCs (early stopping); 0 = once per epoch
    patience: int = 2  # validation scores without improvement before stopping; 0 = all epochs
    align_weight: float = 0.05  # lambda of the alignment loss
    sample_weight: str = "log"  # with a declared events.weight: log (1 + ln w) | count (w) | none
    encoder: str = ""  # LARR: "" = latest:contrastive (or latest:contrastive/<ablation>)
    scene_vectors: str = ""  # LARR: an explicit export .npz (overrides `encoder`)
    text_vectors: str = ""  # larr_plus: an explicit text export .npz ("" = the scene export's encoder's)
    encoding: EncodingConfig = field(default_factory=EncodingConfig)
    network: ModelConfig = field(default_factory=ModelConfig)
    p5: P5Config = field(default_factory=P5Config)
    eval_batch_size: int = 8192
    eval_rows: int = 0  # ID models: 0 = the whole test split
    device: str = "auto"
    checkpoint_every: int = 0
    checkpoint_dir: str = ""  # "" = <lakehouse>/_checkpoints/ctr/<config key>/seed-<seed>
    keep_checkpoints: int = 2
    resume: bool = True
    progress: bool = True
    log_model: bool = True  # the scoring pyfunc per seed (never for p5: it is an LLM, not a scorer)
    sweep: str = ""  # set by `larr sweep` / `larr tune`: tags the runs so the report leaves them out
    evaluate_test: bool = True  # False: `larr tune`'s trials, which never read the test split
    tuned: str = ""  # set by `larr tune` on its chosen configuration's runs: the tune run's id
    launch: LaunchConfig = field(default_factory=LaunchConfig)  # distributed training (DDP)

    def __post_init__(self) -> None:
        if self.model not in names.CTR_MODELS:
            raise ValueError(f"model must be one of {', '.join(names.CTR_MODELS)}, got {self.model!r}")
        if self.ablation not in names.CTR_ABLATIONS:
            raise ValueError(
                f"ablation must be one of {', '.join(names.CTR_ABLATIONS)}, got {self.ablation!r}"
            )
        if self.ablation != FULL_METHOD and self.model != names.LARR:
            raise ValueError(f"ablation {self.ablation} applies to model larr only, got model {self.model}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and non-empty, got {list(self.seeds)}")
        if self.batch_size < 2 or self.learning_rate <= 0 or self.epochs < 1 or self.max_steps < 0:
            raise ValueError("batch_size >= 2, learning_rate > 0, epochs >= 1 and max_steps >= 0 required")
        if self.validate_every < 0 or self.patience < 0:
            raise ValueError(
                f"validate_every and patience must be >= 0, got {self.validate_every} and {self.patience}"
            )
        if self.align_weight < 0:
            raise ValueError(f"align_weight must be >= 0, got {self.align_weight}")
        if self.sample_weight not in SAMPLE_WEIGHTS:
            raise ValueError(
                f"sample_weight must be one of {', '.join(SAMPLE_WEIGHTS)}, got {self.sample_weight!r}"
            )
        if self.launch.launcher == "deepspeed_distributor":
            raise ValueError(
                "launch.launcher deepspeed_distributor is for stages 1 and 2: CTR trains with torch_distributor"
            )
        problem = check_launch(self.launch, device=self.device)
        if problem:
            raise ValueError(problem)
        if self.launch.enabled and self.train_batch_size % self.launch.num_processes:
            raise ValueError(
                f"batch_size {self.train_batch_size} must divide by launch.num_processes "
                f"{self.launch.num_processes} (the global batch is split evenly over the ranks)"
            )

    @property
    def train_batch_size(self) -> int:
        """The global batch of an optimizer step (P5 has its own)."""
        return self.p5.batch_size if self.is_p5 else self.batch_size

    @property
    def is_p5(self) -> bool:
        return self.model == names.P5

    def network_config(self) -> ModelConfig:
        return replace(self.network, align=False) if self.ablation == names.NO_AL else self.network

    def default_encoder(self) -> str:
        if self.encoder:
            return self.encoder
        return (
            f"latest:contrastive/{self.ablation}"
            if self.ablation in (NO_CPT, NO_FT)
            else "latest:contrastive"
        )

    def key(self, data_key: str) -> str:
        """A short hash of what shapes the weights (model, data, hyper-parameters), not of bookkeeping."""
        from training.ctr.models import MODEL_REVISIONS

        skip = [
            "seeds",
            "log_model",
            "sweep",
            "evaluate_test",
            "tuned",
            "eval_batch_size",
            "eval_rows",
            "device",
        ]
        skip += [name for name, default in LATER_FIELDS.items() if getattr(self, name) == default]
        extra = {"data": data_key}
        skip.append("encoding")
        extra["encoding"] = {
            k: v
            for k, v in asdict(self.encoding).items()
            if k not in LATER_ENCODING_FIELDS or v != LATER_ENCODING_FIELDS[k]
        }
        skip.append("network")
        extra["network"] = {
            k: v
            for k, v in asdict(self.network).items()
            if k not in LATER_NETWORK_FIELDS or v != LATER_NETWORK_FIELDS[k]
        }
        if self.model in MODEL_REVISIONS:  # absent: revision 1, so older checkpoints keep their keys
            extra["revision"] = MODEL_REVISIONS[self.model]
        return config_key(self, skip=skip, extra=extra)


@dataclass(frozen=True)
class CtrData:
    """What the driver pinned: the snapshots, the training rate r, Bayes AUCs, the scene export."""

    train: DeltaSnapshot
    test: DeltaSnapshot
    neg_rate: float  # mean recorded rate of the train split (the scoring model re-calibrates with it)
    bayes: dict  # bayes_auc_ctr / bayes_auc_ctcvr on the test split (empty without a truth table)
    scene_vectors: str | None  # the export .npz (LARR)
    encoder_uri: str | None
    fields: SampleFields | None = None  # the dataset schema's sample fields
    scene_features: tuple[str, ...] = ()  # the dataset schema's scene features
    weighted: bool = False  # the samples carry a `weight` the loss uses
    validation: DeltaSnapshot | None = None  # the validation split (None: samples.ctr has none)
    text_vectors: str | None = None  # the text export .npz (larr_plus)

    @property
    def snapshots(self) -> list[DeltaSnapshot]:
        return [self.train, self.test] + ([self.validation] if self.validation is not None else [])

    def key(self) -> str:
        texts = f":{self.text_vectors}" if self.text_vectors else ""
        return f"{self.train.table}@{self.train.version}:{self.scene_vectors or ''}{texts}"


# -- driver side --------------------------------------------------------------------------------
def newest_export(catalog, encoder_uri: str, texts: bool = False) -> str:
    """The newest `larr embed scenes` (or, `texts`, `larr embed texts`) export whose header names
    `encoder_uri`."""
    from features.embeddings.export import EXPORT_DIR, TEXT_EXPORT_DIR
    from features.embeddings.vectors import load_scene_meta

    folder = Path(catalog.root) / (TEXT_EXPORT_DIR if texts else EXPORT_DIR)
    found = [p for p in folder.glob("*.npz") if load_scene_meta(p).get("encoder_uri") == encoder_uri]
    if not found:
        kind, command = ("text", "embed texts") if texts else ("scene", "embed scenes")
        sides = " --set sides=[poi,user]" if texts else ""
        raise CtrError(
            f"no {kind} vectors of encoder {encoder_uri} in {folder}: run "
            f"`larr {command} --set encoder={encoder_uri}{sides}` first"
        )
    return str(max(found, key=lambda p: p.stat().st_mtime))


def resolve_text_vectors(catalog, cfg: CtrConfig, encoder_uri: str) -> str:
    """larr_plus's text export: `text_vectors`, else the newest `larr embed texts` export of the
    encoder whose scene vectors it reads (one encoder: the frozen cosine compares like with like)."""
    if cfg.text_vectors:
        if not Path(cfg.text_vectors).is_file():
            raise CtrError(f"text_vectors {cfg.text_vectors} does not exist")
        return cfg.text_vectors
    return newest_export(catalog, encoder_uri, texts=True)


def resolve_scene_vectors(catalog, cfg: CtrConfig) -> tuple[str, str]:
    """(export path, encoder URI) for LARR."""
    from core.tracking import TrackingError, resolve_latest
    from features.embeddings.vectors import load_scene_meta

    if cfg.scene_vectors:
        if not Path(cfg.scene_vectors).is_file():
            raise CtrError(f"scene_vectors {cfg.scene_vectors} does not exist")
        return cfg.scene_vectors, str(load_scene_meta(cfg.scene_vectors).get("encoder_uri"))
    try:
        uri = resolve_latest(cfg.default_encoder())
    except TrackingError as err:
        raise CtrError(str(err)) from None
    return newest_export(catalog, uri), uri


def bayes_aucs(spark, catalog, table: str, test_version: int) -> dict:
    """The synthetic world's Bayes-optimal AUCs on the test split: the true probabilities as scores.

    Needs truth.impressions and test samples that are all logged impressions (sample_id =
    event_id); a world without truth, or positive_only samples, gives none."""
    from pyspark.sql import functions as sf

    from core.metrics import binned_auc

    if catalog.version(spark, "truth.impressions") is None:
        return {}
    test = catalog.read(spark, table, version=test_version).where("split = 'test'")
    truth = catalog.read(spark, "truth.impressions").select(
        sf.col("event_id").alias("sample_id"), "p_click", "p_ctcvr"
    )
    joined = test.select("sample_id", "click", "ctcvr").join(truth, "sample_id").cache()
    try:
        if joined.count() != test.count():
            return {}
        return {
            "bayes_auc_ctr": round(binned_auc(joined, "p_click", "click"), 5),
            "bayes_auc_ctcvr": round(binned_auc(joined, "p_ctcvr", "ctcvr"), 5),
        }
    finally:
        joined.unpersist()


def prepare(spark, catalog, cfg: CtrConfig, log=print) -> CtrData:
    from pyspark.sql import functions as sf

    from core.schema_table import read_schema

    schema = read_schema(spark, catalog)
    fields, scene_features = sample_fields(schema), schema.scene_names
    columns = training_columns(
        build_layout(cfg.encoding, fields, scene_features, False), with_texts=cfg.is_p5
    )
    weighted = bool(schema.events.weight) and cfg.sample_weight != "none"
    if weighted:
        columns.append(SAMPLE_WEIGHT)
    train = delta_snapshot(spark, catalog, cfg.table, columns, where="split = 'train'")
    test = delta_snapshot(spark, catalog, cfg.table, [*columns, "sample_id"], where="split = 'test'")
    validation = delta_snapshot(
        spark, catalog, cfg.table, [*columns, "sample_id"], where="split = 'validation'"
    )
    versions = sorted({train.version, test.version, validation.version})
    if len(versions) > 1:  # all pinned from the latest version: a write happened between
        raise CtrError(f"{cfg.table} changed while the trainer pinned it (versions {versions})")
    rate = (
        catalog.read(spark, cfg.table, version=train.version).where("split = 'train'").agg(sf.avg("neg_rate"))
    )
    scene_vectors, encoder_uri = (
        resolve_scene_vectors(catalog, cfg) if cfg.model in names.SCENE_MODELS else (None, None)
    )
    text_vectors = resolve_text_vectors(catalog, cfg, encoder_uri) if cfg.model == names.LARR_PLUS else None
    bayes = bayes_aucs(spark, catalog, cfg.table, test.version)
    log(
        f"train ctr: {cfg.table} version {train.version}: {train.num_rows} train rows, "
        f"{validation.num_rows} validation rows, {test.num_rows} test rows"
        + (f"; scene vectors {scene_vectors}" if scene_vectors else "")
        + (f"; text vectors {text_vectors}" if text_vectors else "")
        + (
            f"; loss weighted by events.weight {schema.events.weight} ({cfg.sample_weight})"
            if weighted
            else ""
        )
    )
    return CtrData(
        train,
        test,
        float(rate.first()[0]),
        bayes,
        scene_vectors,
        encoder_uri,
        fields,
        scene_features,
        weighted,
        validation if validation.num_rows else None,
        text_vectors,
    )


# -- model --------------------------------------------------------------------------------------
def build(cfg: CtrConfig, data: CtrData):
    """(model, layout, its frozen tables) for `cfg.model`."""
    from training.ctr.models import build_model

    if cfg.is_p5:
        from training.ctr.models.p5 import build_p5

        layout = build_layout(cfg.encoding, data.fields, data.scene_features, with_scene=False)
        model = build_p5(cfg.p5.source, cfg.p5.max_length, cfg.p5.train_layers, torch.float32)
        return model, layout, FrozenTables()
    tables = FrozenTables.load(data.scene_vectors, data.text_vectors, data.scene_features)
    layout = build_layout(
        cfg.encoding,
        data.fields,
        data.scene_features,
        with_scene=tables.scene is not None,
        text_sides=() if tables.text is None else tables.text.features,
    )
    model = build_model(cfg.model, layout, cfg.network_config(), *tables.model_inputs())
    return model, layout, tables


def batch_inputs(batch: dict, layout, tables: FrozenTables, is_p5: bool, device):
    texts = None
    if is_p5:
        from training.ctr.prompts import build_prompts

        texts = build_prompts(batch, layout)
    inputs, unknown = encode(batch, layout, tables.scene, texts, text_table=tables.text)
    return inputs.to(device), unknown


def sample_weights(raw, how: str, device) -> torch.Tensor:
    """Per-sample loss weights from samples.ctr's `weight` (negative weights count as 0)."""
    w = torch.as_tensor(raw, dtype=torch.float32, device=device).clamp_min(0.0)
    if how == "log":
        return torch.where(w >= 1.0, 1.0 + torch.log(w.clamp_min(1.0)), w)
    return w if how == "count" else torch.ones_like(w)


def loss_of(
    out,
    click: torch.Tensor,
    ctcvr: torch.Tensor,
    align_weight: float,
    weights: torch.Tensor | None = None,
    weight_norm: torch.Tensor | None = None,
) -> torch.Tensor:
    """BCE(CTR) + BCE(CTCVR), a weighted mean when `weights` are given, + the alignment term.

    `weight_norm` replaces the batch's weight sum as the divisor: a rank holding 1/W of a global
    batch passes the global batch's sum / W, so the mean over ranks (DDP's) is the global mean."""
    if weights is None:
        loss = F.binary_cross_entropy_with_logits(out.ctr_logit.float(), click)
        loss = loss + F.binary_cross_entropy_with_logits(out.ctcvr_logit.float(), ctcvr)
    else:
        share = weights / (weights.sum() if weight_norm is None else weight_norm).clamp_min(1e-12)

        def weighted(logit: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
            return (F.binary_cross_entropy_with_logits(logit.float(), label, reduction="none") * share).sum()

        loss = weighted(out.ctr_logit, click) + weighted(out.ctcvr_logit, ctcvr)
    if out.align_loss is not None and align_weight > 0:
        loss = loss + align_weight * out.align_loss.float()
    return loss


def rank_slice(batch: dict, rank: int, world_size: int) -> dict:
    """Rank `rank`'s contiguous 1/world_size of a global batch (rows in order, ranks in order)."""
    if world_size == 1:
        return batch
    rows = len(batch["click"])
    if rows % world_size:
        raise CtrError(f"a batch of {rows} rows does not split evenly over {world_size} ranks")
    share = rows // world_size
    return {k: v[rank * share : (rank + 1) * share] for k, v in batch.items()}


def batch_loss(
    module, batch: dict, layout, tables, cfg: CtrConfig, device, rank: int = 0, world_size: int = 1
) -> tuple[torch.Tensor, np.ndarray]:
    """The training loss of one batch of sample columns, and its unknown scene values per feature.

    With `world_size` > 1 `batch` is the global batch and the loss is that of this rank's slice,
    scaled so that its mean over the ranks is the global batch's loss."""
    local = rank_slice(batch, rank, world_size)
    inputs, unknown = batch_inputs(local, layout, tables, cfg.is_p5, device)
    click = torch.as_tensor(local["click"], dtype=torch.float32, device=device)
    ctcvr = torch.as_tensor(local["ctcvr"], dtype=torch.float32, device=device)
    with autocast(device):
        out = module(inputs)
    if SAMPLE_WEIGHT in batch:
        weights = sample_weights(local[SAMPLE_WEIGHT], cfg.sample_weight, device)
        norm = None
        if world_size > 1:
            norm = sample_weights(batch[SAMPLE_WEIGHT], cfg.sample_weight, device).sum() / world_size
        return loss_of(out, click, ctcvr, cfg.align_weight, weights, norm), unknown
    return loss_of(out, click, ctcvr, cfg.align_weight), unknown


def hashed_subsample(ids: np.ndarray, rows: int, total: int) -> np.ndarray:
    """A fixed subsample of about `rows` of `total` rows, by a hash of the id (not by position)."""
    if rows <= 0 or rows >= total:
        return np.ones(len(ids), dtype=bool)
    mixed = (ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(11)
    return mixed.astype(np.float64) / float(1 << 53) < rows / total


PREDICTED = ("user_id", "click", "ctcvr", "neg_rate", "p_ctr", "p_ctcvr")


@torch.no_grad()
def predict_split(
    model, cfg: CtrConfig, split: DeltaSnapshot, layout, tables, device
) -> dict[str, np.ndarray] | None:
    """Sampled-space probabilities for an evaluation split (or its hashed subsample) and the labels.

    Distributed: the split's batches are dealt round-robin over the ranks and gathered on rank 0
    in file order (the single-process order); the other ranks get None."""
    import torch.distributed as dist

    info = dist_info()
    model.eval()
    batch_size = cfg.p5.batch_size * 4 if cfg.is_p5 else cfg.eval_batch_size
    eval_rows = cfg.p5.eval_rows if cfg.is_p5 else cfg.eval_rows
    mine: list[tuple[int, dict[str, np.ndarray]]] = []
    for index, batch in enumerate(DeltaBatches(split, cfg.eval_batch_size, shuffle=False, num_epochs=1)):
        if index % info.world_size != info.rank:
            continue
        mine.append(
            (
                index,
                _predict_batch(
                    model, cfg, batch, split.num_rows, eval_rows, batch_size, layout, tables, device
                ),
            )
        )
    if info.distributed and dist.is_initialized():
        gathered: list | None = [None] * info.world_size if info.is_primary else None
        dist.gather_object(mine, gathered, dst=0)
        if not info.is_primary:
            return None
        mine = sorted((part for rank_parts in gathered for part in rank_parts), key=lambda p: p[0])
    if not mine:
        return {k: np.zeros(0) for k in PREDICTED}
    return {k: np.concatenate([part[k] for _, part in mine]) for k in PREDICTED}


def _predict_batch(
    model,
    cfg: CtrConfig,
    batch: dict,
    total_rows: int,
    eval_rows: int,
    batch_size: int,
    layout,
    tables,
    device,
) -> dict[str, np.ndarray]:
    """One evaluation batch's kept rows (hashed subsample) with their predicted probabilities."""
    keep = hashed_subsample(batch["sample_id"], eval_rows, total_rows)
    batch = {k: v[keep] for k, v in batch.items()}
    parts: dict[str, list] = {k: [batch[k][:0]] for k in ("user_id", "click", "ctcvr", "neg_rate")}
    parts |= {"p_ctr": [np.zeros(0, np.float32)], "p_ctcvr": [np.zeros(0, np.float32)]}
    for start in range(0, len(batch["click"]), batch_size):
        part = {k: v[start : start + batch_size] for k, v in batch.items()}
        inputs, _ = batch_inputs(part, layout, tables, cfg.is_p5, device)
        with autocast(device):
            out = model(inputs)
        parts["p_ctr"].append(torch.sigmoid(out.ctr_logit.float()).cpu().numpy())
        parts["p_ctcvr"].append(torch.sigmoid(out.ctcvr_logit.float()).cpu().numpy())
        for k in ("user_id", "click", "ctcvr", "neg_rate"):
            parts[k].append(part[k])
    return {k: np.concatenate(v) for k, v in parts.items()}


def seed_checkpoint_dir(catalog, cfg: CtrConfig, data: CtrData, seed: int) -> str:
    """`<checkpoint_dir or lakehouse/_checkpoints/ctr/<config key>>/seed-<seed>`."""
    key = cfg.key(data.key())
    return checkpoint_folder(
        catalog.root, "ctr", key, cfg.checkpoint_dir, under=f"seed-{seed}", error=CtrError
    )


def train_seed(cfg: CtrConfig, data: CtrData, seed: int, checkpoint_dir: str, log=print) -> Trained:
    """Train and evaluate one seed: the metrics as the summary, the loss curve, the model and its
    feature layout.

    Distributed (every rank calls it): DDP over slices of the same global batches; the summary is
    None on every rank but 0."""

    info, device = join(cfg.device)
    batch_size = cfg.train_batch_size
    if batch_size % info.world_size:
        raise CtrError(
            f"batch_size {batch_size} must divide by the {info.world_size} ranks (the global batch is split evenly)"
        )
    seed_everything(seed)  # the same init on every rank (and DDP broadcasts rank 0's weights)
    model, layout, tables = build(cfg, data)
    model.to(device)
    if cfg.is_p5:
        max_steps, lr = cfg.p5.max_steps, cfg.p5.learning_rate
    else:
        max_steps = cfg.max_steps or max(1, cfg.epochs * (data.train.num_rows // batch_size))
        lr = cfg.learning_rate
    optimizer = build_optimizer(model, lr, cfg.weight_decay, betas=(0.9, 0.999))
    scheduler = build_scheduler(optimizer, warmup_steps=0, max_steps=max_steps, min_ratio=1.0)  # constant
    engine = TorchEngine(model, optimizer, scheduler, grad_accum=1, clip_norm=0.0, device=device)
    if info.distributed:  # dropout masks and sampled negatives: each rank its own stream
        torch.manual_seed(int(np.random.SeedSequence([seed, info.rank]).generate_state(1)[0]))
    # every rank reads the same global batches and trains on its slice (batch_loss)
    loader = DeltaBatches(data.train, batch_size, shuffle_seed=seed, drop_last=True)
    unknown_total = np.zeros(len(layout.scene_features), dtype=np.int64)

    def loss_fn(module, batch) -> StepOutput:
        nonlocal unknown_total
        loss, unknown = batch_loss(module, batch, layout, tables, cfg, device, info.rank, info.world_size)
        unknown_total = unknown_total + unknown
        return StepOutput(loss, len(batch["click"]) // info.world_size)

    settings = loop_settings(cfg, checkpoint_dir, max_steps)
    validation, evaluated = early_stopping(cfg, data, layout, tables, device)
    result = train_loop(
        engine,
        loader.epoch,
        loss_fn,
        settings,
        config=cfg,
        log=log,
        throughput="samples_per_s",
        validation=validation,
    )
    unknown_train = int(all_reduce_sum([float(unknown_total.sum())], device)[0])
    started = time.perf_counter()
    validated = {}
    if data.validation is not None:
        scored, on_validation = _scored_at_best(result, evaluated) if validation else (False, None)
        if not scored:  # a run without early stopping, or resumed past its best step
            predicted = predict_split(model, cfg, data.validation, layout, tables, device)
            on_validation = None if predicted is None else _evaluate(predicted)
        if on_validation is not None:
            validated = {f"{VALIDATION_PREFIX}{k}": v for k, v in on_validation.items()}
    if cfg.evaluate_test:
        predictions = predict_split(model, cfg, data.test, layout, tables, device)
    else:  # a tuning trial: the test split stays unread
        predictions = {} if info.is_primary else None
    if predictions is None:  # not rank 0: rank 0 evaluates the gathered predictions
        return Trained(None, result.losses, model, layout, result.resumed_from)
    metrics = (_evaluate(predictions) if predictions else {}) | validated
    if cfg.evaluate_test:
        metrics |= data.bayes
    for task in ("ctr", "ctcvr"):
        if f"bayes_auc_{task}" in metrics and f"{task}_auc" in metrics:
            metrics[f"{task}_auc_ratio_to_bayes"] = metrics[f"{task}_auc"] / data.bayes[f"bayes_auc_{task}"]
    metrics["eval_seconds"] = time.perf_counter() - started
    metrics["train_steps"] = result.steps
    if validation is not None:
        metrics["best_step"] = result.best_step
        metrics["stopped_early"] = int(result.stopped_early)
    metrics["train_samples_per_s"] = result.tokens_per_s  # StepOutput counts samples here
    metrics["unknown_scene_values_train"] = unknown_train
    return Trained(metrics, result.losses, model, layout, result.resumed_from)


def early_stopping(
    cfg: CtrConfig, data: CtrData, layout, tables, device
) -> tuple[Validation | None, list[dict | None]]:
    """Validation CTR AUC every `validate_every` steps (0: once per epoch), stopping after
    `patience` scores without improvement (None without a validation split, and for P5); and the
    validation metrics of every score this process computes, in order (None on ranks but 0)."""
    evaluated: list[dict | None] = []
    if data.validation is None or cfg.is_p5:
        return None, evaluated

    def score(model) -> float | None:
        predicted = predict_split(model, cfg, data.validation, layout, tables, device)
        evaluated.append(None if predicted is None else _evaluate(predicted))
        return None if evaluated[-1] is None else evaluated[-1]["ctr_auc"]

    every = cfg.validate_every or max(1, data.train.num_rows // cfg.train_batch_size)
    return Validation(every=every, patience=cfg.patience, score=score, name=VALIDATION_CURVE), evaluated


def _scored_at_best(result, evaluated: list[dict | None]) -> tuple[bool, dict | None]:
    """Whether this process scored the step whose weights the model holds (its validation metrics
    need no second pass), and those metrics. The same answer on every rank: scores before a
    resume were computed by an earlier process."""
    steps = [step for step, _ in result.validation]
    if result.best_step not in steps:
        return False, None
    index = steps.index(result.best_step) - (len(steps) - len(evaluated))
    return (True, evaluated[index]) if index >= 0 else (False, None)


def _evaluate(predictions: dict[str, np.ndarray]) -> dict:
    from training.ctr.metrics import evaluate

    return evaluate(
        predictions["user_id"],
        predictions["click"],
        predictions["ctcvr"],
        predictions["p_ctr"],
        predictions["p_ctcvr"],
        predictions["neg_rate"],
    )


def _seed_run(cfg: CtrConfig, data: CtrData, seed: int):
    """A nested MLflow run for one seed, or a null context outside `larr` (tests)."""
    import contextlib

    from training.common.tracking import active

    if not active():
        return contextlib.nullcontext(None)
    import mlflow

    run = mlflow.start_run(run_name=f"{cfg.model}-{cfg.ablation}-seed{seed}", nested=True)
    mlflow.set_tags(
        {
            names.MODEL_TAG: cfg.model,
            names.ABLATION_TAG: cfg.ablation,
            names.SEED_TAG: str(seed),
            names.SWEEP_TAG: cfg.sweep,
            names.TUNED_TAG: cfg.tuned,
            names.SAMPLES_TAG: str(data.train.version),
            names.ENCODER_TAG: data.encoder_uri or "",
        }
    )
    from core.tracking import flatten, log_params

    params = flatten(cfg) | {
        "align_temperature": cfg.network.align_temperature,
        "align_negatives_ratio": cfg.network.align_negatives_ratio,
        f"input_versions.{cfg.table}": data.train.version,
        "neg_rate": data.neg_rate,
        "scene_vectors": data.scene_vectors or "",
        "text_vectors": data.text_vectors or "",
    }
    log_params(params)
    return run


def run(spark, catalog, cfg: CtrConfig, log=print) -> dict:
    """Pin the data, then train, evaluate and log every seed; the summary holds the seeds' means.

    With `launch.launcher` set, the seeds train on `launch.num_processes` ranks started by
    pyspark's TorchDistributor (the data pinned here, once); under `torchrun` rank 0 pins it for
    every rank."""
    data = prepare_on_rank0(lambda: prepare(spark, catalog, cfg, log=log), cfg.device, cfg.launch)
    folders = {seed: seed_checkpoint_dir(catalog, cfg, data, seed) for seed in cfg.seeds}
    launch = cfg.launch
    return run_ranks(
        train_seeds,
        launch,
        cfg,
        data,
        folders,
        announce=f"train ctr: {launch.launcher}, {launch.num_processes} processes "
        f"({'driver' if launch.local_mode else 'executors'}, {'GPU' if launch.use_gpu else 'CPU'}), "
        f"{cfg.train_batch_size // launch.num_processes} rows of each batch of {cfg.train_batch_size} per rank",
        log=log,
    )


def train_seeds(cfg: CtrConfig, data: CtrData, folders: dict[int, str], log=print) -> dict:
    """Train, evaluate and (rank 0, inside an MLflow run) log every seed; the summary (rank 0's
    is the run's: the other ranks' has no per-seed figures). Every rank calls it, after checking
    that all of them pinned the same samples snapshot."""
    from training.common.tracking import log_loss_curve, log_metrics

    info, _ = join(cfg.device)
    agree_on_snapshots(data.snapshots)
    per_seed, run_ids = [], []
    for seed in cfg.seeds:
        with _seed_run(cfg, data, seed) as seed_run:
            trained = train_seed(cfg, data, seed, folders[seed], log=log)
            metrics = trained.summary
            if metrics is None:
                continue
            finite = {k: v for k, v in metrics.items() if isinstance(v, int | float) and math.isfinite(v)}
            log(f"train ctr: {cfg.model}/{cfg.ablation} seed {seed}: " + _headline(metrics))
            if seed_run is not None:
                log_loss_curve(trained.losses)
                log_metrics(finite)
                if cfg.log_model and not cfg.is_p5:
                    from training.ctr.pyfunc import log_scoring_model

                    log_scoring_model(cfg, data, trained.model, trained.preprocessor)
                run_ids.append(seed_run.info.run_id)
            per_seed.append(
                {
                    "seed": seed,
                    **finite,
                    "final_loss": trained.losses[-1],
                    "resumed_from_step": trained.resumed_from,
                }
            )
    summary = {"model": cfg.model, "ablation": cfg.ablation, "seeds": list(cfg.seeds)}
    validation_headline = [f"{VALIDATION_PREFIX}{k}" for k in HEADLINE if not k.startswith("bayes")]
    for key in (
        *HEADLINE,
        *validation_headline,
        "ctr_auc_ratio_to_bayes",
        "calibration_ctr",
        "train_samples_per_s",
    ):
        values = [s[key] for s in per_seed if key in s]
        if values:
            summary[key] = round(float(np.mean(values)), 5)
            summary[f"{key}_std"] = round(float(np.std(values, ddof=1)), 5) if len(values) > 1 else 0.0
    summary |= {
        "train_rows": data.train.num_rows,
        "validation_rows": data.validation.num_rows if data.validation is not None else 0,
        "test_rows": data.test.num_rows,
        "neg_rate": data.neg_rate,
        "encoder_uri": data.encoder_uri,
        "scene_vectors": data.scene_vectors,
        "text_vectors": data.text_vectors,
        "seed_runs": run_ids,
        "per_seed": per_seed,
        "world_size": info.world_size,
        "input_versions": {cfg.table: data.train.version},
    }
    return summary


def _headline(metrics: dict) -> str:
    return ", ".join(f"{k} {metrics[k]:.4f}" for k in HEADLINE if k in metrics)
