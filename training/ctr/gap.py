"""`larr gap`: where the gap between the models and the Bayes ceiling goes (synthetic worlds).

    larr gap [--set model=ple] [--set oracles=[semantic_logit,collaborative_score]]

The world's truth table holds what generated each click and no model sees: the semantic part of
the click logit and the collaborative score (the user and shop latent factors). `larr gap` joins
them to the CTR samples (`oracle_table`: samples.ctr plus those columns, the same rows and splits)
and trains, at one set of settings (`train`) and on the same seeds:
- `model` (the best ID model: PLE by default), the baseline;
- `model` with each oracle column as one more numeric input, then with all of them;
- `model` without the dataset's request-item features (what distance and open-now add);
- every other model of `compare` (all the ID models by default: LR, Wide&Deep, DeepFM, LARR, LARR+).
A re-run on unchanged samples and truth keeps the oracle table's version (`unchanged_oracles`), so a
variant trained before at the same settings resumes from its finished checkpoint: only evaluated.
Each variant is a child MLflow run (tag `larr.gap`) whose seed runs carry `larr.sweep = gap`, so
`larr report` keeps them out of Tables 2 and 3. The result is a table and a plot (test CTR AUC
against the Bayes AUC of the same test rows) and each compared model's **semantic capture**:
(model - baseline) / (baseline with the true semantic logit - baseline), per seed, as mean and
standard deviation: how much of what the text could give the model actually gets. The same ratio
against every oracle (`oracle_captures`): with a world generated with `world.semantic_terms`, the
semantic logit's terms are oracles too, and the table says which part of it a model's gain matches.

Run it on worlds of several sizes (`larr generate --set world.impressions_per_day=...`) with one
MLflow store (`MLFLOW_TRACKING_URI`) to see which part of the gap is data: each run records its
size (train rows) and figures on its MLflow run, and tabulates and plots every size the store
holds for the same baseline model, the newest run per size (`gap_by_size.md`, `gap_by_size.png`).
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from training.ctr import names
from training.ctr.train import CtrConfig
from training.ctr.train import run as train_run

SEMANTIC = "semantic_logit"  # the oracle the semantic capture divides by
GAP_JOB = "gap"  # its command's name: the run manifest's job
KEY = "event_id"  # the truth table's key: a sample of a logged impression has sample_id = event_id


class GapError(ValueError):
    pass


@dataclass(frozen=True)
class GapConfig:
    model: str = names.PLE  # the ID model the oracles are added to (the best ID model)
    # trained beside it at the same settings, each with its semantic capture (`model` itself skipped)
    compare: tuple[str, ...] = names.ID_MODELS
    oracles: tuple[str, ...] = (SEMANTIC, "collaborative_score")  # truth columns, alone then together
    request_item: bool = True  # also `model` without the schema's request-item features
    samples_table: str = "samples.ctr"
    truth_table: str = "truth.impressions"
    oracle_table: str = "samples.ctr_oracle"  # samples_table plus the oracle columns
    seeds: tuple[int, ...] = (1, 2, 3)
    train: CtrConfig = field(default_factory=CtrConfig)  # the settings of every variant
    plot_dir: str = ""  # "" = a temporary folder (the PNG and the table go to MLflow)

    def __post_init__(self) -> None:
        for model in (self.model, *self.compare):
            if model not in names.ID_MODELS:
                raise ValueError(f"model {model!r} is not an ID model ({', '.join(names.ID_MODELS)})")
        if len(set(self.oracles)) != len(self.oracles):
            raise ValueError(f"oracles names a column twice: {list(self.oracles)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and non-empty, got {list(self.seeds)}")

    @property
    def compared(self) -> tuple[str, ...]:
        return tuple(m for m in self.compare if m != self.model)

    def variants(self, has_request_item: bool) -> list[tuple[str, CtrConfig]]:
        """(label, training config) of every run, the baseline first."""
        base = replace(
            self.train,
            model=self.model,
            table=self.oracle_table,
            seeds=self.seeds,
            sweep=names.GAP_SWEEP,
            tuned="",
            log_model=False,
        )

        def with_encoding(**changes) -> CtrConfig:
            return replace(base, encoding=replace(base.encoding, **changes))

        runs = [(self.model, base)]
        runs += [(f"{self.model} + {o}", with_encoding(extra_numeric=(o,))) for o in self.oracles]
        if len(self.oracles) > 1:
            runs.append((f"{self.model} + all oracles", with_encoding(extra_numeric=self.oracles)))
        if self.request_item and has_request_item:
            runs.append((f"{self.model} without request-item", with_encoding(request_item=False)))
        runs += [(m, replace(base, model=m)) for m in self.compared]
        folder = self.train.checkpoint_dir  # an explicit folder gets one per variant
        return [
            (label, replace(cfg, checkpoint_dir=str(Path(folder) / _name(label)) if folder else ""))
            for label, cfg in runs
        ]


def _name(label: str) -> str:
    """A variant's label as a folder, run and MLflow metric name ('ple + semantic_logit' ->
    'ple_plus_semantic_logit')."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", label.replace(" + ", "_plus_"))


