"""`larr tune --model M`: the same seeded random search for every CTR model, chosen on validation.

    larr tune --model ple [--set trials=8] [--set search_seed=0]

Every model gets `trials` draws from one search space (`SearchSpace`): learning rate (log-uniform),
embedding width, a width factor for every hidden layer (Wide&Deep / DeepFM's deep part, PLE's
experts and towers), dropout; LARR also the alignment weight (log-uniform) and temperature. Draw
`i` depends only on (`search_seed`, `i`), not on the model, so every model is tried at the same
shared settings: equal budgets, not one model tuned by hand. The number of steps is not drawn:
each trial trains up to `max_epochs` with early stopping on the validation CTR AUC (`patience`).

Each trial is a child MLflow run (tags `larr.tune` = model, `larr.trial` = index; its params and
its validation figures) whose seed runs are tagged `larr.sweep = tune`, so `larr report` keeps
them out of its tables; trials never read the test split. The trial with the best mean validation
CTR AUC is then trained on `final_seeds` as ordinary seed runs tagged `larr.tuned` (the command's
run id), and only these read the test day: once per final configuration. `larr report` builds
Table 2 from the newest runs per seed, which are then these. For LARR, `final_ablations` trains
the ablations at the chosen settings too, so Table 3 compares like with like.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from core.tracking import FULL_METHOD
from training.ctr import names
from training.ctr.train import CtrConfig
from training.ctr.train import run as train_run


class TuneError(ValueError):
    pass


@dataclass(frozen=True)
class SearchSpace:
    learning_rate: tuple[float, float] = (2e-4, 5e-3)  # log-uniform
    embedding_dim: tuple[int, ...] = (8, 16, 32)
    width_factor: tuple[float, ...] = (0.5, 1.0, 2.0)  # times every hidden layer of the config
    dropout: tuple[float, ...] = (0.0, 0.1, 0.2)
    align_weight: tuple[float, float] = (0.01, 0.3)  # LARR, log-uniform
    align_temperature: tuple[float, ...] = (0.05, 0.1, 0.2, 0.5)  # LARR

    def __post_init__(self) -> None:
        for name in ("learning_rate", "align_weight"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(
                    f"space.{name} must be [low, high] with 0 < low <= high, got [{low}, {high}]"
                )
        for name in ("embedding_dim", "width_factor", "dropout", "align_temperature"):
            if not getattr(self, name):
                raise ValueError(f"space.{name} must list at least one value")
        if any(not 0 <= d < 1 for d in self.dropout):
            raise ValueError(f"space.dropout values must be in [0, 1), got {list(self.dropout)}")

    def draw(self, search_seed: int, trial: int, model: str) -> dict:
        """Trial `trial`'s settings: shared ones from a stream of (seed, trial) alone, LARR's own
        from a second stream, so the shared draws are the same for every model."""
        shared = np.random.default_rng([search_seed, trial])
        settings = {
            "learning_rate": _log_uniform(shared, self.learning_rate),
            "embedding_dim": int(shared.choice(self.embedding_dim)),
            "width_factor": float(shared.choice(self.width_factor)),
            "dropout": float(shared.choice(self.dropout)),
        }
        if model in names.SCENE_MODELS:  # the alignment's own settings
            own = np.random.default_rng([search_seed, trial, 1])
            settings["align_weight"] = _log_uniform(own, self.align_weight)
            settings["align_temperature"] = float(own.choice(self.align_temperature))
        return settings


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    low, high = bounds
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


@dataclass(frozen=True)
class TuneConfig:
    model: str = names.PLE
    trials: int = 8  # the same for every model
    search_seed: int = 0
    trial_seeds: tuple[int, ...] = (1,)  # seeds per trial (their mean validation AUC ranks the trial)
    final_seeds: tuple[int, ...] = (1, 2, 3)  # the chosen configuration, for the report's Table 2
    final_ablations: tuple[str, ...] = ()  # LARR: also train these ablations at the chosen settings (Table 3)
    max_epochs: int = 3  # each trial early-stops on validation within it
    space: SearchSpace = field(default_factory=SearchSpace)
    train: CtrConfig = field(default_factory=CtrConfig)  # the base run every trial changes
    plot_dir: str = ""  # "" = a temporary folder (the PNG goes to MLflow)

    def __post_init__(self) -> None:
        if self.model not in names.ID_MODELS:
            raise ValueError(
                f"model must be one of {', '.join(names.ID_MODELS)} (P5 is not tuned), got {self.model!r}"
            )
        if self.trials < 1 or self.max_epochs < 1:
            raise ValueError(f"trials and max_epochs must be >= 1, got {self.trials} and {self.max_epochs}")
        if not self.trial_seeds or not self.final_seeds:
            raise ValueError("trial_seeds and final_seeds must not be empty")
        if self.final_ablations and self.model != names.LARR:
            raise ValueError(f"final_ablations apply to model larr only, got model {self.model}")
        unknown = [a for a in self.final_ablations if a not in names.CTR_ABLATIONS or a == FULL_METHOD]
        if unknown:
            raise ValueError(
                f"final_ablations: {unknown[0]!r} is not an ablation ({', '.join(names.CTR_ABLATIONS[1:])})"
            )

    def trial_config(
        self, settings: dict, trial: int, tune_run: str, ablation: str = FULL_METHOD
    ) -> CtrConfig:
        """The base run with one trial's settings (as a trial when `tune_run` is empty, else final,
        of `ablation`)."""
        factor = settings["width_factor"]

        def widths(layers: tuple[int, ...]) -> tuple[int, ...]:
            return tuple(max(4, round(width * factor)) for width in layers)

        base = self.train.network
        network = replace(
            base,
            embedding_dim=settings["embedding_dim"],
            dropout=settings["dropout"],
            hidden=widths(base.hidden),
            expert_hidden=widths(base.expert_hidden),
            tower_hidden=widths(base.tower_hidden),
            align_temperature=settings.get("align_temperature", base.align_temperature),
        )
        cfg = replace(
            self.train,
            model=self.model,
            network=network,
            learning_rate=settings["learning_rate"],
            align_weight=settings.get("align_weight", self.train.align_weight),
            epochs=self.max_epochs,
            max_steps=0,
        )
        # an explicit checkpoint_dir gets a folder per trial and one for the final runs: none may
        # resume from another's weights (the default folders are per config key already)
        folder = self.train.checkpoint_dir
        if tune_run:  # the chosen one: ordinary seed runs that read the test day
            final = str(Path(folder) / f"final-{ablation}") if folder else ""
            return replace(
                cfg, seeds=self.final_seeds, sweep="", tuned=tune_run, checkpoint_dir=final, ablation=ablation
            )
        return replace(
            cfg,
            seeds=self.trial_seeds,
            sweep=names.TUNE_SWEEP,
            evaluate_test=False,
            log_model=False,
            checkpoint_dir=str(Path(folder) / f"trial-{trial}") if folder else "",
        )


def run(spark, catalog, cfg: TuneConfig, log=print) -> dict:
    from training.common.tracking import active

    check_validation_split(spark, catalog, cfg.train.table)
    tracked = active()
    tune_run = _active_run_id() if tracked else "untracked"
    trials, drawn = [], {}
    for trial in range(cfg.trials):
        settings = cfg.space.draw(cfg.search_seed, trial, cfg.model)
        with _trial_run(cfg, trial, settings, tracked):
            summary = train_run(spark, catalog, cfg.trial_config(settings, trial, ""), log=log)
            figures = _trial_figures(summary)
            if tracked:
                import mlflow

                mlflow.log_metrics(figures)
        drawn[trial] = settings
        trials.append({"trial": trial, **settings, **figures})
        log(
            f"tune {cfg.model} trial {trial}: validation CTR AUC {figures['val_ctr_auc']:.4f} "
            f"(best step {figures['best_step']:.0f}) with "
            + ", ".join(f"{k} {_short(v)}" for k, v in settings.items())
        )
    best = max(trials, key=lambda t: (t["val_ctr_auc"], -t["trial"]))  # the first of equal scores
    settings = drawn[best["trial"]]
    log(
        f"tune {cfg.model}: trial {best['trial']} has the best validation CTR AUC ({best['val_ctr_auc']:.4f})"
    )
    final = train_run(spark, catalog, cfg.trial_config(settings, best["trial"], tune_run), log=log)
    plot = _plot(cfg, trials, best["trial"])
    figures = {
        "model": cfg.model,
        "trials": trials,
        "best_trial": best["trial"],
        "best_settings": settings,
        "best_val_ctr_auc": best["val_ctr_auc"],
        "tune_plot": str(plot),
    }
    for key in ("val_ctr_auc", "ctr_auc", "ctcvr_auc", "ctr_gauc", "logloss"):
        for name in (key, f"{key}_std"):
            if name in final:
                figures[f"final_{name}"] = final[name]
    figures["final_seed_runs"] = final.get("seed_runs", [])
    for ablation in cfg.final_ablations:  # Table 3 at the same settings as the complete model
        log(f"tune {cfg.model}: the chosen settings with ablation {ablation}")
        variant = train_run(
            spark, catalog, cfg.trial_config(settings, best["trial"], tune_run, ablation), log=log
        )
        figures[f"final_{ablation}_ctr_auc"] = variant.get("ctr_auc")
        figures[f"final_{ablation}_ctr_auc_std"] = variant.get("ctr_auc_std")
    return figures


def check_validation_split(spark, catalog, table: str) -> None:
    """Refuse, before any training, samples without a validation split (partition pruning: cheap)."""
    if catalog.read(spark, table).where("split = 'validation'").limit(1).count() == 0:
        raise TuneError(
            f"{table} has no validation split: run `larr etl samples --set validation_days=1` "
            "(tuning never reads the test day)"
        )


def _trial_figures(summary: dict) -> dict:
    """A trial's validation figures (mean over its seeds) and where its seeds stopped."""
    per_seed = summary["per_seed"]
    figures = {k: summary[k] for k in ("val_ctr_auc", "val_ctr_auc_std", "val_logloss") if k in summary}
    figures["best_step"] = float(np.mean([s.get("best_step", s["train_steps"]) for s in per_seed]))
    figures["train_steps"] = float(np.mean([s["train_steps"] for s in per_seed]))
    return figures


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _active_run_id() -> str:
    import mlflow

    return mlflow.active_run().info.run_id


