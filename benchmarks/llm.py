"""larr bench llm: training throughput and peak memory of both LLM stages (no tables read or
written); one row of `cases` per (model, stage, train_layers, device); a PNG under
<lakehouse>/_bench/llm/.

Each case runs in its own Python process (`python -m benchmarks.llm --case '<json>'`), so its
peak memory is its own: the process's peak RSS (`ru_maxrss`; `rss_before_model_mb` is the floor
after the imports) and, on CUDA, `torch.cuda.max_memory_allocated`. A case builds the model as the
trainers do (stage 1: `load_backbone` + `add_special_tokens` + `select_trainable`; stage 2:
`contrastive.build_encoder`), the trainers' AdamW and schedule (`build_optimizer`,
`build_scheduler`) and `TorchEngine`, and runs the shared `train_loop` with the trainers' loss
functions (`cpt.lm_loss`, `contrastive.pair_loss`): `warmup_steps` untimed steps, then `steps`
timed ones. Tokens are what the trainers count: real (non-pad) tokens of each batch.

Baseline, measured in the same case on the same timed batches: forward only (eval, no grad,
the same loss function), each timed step followed by the forward pass of its batch so both see
the same machine load, so `train_vs_forward` = train tokens/s / forward tokens/s says what the
backward and the optimizer cost on this machine, whatever its load (about 1/3 when backward takes
twice the forward and the optimizer is cheap).

Batches: `batch_size` texts per step in both stages: stage 1 `batch_size` samples, stage 2
`batch_size // 2` pairs (2 texts each), the pair types in the trainer's rotation (user_user,
poi_poi, user_poi). Texts are synthetic but shaped like corpus.cpt and pairs.contrastive:
`etl.tokens` slices around values drawn (seeded) from the synthetic world's vocabulary;
`tokens_per_text` and `padding_share` report what the batches held, `samples_per_s` counts texts.
Stage 2 from a backbone without the registry's tokens runs as `ablation: no_cpt` (the provenance
check only; the speed is the same). On CPU fp32, on CUDA the
trainers' bf16 autocast with fp32 master weights.

Model FLOPs (stated, not measured): per token `2 N` forward, `2 N` for the activation gradients
and `2 N_trained` for the weight gradients, i.e. the usual `6 N` when every weight trains. N counts
the parameters in matmuls per token: all but the input-embedding lookup, with the (tied) LM head in
stage 1 only (stage 2 pools hidden states); with `train_layers = N > 0` activation gradients still
flow down to the embedding (its special-token rows train). Attention-score FLOPs are left out
(< 5 % at these lengths). `train_tflops` = flops/token x tokens/s; on CUDA `mfu` divides it by the
GPU's dense bf16 peak (`GPU_BF16_PEAK_TFLOPS`, looked up from the device name).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmarks.memory import python_peak_rss_mb
from core.catalog import TableCatalog, is_remote
from core.tracking import FULL_METHOD, NO_CPT
from etl.synthetic import vocab
from etl.synthetic.entities import STREETS
from etl.synthetic.job import declared_schema
from etl.text.slices import token_slices
from etl.tokens import special_tokens, wrap_text
from training.common.device import pick_device
from training.common.engine import TorchEngine
from training.common.loop import LoopSettings, train_loop
from training.common.schedule import build_optimizer, build_scheduler
from training.common.seed import seed_everything
from training.embedding.contrastive import (
    PAIR_TYPES,
    POI_POI,
    USER_USER,
    ContrastiveConfig,
    build_encoder,
    collate_pairs,
    pair_loss,
)
from training.lm import cpt
from training.lm.backbone import add_special_tokens, load_backbone, resolve_folder, save_backbone

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY, SMOLLM2 = "tiny", "smollm2"
STAGES = ("cpt", "contrastive")
CASE_MARK = "bench-llm-case "  # the child's result line on stdout
SLICES = token_slices(declared_schema())  # the texts are shaped like the synthetic world's
# dense bf16 tensor-core peaks (TFLOP/s), matched in order against torch.cuda.get_device_name()
GPU_BF16_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("H200", 989.0),
    ("GH200", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
)


class BenchLlmError(ValueError):
    pass


@dataclass(frozen=True)
class BenchLlmConfig:
    models: str = "tiny,smollm2"  # tiny | smollm2 (.models folder) | an HF folder | an MLflow URI
    stages: str = "cpt,contrastive"
    train_layers: list[int] = field(default_factory=lambda: [0])  # 0 = all weights; [0, 2] adds the CPU demo
    batch_size: int = 8  # texts per step on CPU (stage 2: batch_size // 2 pairs)
    cuda_batch_size: int = 64  # texts per step on a GPU
    max_length: int = 256  # tokens per sample / text, as the trainers' default
    warmup_steps: int = 1  # untimed steps first
    steps: int = 2  # timed steps (and forward-only batches); SmolLM2 on 2 CPU cores: 20-50 s a step
    device: str = "auto"  # auto = cpu, and cuda too when available | cpu | cuda
    seed: int = 17

    def __post_init__(self) -> None:
        if not self.model_list():
            raise ValueError("models must name at least one model")
        unknown = set(self.stage_list()) - set(STAGES)
        if unknown or not self.stage_list():
            raise ValueError(f"stages must be a comma list of {', '.join(STAGES)}, got {self.stages!r}")
        if not self.train_layers or any(n < 0 for n in self.train_layers):
            raise ValueError(f"train_layers must be a non-empty list of ints >= 0, got {self.train_layers}")
        for name in ("batch_size", "cuda_batch_size"):
            value = getattr(self, name)
            if value < 4 or value % 2:
                raise ValueError(f"{name} must be even and >= 4 (stage 2 needs 2 pairs), got {value}")
        if self.max_length < 16:
            raise ValueError(f"max_length must be >= 16, got {self.max_length}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")

    def model_list(self) -> list[str]:
        return [m.strip() for m in self.models.split(",") if m.strip()]

    def stage_list(self) -> list[str]:
        return [s.strip() for s in self.stages.split(",") if s.strip()]


@dataclass(frozen=True)
class Case:
    """One measurement, run in its own process."""

    model: str  # the label in keys and plots
    path: str  # a local HF folder
    stage: str
    train_layers: int
    device: str  # cpu | cuda
    batch_size: int  # texts per step
    max_length: int
    warmup_steps: int
    steps: int
    seed: int

    @property
    def key(self) -> str:
        """`cpt_smollm2`, `cpt_smollm2_l2`, `cpt_smollm2_cuda`: the prefix of the headline figures."""
        parts = [self.stage, self.model]
        if self.train_layers:
            parts.append(f"l{self.train_layers}")
        if self.device != "cpu":
            parts.append(self.device)
        return "_".join(parts)

    @property
    def label(self) -> str:
        return case_label(asdict(self))


def case_label(case: dict) -> str:
    """`cpt smollm2 (all, cpu)`, `contrastive tiny (last 2, cpu)`."""
    layers = "all" if case["train_layers"] == 0 else f"last {case['train_layers']}"
    return f"{case['stage']} {case['model']} ({layers}, {case['device']})"


# -- texts -----------------------------------------------------------------------------------------
def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def _poi(rng: np.random.Generator) -> dict[str, str]:
    """The wrapped slices of one synthetic POI, as `etl.text.item_text` writes them."""
    city, dish = _pick(rng, vocab.CITIES), _pick(rng, vocab.DISHES)
    name = _pick(rng, vocab.SHOP_NAME_TEMPLATES).format(
        owner=_pick(rng, vocab.OWNERS), short=dish.short, city=city.name, number=int(rng.integers(1, 99))
    )
    address = f"{int(rng.integers(1, 300))} {_pick(rng, STREETS)} Road"
    phrases = [
        _pick(rng, vocab.INTRO_TEMPLATES).format(dish=dish.name),
        vocab.TEMPERATURE_PHRASES[dish.temperature],
        vocab.SPICY_PHRASE if dish.spicy else "",
        vocab.SWEET_PHRASE if dish.sweet else "",
        vocab.MEAL_PHRASES[dish.meal],
        vocab.REGION_PHRASE.format(province=dish.province) if dish.province else "",
    ]
    tags = rng.choice(len(vocab.TAGS), size=2, replace=False)
    level = int(rng.integers(1, 5))
    values = {
        "POI_name": name,
        "POI_loc": f"{city.name}, {_pick(rng, city.districts)}, {address}",
        "POI_intro": " ".join(p for p in phrases if p),
        "POI_cuisine": dish.category,
        "POI_dishes": ", ".join(dish.menu),
        "POI_tags": ", ".join(vocab.TAGS[int(i)] for i in tags),
        "POI_hours": f"open {int(rng.integers(6, 12)):02d}:00-{int(rng.integers(20, 24)):02d}:00",
        "POI_price": f"{['budget', 'moderate', 'upscale', 'premium'][level - 1]} price, level {level} of 4",
        "POI_stats": f"rating {rng.uniform(3, 5):.1f} of 5, {int(rng.integers(20, 3000))} orders a month",
    }
    return {k: wrap_text(k, v) for k, v in values.items()}


def _user(rng: np.random.Generator) -> dict[str, str]:
    """The wrapped slices of one synthetic user, as `etl.text.user_text` writes them."""
    city = _pick(rng, vocab.CITIES)
    profile = ", ".join(
        [
            f"{_pick(rng, vocab.NICK_ADJECTIVES)}{_pick(rng, vocab.NICK_NOUNS)}{int(rng.integers(1, 99))}",
            _pick(rng, vocab.GENDERS[:2]),
            f"age {_pick(rng, vocab.AGE_BANDS)}",
            f"lives in {city.name}",
            f"{_pick(rng, ('regular', 'silver', 'gold'))} member",
        ]
    )
    orders, envs = [], []
    for _ in range(int(rng.integers(2, 4))):
        dish = _pick(rng, vocab.DISHES)
        orders.append(f"{_pick(rng, vocab.OWNERS)}'s {dish.short} ({', '.join(dish.menu[:2])})")
        day = _pick(rng, ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"))
        envs.append(
            f"{day}, {int(rng.integers(0, 24)):02d}:00, {city.name}, {_pick(rng, vocab.LOCATION_TYPES)}, "
            f"{_pick(rng, vocab.WEATHERS)}, {int(rng.integers(-5, 35))}°C"
        )
    clicks = int(rng.integers(len(orders), 40))
    price = (
        f"clicked: mean price level {rng.uniform(1, 4):.1f} of 4 over {clicks} clicks; "
        f"ordered: mean price level {rng.uniform(1, 4):.1f} of 4 over {len(orders)} orders"
    )
    values = {"user_profile": profile, "user_hist": "; ".join(orders), "user_env": "; ".join(envs)}
    values["user_price"] = price
    return {k: wrap_text(k, v) for k, v in values.items()}


def _join(slices: dict[str, str], names: tuple[str, ...]) -> str:
    return "".join(slices[n] for n in names)


POI_INPUT = ("POI_name", "POI_loc")
POI_TARGET = ("POI_intro", "POI_cuisine", "POI_dishes", "POI_tags", "POI_hours", "POI_price", "POI_stats")
POI_BUSINESS = ("POI_name", "POI_loc", "POI_cuisine", "POI_dishes")
POI_BASIC = ("POI_intro", "POI_tags")
USER_ACTION = ("user_hist", "user_env", "user_price")


def cpt_texts(n: int, seed: int) -> tuple[list[str], list[str]]:
    """`n` stage-1 samples (input = name + location, target = the other POI slices), as corpus.cpt."""
    pois = [_poi(np.random.default_rng([seed, 1, i])) for i in range(n)]
    return [_join(p, POI_INPUT) for p in pois], [_join(p, POI_TARGET) for p in pois]


def pair_texts(pair_type: str, n: int, seed: int, offset: int = 0) -> tuple[list[str], list[str]]:
    """`n` stage-2 positive pairs of one type, as pairs.contrastive (etl.text.pairs)."""
    a, b = [], []
    for i in range(offset, offset + n):
        rng = np.random.default_rng([seed, 2, i])
        if pair_type == USER_USER:  # profile <-> actions
            user = _user(rng)
            a.append(user["user_profile"])
            b.append(_join(user, USER_ACTION))
        elif pair_type == POI_POI:  # business <-> basic information
            poi = _poi(rng)
            a.append(_join(poi, POI_BUSINESS))
            b.append(_join(poi, POI_BASIC))
        else:  # user_poi: comprehensive texts
            user, poi = _user(rng), _poi(rng)
            a.append(_join(user, ("user_profile", *USER_ACTION)))
            b.append(_join(poi, POI_BUSINESS + POI_BASIC))
    return a, b


# -- one case (child process) ----------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _matmul_params(module: torch.nn.Module, backbone, stage: str, trained_only: bool) -> int:
    """Parameters used in a matmul per token (module docstring): all but the input embedding lookup,
    plus the LM head in stage 1 (counted once when tied)."""
    embedding = backbone.get_input_embeddings().weight
    head = backbone.get_output_embeddings()
    head = head.weight if head is not None else None
    total = 0
    for param in module.parameters():  # each shared tensor once
        if trained_only and not param.requires_grad:
            continue
        if param is embedding or param is head:
            continue
        total += param.numel()
    if stage == "cpt" and head is not None and (head.requires_grad or not trained_only):
        total += head.numel()
    return total


def _gpu_peak_tflops(name: str) -> float | None:
    for part, peak in GPU_BF16_PEAK_TFLOPS:
        if part.lower() in name.lower():
            return peak
    return None


def _has_special_tokens(folder: str) -> bool:
    """Whether the backbone has been through stage 1 (`contrastive.check_provenance`'s test)."""
    from transformers import AutoTokenizer

    vocab_ = AutoTokenizer.from_pretrained(folder).get_vocab()
    return all(token in vocab_ for token in special_tokens(SLICES))


def _build(case: Case):
    """(module, backbone, tokenizer, no-decay names, trainer config, loss fn, batches) as the trainers build them."""
    device = pick_device(case.device)
    n_batches = case.warmup_steps + case.steps
    if case.stage == "cpt":
        cfg = cpt.CptConfig(
            backbone=case.path,
            max_length=case.max_length,
            batch_size=case.batch_size,
            train_layers=case.train_layers,
            seed=case.seed,
            device=case.device,
        )
        model, tokenizer = load_backbone(cfg.backbone, dtype=torch.float32)
        add_special_tokens(model, tokenizer, SLICES)
        no_decay = cpt.select_trainable(model, tokenizer, cfg.train_layers, SLICES)
        inputs, targets = cpt_texts(case.batch_size * n_batches, case.seed)
        samples = cpt.encode(tokenizer, inputs, targets, cfg.max_length)
        size = case.batch_size
        batches = [
            cpt.collate(samples[i : i + size], tokenizer.pad_token_id) for i in range(0, len(samples), size)
        ]
        return model, model, tokenizer, no_decay, cfg, (lambda m, b: cpt.lm_loss(m, b, device)), batches
    cfg = ContrastiveConfig(
        backbone=case.path,
        ablation=FULL_METHOD if _has_special_tokens(case.path) else NO_CPT,  # provenance only: same speed
        max_length=case.max_length,
        batch_size=case.batch_size // 2,
        train_layers=case.train_layers,
        seed=case.seed,
        device=case.device,
    )
    encoder, tokenizer, no_decay = build_encoder(cfg, SLICES)
    batches = []
    for step in range(n_batches):
        pair_type = PAIR_TYPES[step % len(PAIR_TYPES)]
        a, b = pair_texts(pair_type, cfg.batch_size, case.seed, offset=step * cfg.batch_size)
        batches.append(collate_pairs(tokenizer, pair_type, a, b, cfg.max_length))
    loss = lambda m, b: pair_loss(m, b, cfg, device)  # noqa: E731
    return encoder, encoder.backbone, tokenizer, no_decay, cfg, loss, batches


def _mask(batch):
    return batch["attention_mask"] if isinstance(batch, dict) else batch.attention_mask


def measure(case: Case) -> dict:
    """Train `warmup_steps` + `steps` steps (the latter timed), then the forward-only baseline."""
    rss_floor = python_peak_rss_mb()
    device = pick_device(case.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seed_everything(case.seed)
    module, backbone, tokenizer, no_decay, cfg, loss_fn, batches = _build(case)
    module.to(device)
    params = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    optimizer = build_optimizer(module, cfg.lr, cfg.weight_decay, no_decay=no_decay)
    scheduler = build_scheduler(optimizer, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
    engine = TorchEngine(module, optimizer, scheduler, grad_accum=1, clip_norm=cfg.clip_norm, device=device)
    warm, timed = batches[: case.warmup_steps], batches[case.warmup_steps :]

    def train(part) -> tuple[int, float, float]:
        """(tokens, seconds, last loss) of `len(part)` steps of the shared train loop."""
        settings = LoopSettings(max_steps=len(part), progress=False)
        _sync(device)
        started = time.perf_counter()
        result = train_loop(  # no per-step MLflow metrics: their calls would be timed too
            engine,
            lambda epoch, skip: part[skip:],
            loss_fn,
            settings,
            config=cfg,
            log=lambda _: None,
            step_metrics=False,
        )
        _sync(device)
        return result.tokens, time.perf_counter() - started, result.losses[-1]

    @torch.no_grad()
    def forward(batch) -> tuple[int, float]:
        module.eval()
        _sync(device)
        started = time.perf_counter()
        tokens = loss_fn(module, batch).tokens
        _sync(device)
        return tokens, time.perf_counter() - started

    if warm:
        train(warm)
    forward(timed[0])  # untimed: the no-grad path's first call
    # each timed step followed by the forward baseline on the same batch: both see the same load
    tokens = train_seconds = forward_tokens = forward_seconds = 0
    for batch in timed:
        n, seconds, last_loss = train([batch])
        tokens, train_seconds = tokens + n, train_seconds + seconds
        n, seconds = forward(batch)
        forward_tokens, forward_seconds = forward_tokens + n, forward_seconds + seconds

    texts = sum(int(_mask(b).shape[0]) for b in timed)
    padded = sum(int(_mask(b).numel()) for b in timed)
    n_fwd = _matmul_params(module, backbone, case.stage, trained_only=False)
    n_trained = _matmul_params(module, backbone, case.stage, trained_only=True)
    train_tps = tokens / train_seconds
    forward_tps = forward_tokens / forward_seconds
    flops_per_token = 4 * n_fwd + 2 * n_trained
    out = {
        **asdict(case),
        "key": case.key,
        "tokens_per_s": round(train_tps, 1),
        "samples_per_s": round(texts / train_seconds, 2),
        "seconds_per_step": float(f"{train_seconds / len(timed):.4g}"),  # 4 significant digits
        "forward_tokens_per_s": round(forward_tps, 1),
        "train_vs_forward": round(train_tps / forward_tps, 3),
        "tokens": tokens,
        "texts": texts,
        "tokens_per_text": round(tokens / texts, 1),
        "padding_share": round(1 - tokens / padded, 3),
        "final_loss": round(last_loss, 4),
        "params": params,
        "trainable_params": trainable,
        "matmul_params": n_fwd,
        "train_flops_per_token": flops_per_token,
        "train_tflops": round(flops_per_token * train_tps / 1e12, 4),
        "forward_tflops": round(2 * n_fwd * forward_tps / 1e12, 4),
        "rss_before_model_mb": round(rss_floor, 1),
        "peak_rss_mb": round(python_peak_rss_mb(), 1),
        "peak_above_imports_mb": round(python_peak_rss_mb() - rss_floor, 1),
        "threads": torch.get_num_threads(),
    }
    out["peak_mb"] = out["peak_rss_mb"]
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = _gpu_peak_tflops(name)
        out["gpu"] = name
        out["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        out["peak_mb"] = out["gpu_peak_mb"]
        out["gpu_bf16_peak_tflops"] = peak
        out["mfu"] = round(out["train_tflops"] / peak, 4) if peak else None
    return out


# -- the bench (parent process) --------------------------------------------------------------------
def _label(source: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", source.rstrip("/").split("/")[-1]).strip("_").lower() or "model"


def _model_folder(source: str, scratch: Path, max_length: int) -> tuple[str, str]:
    """(label, local HF folder): `tiny` is built and saved into `scratch`, `smollm2` is the trainers'
    default backbone folder, anything else goes through `resolve_folder` (MLflow URIs download once)."""
    if source == TINY:
        from training.lm.tiny import tiny_llama, tiny_tokenizer

        tokenizer = tiny_tokenizer()
        model = tiny_llama(tokenizer, max_position_embeddings=max(256, max_length))
        return TINY, str(save_backbone(model, tokenizer, scratch / TINY).resolve())
    if source == SMOLLM2:
        folder = Path(cpt.CptConfig.backbone)
        if not (folder / "config.json").is_file():
            folder = REPO_ROOT / folder
        return SMOLLM2, str(resolve_folder(str(folder)).resolve())
    return _label(source), str(resolve_folder(source).resolve())


def _devices(prefer: str) -> list[str]:
    if prefer == "cuda" and not torch.cuda.is_available():
        raise BenchLlmError("device cuda requested but CUDA is not available")
    if prefer == "auto":
        return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    return [prefer]


def run_case(case: Case) -> dict:
    """`measure(case)` in a fresh Python process (its own peak memory)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.llm", "--case", json.dumps(asdict(case))],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(CASE_MARK)]
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:]) or "(no output)"
        raise RuntimeError(f"bench llm case {case.label} failed (exit {done.returncode}):\n{tail}")
    return json.loads(lines[-1][len(CASE_MARK) :])


HEADLINE = ("tokens_per_s", "forward_tokens_per_s", "train_vs_forward", "peak_mb", "train_tflops", "mfu")


def run(spark, catalog: TableCatalog, cfg: BenchLlmConfig, log=print) -> dict:
    """Every case in its own process; the figures, the headline keys and a plot (`spark` is unused)."""
    devices = _devices(cfg.device)
    load_before = os.getloadavg()[0]
    cases = []
    with tempfile.TemporaryDirectory(prefix="bench-llm-") as scratch:
        folders = [_model_folder(m, Path(scratch), cfg.max_length) for m in cfg.model_list()]
        for device in devices:
            batch_size = cfg.batch_size if device == "cpu" else cfg.cuda_batch_size
            for label, folder in folders:
                for stage in cfg.stage_list():
                    for layers in cfg.train_layers:
                        case = Case(
                            model=label,
                            path=folder,
                            stage=stage,
                            train_layers=layers,
                            device=device,
                            batch_size=batch_size,
                            max_length=cfg.max_length,
                            warmup_steps=cfg.warmup_steps,
                            steps=cfg.steps,
                            seed=cfg.seed,
                        )
                        entry = run_case(case)
                        entry.pop("path")
                        log(
                            f"bench llm: {case.label}: {entry['tokens_per_s']} tokens/s train, "
                            f"{entry['forward_tokens_per_s']} forward (x{entry['train_vs_forward']}), "
                            f"{entry['seconds_per_step']} s/step, peak {entry['peak_mb']} MB"
                        )
                        cases.append(entry)
    figures: dict = {
        "cases": cases,
        "device": ",".join(devices),
        "gpu": torch.cuda.get_device_name(0) if "cuda" in devices else None,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cores": os.cpu_count(),
        "load_1m_before": round(load_before, 2),
        "load_1m_after": round(os.getloadavg()[0], 2),
        "flops_per_token": "2N forward + 2N activation grads + 2N_trained weight grads (6N when all train)",
    }
    for entry in cases:
        for name in HEADLINE:
            if entry.get(name) is not None:
                figures[f"{entry['key']}_{name}"] = entry[name]
    root = catalog.root.rstrip("/")
    figures["plot"] = plot_cases(cases, f"{root}/_bench/llm/bench-llm.png")
    return figures


def plot_cases(cases: list[dict], path: str) -> str | None:
    """Train vs forward tokens/s per case (log scale) and peak memory per case, as one PNG."""
    if is_remote(path):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [case_label(c) for c in cases]
    y = np.arange(len(cases))
    fig, (speed, memory) = plt.subplots(1, 2, figsize=(12, 0.5 * len(cases) + 1.8), sharey=True)
    speed.barh(y - 0.2, [c["tokens_per_s"] for c in cases], height=0.4, label="train")
    speed.barh(
        y + 0.2, [c["forward_tokens_per_s"] for c in cases], height=0.4, label="forward only (baseline)"
    )
    speed.set(xscale="log", xlabel="tokens / s", yticks=y, yticklabels=labels, title="throughput")
    speed.invert_yaxis()
    speed.legend(fontsize=8)
    memory.barh(y, [c["peak_mb"] for c in cases], height=0.5, color="tab:gray")
    memory.set(xlabel="peak MB (RSS on CPU, allocated on GPU)", title="peak memory")
    fig.suptitle("larr bench llm")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run one `larr bench llm` case (JSON) and print its figures")
    parser.add_argument("--case", required=True, help="a Case as JSON")
    case = Case(**json.loads(parser.parse_args(argv).case))
    print(CASE_MARK + json.dumps(measure(case)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