def oracle_samples(spark, catalog, cfg: GapConfig, log=print) -> int:
    """Write `oracle_table`: every sample with its oracle columns from the truth table (one line
    when a column is missing or a sample has no truth row). Returns its version."""
    from pyspark.sql import functions as F

    if catalog.version(spark, cfg.truth_table) is None:
        raise GapError(
            f"larr gap needs the synthetic world's {cfg.truth_table}, which this lakehouse does not have "
            "(your own logs have no truth: the gap to Bayes is a synthetic-world study)"
        )
    truth = catalog.read(spark, cfg.truth_table)
    missing = [c for c in (KEY, *cfg.oracles) if c not in truth.columns]
    if missing:
        raise GapError(
            f"{cfg.truth_table} has no column {missing[0]!r} (it has {', '.join(truth.columns)}); "
            "a world generated before the column existed needs `larr generate` again"
        )
    samples = catalog.read(spark, cfg.samples_table)
    clash = [c for c in cfg.oracles if c in samples.columns]
    if clash:
        raise GapError(f"{cfg.samples_table} already has a column {clash[0]!r}: it cannot be an oracle")
    reused = unchanged_oracles(spark, catalog, cfg, samples.columns)
    if reused is not None:
        log(
            f"gap: {cfg.oracle_table} version {reused} is up to date ({cfg.samples_table}, {cfg.truth_table} "
            "and the oracle columns unchanged since the last `larr gap`): its finished variants are read "
            "back from their checkpoints, not retrained"
        )
        return reused
    oracle = truth.select(F.col(KEY).alias("sample_id"), *cfg.oracles, F.lit(True).alias("_in_truth"))
    joined = samples.join(oracle, "sample_id", "left")
    without = joined.where(F.col("_in_truth").isNull()).count()
    if without:
        raise GapError(
            f"{without} samples of {cfg.samples_table} have no row in {cfg.truth_table}: oracles need "
            "samples of logged impressions (`larr etl samples --set mode=impressions`)"
        )
    version = catalog.write(joined.drop("_in_truth"), cfg.oracle_table, partition_by=["split", "dt"])
    log(f"gap: {cfg.oracle_table} version {version}: {cfg.samples_table} with {', '.join(cfg.oracles)}")
    return version


def unchanged_oracles(spark, catalog, cfg: GapConfig, sample_columns: list[str]) -> int | None:
    """The oracle table's version when the last completed `larr gap` wrote it, its outputs and the
    inputs it read (samples, truth) are still current and it has exactly these oracle columns; else
    None. Rewriting it would give it a new version, a new data key and so fresh checkpoints: every
    variant would retrain (the baseline and its oracles are most of a run's time)."""
    from core import manifest

    last = manifest.last_run(spark, catalog, GAP_JOB)
    version = None if last is None else last.outputs.get(cfg.oracle_table)
    if version is None or not manifest.still_current(spark, catalog, last):
        return None
    columns = catalog.read(spark, cfg.oracle_table, version=version).columns
    return version if sorted(columns) == sorted({*sample_columns, *cfg.oracles}) else None