def _trial_run(cfg: TuneConfig, trial: int, settings: dict, tracked: bool):
    """A child MLflow run per trial (its seed runs nest under it), or nothing outside `larr`."""
    import contextlib

    if not tracked:
        return contextlib.nullcontext()
    import mlflow

    run = mlflow.start_run(run_name=f"tune-{cfg.model}-trial-{trial}", nested=True)
    mlflow.set_tags({names.TUNE_TAG: cfg.model, names.TRIAL_TAG: str(trial)})
    mlflow.log_params({f"trial.{k}": v for k, v in settings.items()})
    return run


def _plot(cfg: TuneConfig, trials: list[dict], best: int) -> Path:
    """Validation CTR AUC per trial against its learning rate, the chosen trial marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(cfg.plot_dir or tempfile.mkdtemp(prefix="larr-tune-"))
    folder.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    lrs = [t["learning_rate"] for t in trials]
    aucs = [t["val_ctr_auc"] for t in trials]
    ax.scatter(lrs, aucs, label="trials")
    ax.scatter([lrs[best]], [aucs[best]], marker="*", s=200, label=f"chosen: trial {best}")
    for t in trials:
        ax.annotate(str(t["trial"]), (t["learning_rate"], t["val_ctr_auc"]), fontsize=7)
    ax.set_xscale("log")
    ax.set(xlabel="learning rate", ylabel="validation CTR AUC", title=f"larr tune --model {cfg.model}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = folder / f"tune_{cfg.model}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
