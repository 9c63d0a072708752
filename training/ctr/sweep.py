"""`larr sweep`: LARR's alignment-temperature and negative-ratio sweeps (the paper's Figure 4).

Each point is a `larr train ctr --model larr` run with one setting changed (nested seed runs
tagged `larr.sweep`, so `larr report` keeps them out of Tables 2 and 3); the figures are the mean
and standard deviation of CTR AUC over the seeds, on the validation split and on the test split,
printed, returned and plotted as PNG (logged to the command's MLflow run). The best value of each
sweep is chosen on the validation split, never on the test split; samples without a validation
split (`etl samples --set validation_days=0`) get no choice.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from training.ctr.names import LARR, NEG_RATIO_SWEEP, TEMPERATURE_SWEEP
from training.ctr.train import CtrConfig
from training.ctr.train import run as train_run


@dataclass(frozen=True)
class SweepConfig:
    temperatures: tuple[float, ...] = (0.05, 0.1, 0.2, 0.5, 1.0)
    neg_ratios: tuple[int, ...] = (0, 1, 4, 16)  # extra sampled negatives per sample (0 = in-batch only)
    seeds: tuple[int, ...] = (1, 2, 3)
    train: CtrConfig = field(default_factory=lambda: CtrConfig(model=LARR))
    plot_dir: str = ""  # "" = a temporary folder (the PNGs go to MLflow)

    def __post_init__(self) -> None:
        if self.train.model != LARR:
            raise ValueError(
                f"train.model must be larr (the sweeps vary LARR's alignment), got {self.train.model}"
            )
        if any(t <= 0 for t in self.temperatures) or any(k < 0 for k in self.neg_ratios):
            raise ValueError("temperatures must be > 0 and neg_ratios >= 0")
        if not self.temperatures and not self.neg_ratios:
            raise ValueError("nothing to sweep: temperatures and neg_ratios are both empty")


def _point(spark, catalog, cfg: SweepConfig, sweep: str, log, **network) -> dict:
    train_cfg = replace(
        cfg.train, seeds=cfg.seeds, sweep=sweep, network=replace(cfg.train.network, **network)
    )
    if cfg.train.checkpoint_dir:  # a folder per point: a point must not resume from another's weights
        (value,) = network.values()
        train_cfg = replace(
            train_cfg, checkpoint_dir=str(Path(cfg.train.checkpoint_dir) / f"{sweep}-{value}")
        )
    summary = train_run(spark, catalog, train_cfg, log=log)
    keys = ("val_ctr_auc", "ctr_auc", "ctcvr_auc")
    return {k: summary[k] for key in keys for k in (key, f"{key}_std") if k in summary}


def run(spark, catalog, cfg: SweepConfig, log=print) -> dict:
    from training.common.plots import plot_sweep

    plot_dir = Path(cfg.plot_dir or tempfile.mkdtemp(prefix="larr-sweep-"))
    plot_dir.mkdir(parents=True, exist_ok=True)
    figures: dict = {"seeds": list(cfg.seeds)}
    sweeps = (
        (TEMPERATURE_SWEEP, "alignment temperature", cfg.temperatures, "align_temperature"),
        (NEG_RATIO_SWEEP, "extra negatives per sample", cfg.neg_ratios, "align_negatives_ratio"),
    )
    for name, label, values, key in sweeps:
        if not values:
            continue
        points = [_point(spark, catalog, cfg, name, log, **{key: value}) for value in values]
        for value, point in zip(values, points, strict=True):
            validation = (
                f"validation CTR AUC {point['val_ctr_auc']:.4f} ± {point['val_ctr_auc_std']:.4f}, "
                if "val_ctr_auc" in point
                else ""
            )
            log(
                f"sweep {name} {value}: {validation}test CTR AUC {point['ctr_auc']:.4f} ± {point['ctr_auc_std']:.4f}"
            )
        figures[name] = [{key: value, **point} for value, point in zip(values, points, strict=True)]
        figures[f"{name}_plot"] = str(
            plot_sweep(
                f"LARR CTR AUC vs {label}",
                label,
                list(values),
                [p["ctr_auc"] for p in points],
                [p["ctr_auc_std"] for p in points],
                plot_dir / f"sweep_{name}.png",
                log_x=name == TEMPERATURE_SWEEP,  # 0.05 .. 1.0: evenly spaced on a log axis
            )
        )
        figures[f"best_{name}"] = _choose(name, values, points, log)
    return figures


def _choose(name: str, values, points: list[dict], log):
    """The value with the best validation CTR AUC (None without a validation split)."""
    if not all("val_ctr_auc" in p for p in points):
        log(
            f"sweep {name}: no validation split in the samples, so no value is chosen (never on the test day)"
        )
        return None
    best = max(zip(values, points, strict=True), key=lambda vp: vp[1]["val_ctr_auc"])
    log(f"sweep {name}: {best[0]} has the best validation CTR AUC")
    return best[0]