def run(spark, catalog, cfg: GapConfig, log=print) -> dict:
    from core.schema_table import read_schema
    from training.common.tracking import active

    has_request_item = bool(read_schema(spark, catalog).request_item)
    oracle_samples(spark, catalog, cfg, log=log)
    tracked = active()
    results = []
    for label, train in cfg.variants(has_request_item):
        log(f"gap: training {label}")
        with _variant_run(label, tracked):
            summary = train_run(spark, catalog, train, log=log)
            if tracked:
                import mlflow

                mlflow.log_metrics({k: summary[k] for k in ("ctr_auc", "ctr_auc_std") if k in summary})
        results.append(_variant(label, summary))
    baseline = results[0]
    bayes = baseline["bayes_auc_ctr"]
    for row in results:
        row["share_of_gap_closed"] = _share(row["ctr_auc"], baseline["ctr_auc"], bayes)
    captures = oracle_captures(results, cfg)  # the semantic capture is the one with SEMANTIC
    capture = {model: by_oracle[SEMANTIC] for model, by_oracle in captures.items() if SEMANTIC in by_oracle}
    folder = Path(cfg.plot_dir or tempfile.mkdtemp(prefix="larr-gap-"))
    folder.mkdir(parents=True, exist_ok=True)
    table, plot = write_table(folder, results, bayes, captures), plot_gap(folder, results, bayes)
    this_size = {"train_rows": baseline["train_rows"], "bayes_auc_ctr": bayes, "variants": results}
    sizes = [*(earlier_sizes(cfg.model) if tracked else []), this_size]
    sizes = sorted({s["train_rows"]: s for s in sizes}.values(), key=lambda s: s["train_rows"])
    by_size = write_size_table(folder, sizes), plot_sizes(folder, sizes)
    if tracked:
        import mlflow

        for path in (table, plot, *by_size):
            mlflow.log_artifact(str(path))
        log_size(cfg.model, this_size, capture)
    for model, value in capture.items():
        if value:
            log(
                f"gap: semantic capture of {model}: {value['mean']:.3f} ± {value['std']:.3f} "
                f"(over seeds {', '.join(str(s) for s in value['seeds'])})"
            )
    return {
        "model": cfg.model,
        "train_rows": baseline["train_rows"],
        "bayes_auc_ctr": bayes,
        "variants": results,
        "semantic_capture": capture,
        "oracle_captures": captures,
        "table": str(table),
        "plot": str(plot),
        "sizes": [{"train_rows": s["train_rows"], "bayes_auc_ctr": s["bayes_auc_ctr"]} for s in sizes],
        "size_table": str(by_size[0]),
        "size_plot": str(by_size[1]),
    }


def _variant(label: str, summary: dict) -> dict:
    per_seed = {int(s["seed"]): s["ctr_auc"] for s in summary["per_seed"] if "ctr_auc" in s}
    return {
        "label": label,
        "ctr_auc": summary.get("ctr_auc"),
        "ctr_auc_std": summary.get("ctr_auc_std"),
        "per_seed": per_seed,
        "bayes_auc_ctr": summary.get("bayes_auc_ctr"),
        "train_rows": summary.get("train_rows"),
    }


def _by_label(results: list[dict], label: str) -> dict:
    return next(r for r in results if r["label"] == label)


def _share(auc: float | None, baseline: float | None, bayes: float | None) -> float | None:
    """How much of the baseline's gap to Bayes a variant closes (negative: it opens it)."""
    if auc is None or baseline is None or bayes is None or bayes <= baseline:
        return None
    return round((auc - baseline) / (bayes - baseline), 4)


