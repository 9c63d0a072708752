"""`larr bench ctr`: how fast the stage-3 models train and score, on this machine, in one run.

- Training samples/s per model: `steps` optimizer steps (forward, backward, AdamW) on batches of
  the lakehouse's samples.ctr that are read into memory first (the loader is timed apart), after
  `warmup` steps; the models take turns for `rounds` rounds and the median is kept, so a noisy
  neighbour slows all of them alike. `larr_ple_time_ratio` = PLE's samples/s over LARR's (time
  per sample, target <= 1.3), from the medians, and per round.
- The Petastorm loader (`training/common/data.py`) alone: rows/s over one pass of the train
  split at the training batch size, against what the trainer consumes (`loader_headroom` =
  loader rows/s / the fastest ID model's samples/s; above 1 the loader keeps up).
- Scoring latency of the MLflow pyfunc (raw rows in, re-calibrated probabilities out) for one
  request of `candidates` rows, for LARR and PLE: p50 and p99 over `requests` calls, with torch
  on `scoring_threads` threads (1: one core, as a serving replica per core would run).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from training.ctr.names import CTR_MODELS, LARR, LARR_PLUS, P5, PLE, SCENE_MODELS


class BenchCtrError(ValueError):
    pass


@dataclass(frozen=True)
class BenchCtrConfig:
    models: tuple[str, ...] = CTR_MODELS
    batch_size: int = 2400
    steps: int = 5
    warmup: int = 2
    rounds: int = 3
    p5_batch_size: int = 8
    p5_steps: int = 2
    candidates: int = 100
    requests: int = 200
    scoring_threads: int = 1
    scene_vectors: str = ""  # "" = the export of latest:contrastive (as `larr train ctr`)

    def __post_init__(self) -> None:
        if (
            min(
                self.steps, self.rounds, self.candidates, self.requests, self.batch_size, self.scoring_threads
            )
            < 1
        ):
            raise ValueError(
                "steps, rounds, candidates, requests, batch_size and scoring_threads must be >= 1"
            )


def _train_rate(model, batches, cfg, layout, scene, steps: int, warmup: int) -> float:
    import torch

    from training.common.schedule import build_optimizer
    from training.ctr.train import batch_loss

    optimizer = build_optimizer(model, 1e-4, 0.0, betas=(0.9, 0.999))
    model.train()
    device = torch.device("cpu")

    def step(batch) -> None:
        batch_loss(model, batch, layout, scene, cfg, device)[0].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for i in range(warmup):
        step(batches[i % len(batches)])
    started = time.perf_counter()
    rows = 0
    for i in range(steps):
        batch = batches[i % len(batches)]
        step(batch)
        rows += len(batch["click"])
    return rows / (time.perf_counter() - started)


def _latency(scorer, request, requests: int) -> dict:
    scorer.predict(request)  # warm
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        scorer.predict(request)
        times.append((time.perf_counter() - started) * 1000)
    return {
        "p50_ms": round(float(np.percentile(times, 50)), 3),
        "p99_ms": round(float(np.percentile(times, 99)), 3),
    }


def run(spark, catalog, cfg: BenchCtrConfig, log=print) -> dict:
    import mlflow
    import torch

    from training.common.data import DeltaBatches
    from training.ctr import train
    from training.ctr.encoding import build_layout, raw_columns
    from training.ctr.pyfunc import save_scoring_model

    base = train.CtrConfig(model=LARR, scene_vectors=cfg.scene_vectors, batch_size=cfg.batch_size)
    data = train.prepare(spark, catalog, base, log=log)
    p5_data = train.prepare(spark, catalog, replace(base, model=P5), log=log) if P5 in cfg.models else None
    own_data = {P5: p5_data}  # the models whose inputs differ from LARR's
    if LARR_PLUS in cfg.models:  # also the text vectors of LARR's encoder
        own_data[LARR_PLUS] = train.prepare(spark, catalog, replace(base, model=LARR_PLUS), log=log)

    # the loader alone: one pass over the train split at the training batch size
    started, loaded = time.perf_counter(), 0
    in_memory = []
    for batch in DeltaBatches(data.train, cfg.batch_size, shuffle_seed=0, drop_last=True):
        loaded += len(batch["click"])
        if len(in_memory) < cfg.steps + cfg.warmup:
            in_memory.append(batch)
    loader_rate = loaded / (time.perf_counter() - started)
    if not in_memory:
        raise BenchCtrError(f"{base.table} has fewer train rows than one batch of {cfg.batch_size}")
    p5_batches = []
    if p5_data is not None:
        for batch in DeltaBatches(p5_data.train, cfg.p5_batch_size, shuffle_seed=0, drop_last=True):
            p5_batches.append(batch)
            if len(p5_batches) >= cfg.p5_steps + 1:
                break

    built = {}
    for name in cfg.models:
        model_cfg = replace(base, model=name, scene_vectors=cfg.scene_vectors if name in SCENE_MODELS else "")
        model, layout, scene = train.build(model_cfg, own_data.get(name, data))
        built[name] = (model_cfg, model, layout, scene)
    rates: dict[str, list[float]] = {name: [] for name in cfg.models}
    for round_index in range(cfg.rounds):
        for name in cfg.models:
            model_cfg, model, layout, scene = built[name]
            is_p5 = name == P5
            if is_p5 and round_index > 0:
                continue  # one round of the LLM is enough to know it is orders of magnitude slower
            batches = p5_batches if is_p5 else in_memory
            steps = cfg.p5_steps if is_p5 else cfg.steps
            rates[name].append(
                _train_rate(model, batches, model_cfg, layout, scene, steps, 1 if is_p5 else cfg.warmup)
            )
        log(
            f"bench ctr: round {round_index + 1}/{cfg.rounds}: "
            + ", ".join(f"{n} {r[-1]:.0f}/s" for n, r in rates.items() if r)
        )
    samples_per_s = {name: round(statistics.median(r), 1) for name, r in rates.items()}

    figures: dict = {
        "train_samples_per_s": samples_per_s,
        "batch_size": cfg.batch_size,
        "loader_rows_per_s": round(loader_rate, 1),
    }
    if LARR in samples_per_s and PLE in samples_per_s:
        figures["larr_ple_time_ratio"] = round(samples_per_s[PLE] / samples_per_s[LARR], 3)
        # the two run back to back in each round: the per-round ratios show how noisy the median is
        figures["larr_ple_time_ratio_per_round"] = [
            round(ple / larr, 3) for ple, larr in zip(rates[PLE], rates[LARR], strict=True)
        ]
    id_models = [samples_per_s[n] for n in samples_per_s if n != P5]
    if id_models:
        figures["loader_headroom"] = round(loader_rate / max(id_models), 3)

    # scoring latency: one request of `candidates` raw rows from the test split
    request = (
        catalog.read(spark, base.table, version=data.test.version)
        .where("split = 'test'")
        .orderBy("sample_id")
        .limit(cfg.candidates)
        .toPandas()[list(raw_columns(build_layout(base.encoding, data.fields, data.scene_features, False)))]
    )
    latency = {}
    training_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.scoring_threads)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name in (PLE, LARR):
                if name not in built:
                    continue
                model_cfg, model, layout, _ = built[name]
                path = save_scoring_model(model_cfg, data, model.eval(), layout, Path(tmp) / name)
                latency[name] = _latency(mlflow.pyfunc.load_model(str(path)), request, cfg.requests)
    finally:
        torch.set_num_threads(training_threads)
    figures["scoring_latency_ms"] = latency
    figures["candidates"] = len(request)
    figures["torch_threads"] = training_threads
    figures["scoring_threads"] = cfg.scoring_threads
    return figures