def capture_of(model: dict, baseline: dict, with_oracle: dict) -> dict | None:
    """(model - baseline) / (baseline with the oracle - baseline) per seed the three share (the
    semantic capture when the oracle is the true semantic logit); None when no seed's oracle beats
    the baseline (nothing to capture)."""
    values = {}
    for seed, auc in model["per_seed"].items():
        base, oracle = baseline["per_seed"].get(seed), with_oracle["per_seed"].get(seed)
        if base is not None and oracle is not None and oracle > base:
            values[seed] = (auc - base) / (oracle - base)
    if not values:
        return None
    seeds = sorted(values)
    numbers = np.array([values[s] for s in seeds])
    return {
        "mean": round(float(numbers.mean()), 4),
        "std": round(float(numbers.std(ddof=1)), 4) if len(numbers) > 1 else 0.0,
        "per_seed": {s: round(values[s], 4) for s in seeds},
        "seeds": seeds,
    }


def oracle_captures(results: list[dict], cfg: GapConfig) -> dict[str, dict[str, dict | None]]:
    """model -> oracle -> `capture_of` for every compared model and every single oracle (the
    semantic capture is its SEMANTIC entry). With a world's semantic terms as oracles
    (`world.semantic_terms`) it says which part of the semantic effect a model's gain matches."""
    baseline = results[0]
    oracles = {o: _by_label(results, f"{cfg.model} + {o}") for o in cfg.oracles}
    return {
        model: {o: capture_of(_by_label(results, model), baseline, row) for o, row in oracles.items()}
        for model in cfg.compared
    }


def write_table(folder: Path, results: list[dict], bayes: float | None, captures: dict) -> Path:
    lines = [
        "| variant | test CTR AUC | gap to Bayes | share of the baseline's gap closed |",
        "|---|---|---|---|",
        f"| Bayes (true p_click) | {_number(bayes)} | 0 | |",
    ]
    for row in results:
        gap = None if bayes is None or row["ctr_auc"] is None else bayes - row["ctr_auc"]
        lines.append(
            f"| {row['label']} | {_number(row['ctr_auc'])} ± {_number(row['ctr_auc_std'])} | "
            f"{_number(gap)} | {_number(row['share_of_gap_closed'])} |"
        )
    lines.append("")
    lines += [
        f"Semantic capture of {model}: {c['mean']:.3f} ± {c['std']:.3f} over seeds {c['seeds']}"
        if c
        else f"Semantic capture of {model}: none (the semantic oracle did not beat the baseline)"
        for model, c in (
            (m, by_oracle[SEMANTIC]) for m, by_oracle in captures.items() if SEMANTIC in by_oracle
        )
    ]
    oracles = list(next(iter(captures.values()), {}))
    if oracles:
        lines += [
            "",
            "Each model's gain over the baseline as a share of each oracle's gain (mean ± std over seeds):",
            "",
            "| model | " + " | ".join(oracles) + " |",
            "|---|" + "---|" * len(oracles),
        ]
        lines += [
            f"| {model} | " + " | ".join(_capture_cell(by_oracle[o]) for o in oracles) + " |"
            for model, by_oracle in captures.items()
        ]
    path = folder / "gap.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _capture_cell(capture: dict | None) -> str:
    return "no gain to share" if capture is None else f"{capture['mean']:.3f} ± {capture['std']:.3f}"


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def plot_gap(folder: Path, results: list[dict], bayes: float | None) -> Path:
    """Test CTR AUC of every variant (seed spread as error bars) against the Bayes AUC."""
    from training.common.plots import plot_auc_bars

    series = "test CTR AUC"
    nan = float("nan")
    path = plot_auc_bars(
        "larr gap: the models, the oracles, Bayes",
        [r["label"] for r in results],
        {series: [nan if r["ctr_auc"] is None else r["ctr_auc"] for r in results]},
        {series: [nan if r["ctr_auc_std"] is None else r["ctr_auc_std"] for r in results]},
        {series: bayes},
        folder / "gap.png",
    )
    return Path(path)


# -- data sizes: every `larr gap` run of the same baseline in this MLflow experiment ----------------
def log_size(model: str, size: dict, capture: dict) -> None:
    """The command run's record of one data size: what `earlier_sizes` reads back."""
    import mlflow

    mlflow.set_tags(
        {
            names.GAP_MODEL_TAG: model,
            names.GAP_VARIANTS_TAG: json.dumps([v["label"] for v in size["variants"]]),
        }
    )
    metrics = {"train_rows": float(size["train_rows"])}
    if size["bayes_auc_ctr"] is not None:
        metrics["bayes_auc_ctr"] = size["bayes_auc_ctr"]
    for variant in size["variants"]:
        for key in ("ctr_auc", "ctr_auc_std"):
            if variant[key] is not None:
                metrics[f"gap.{_name(variant['label'])}.{key}"] = variant[key]
    for compared, value in capture.items():
        if value:
            metrics[f"semantic_capture_{compared}"] = value["mean"]
            metrics[f"semantic_capture_{compared}_std"] = value["std"]
    mlflow.log_metrics(metrics)


def earlier_sizes(model: str) -> list[dict]:
    """The finished `larr gap` runs of `model` in the active experiment, newest first per train rows."""
    import mlflow

    active = mlflow.active_run()
    client = mlflow.MlflowClient()
    runs = client.search_runs(
        [active.info.experiment_id],
        f"tags.`{names.GAP_MODEL_TAG}` = '{model}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
    )
    sizes: dict[int, dict] = {}
    for found in runs:
        metrics = found.data.metrics
        rows = int(metrics.get("train_rows", 0))
        if rows in sizes or not rows:
            continue
        variants = [
            {
                "label": label,
                "ctr_auc": metrics.get(f"gap.{_name(label)}.ctr_auc"),
                "ctr_auc_std": metrics.get(f"gap.{_name(label)}.ctr_auc_std"),
            }
            for label in json.loads(found.data.tags.get(names.GAP_VARIANTS_TAG, "[]"))
        ]
        sizes[rows] = {
            "train_rows": rows,
            "bayes_auc_ctr": metrics.get("bayes_auc_ctr"),
            "variants": variants,
        }
    return list(sizes.values())


def write_size_table(folder: Path, sizes: list[dict]) -> Path:
    """Test CTR AUC (± std over seeds) of every variant at every data size, Bayes first."""
    labels = list(dict.fromkeys(v["label"] for s in sizes for v in s["variants"]))
    header = "| variant | " + " | ".join(f"{s['train_rows']:,} train rows" for s in sizes) + " |"
    lines = [header, "|---|" + "---|" * len(sizes)]
    lines.append("| Bayes (true p_click) | " + " | ".join(_number(s["bayes_auc_ctr"]) for s in sizes) + " |")
    for label in labels:
        cells = []
        for size in sizes:
            row = next((v for v in size["variants"] if v["label"] == label), None)
            auc = None if row is None else row["ctr_auc"]
            cells.append("" if auc is None else f"{auc:.4f} ± {_number(row['ctr_auc_std'])}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    path = folder / "gap_by_size.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def plot_sizes(folder: Path, sizes: list[dict]) -> Path:
    """Test CTR AUC of every variant against the train rows, with the Bayes AUC of each size."""
    from training.common.plots import plot_curves

    curves: dict[str, list[tuple[float, float, float]]] = {}
    for size in sizes:
        for v in size["variants"]:
            if v["ctr_auc"] is not None:
                curves.setdefault(v["label"], []).append(
                    (size["train_rows"], v["ctr_auc"], v["ctr_auc_std"] or 0.0)
                )
    ceiling = [(s["train_rows"], s["bayes_auc_ctr"]) for s in sizes if s["bayes_auc_ctr"] is not None]
    path = plot_curves(
        "larr gap by data size",
        "train rows",
        "test CTR AUC (mean ± std over seeds)",
        curves,
        ceiling,
        folder / "gap_by_size.png",
        dotted=lambda label: "+" in label or "without" in label,
    )
    return Path(path)


def _variant_run(label: str, tracked: bool):
    """A child MLflow run per variant (its seed runs nest under it), or nothing outside `larr`."""
    import contextlib

    if not tracked:
        return contextlib.nullcontext()
    import mlflow

    run = mlflow.start_run(run_name=f"gap-{_name(label)}", nested=True)
    mlflow.set_tag(names.GAP_TAG, label)
    return run
