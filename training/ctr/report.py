"""`larr report`: the paper's Table 2 (models) and Table 3 (ablations), and the Figure 4 sweeps,
as mean ± std over seeds, from the CTR runs in MLflow (no Spark).

Inside an MLflow run (`larr report` opens one in experiment larr-report) the run gets the markdown
report, each table as `tables/<name>.md`, the plots (AUC per model against the Bayes ceiling, the
sweeps) and every cell as a metric (`table2/<model>/<metric>`, `table3/<variant>/<metric>`, with
`_std` and `seeds`), so MLflow's UI shows the report without the file.

Each `larr train ctr` seed is a nested run of experiment larr-ctr tagged larr.ctr_model,
larr.ablation, larr.seed and larr.sweep. A cell is the mean ± sample std (ddof 1) over seeds of
the newest finished run per seed, so a re-run seed replaces the old one instead of counting twice.
Sweep runs (non-empty larr.sweep) stay out of the tables and make the sweep section.
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from core.catalog import TableCatalog, is_remote
from core.tracking import FULL_METHOD, NO_CPT, NO_FT, configure, experiment_name
from training.ctr.names import (
    ABLATION_TAG,
    DEEPFM,
    LARR,
    LARR_PLUS,
    LR,
    MODEL_TAG,
    NEG_RATIO_SWEEP,
    NO_AL,
    P5,
    PLE,
    SAMPLES_TAG,
    SEED_TAG,
    SWEEP_TAG,
    TEMPERATURE_SWEEP,
    TUNED_TAG,
    WIDE_DEEP,
)
from training.ctr.report_studies import study_sections

# (key, label) of Table 2, every model with ablation "none"
MODELS = (
    (LR, "LR"),  # the linear baseline every deep model must beat
    (WIDE_DEEP, "Wide&Deep"),
    (DEEPFM, "DeepFM"),
    (P5, "P5-style"),
    (PLE, "PLE"),
    (LARR, "LARR"),
    (LARR_PLUS, "LARR+ (text vectors, beyond the paper)"),
)
# (key, label, model, ablation) of Table 3
ABLATIONS = (
    ("ple_only", "PLE only", PLE, FULL_METHOD),
    (NO_CPT, "no CPT", LARR, NO_CPT),
    (NO_FT, "no contrastive FT", LARR, NO_FT),
    (NO_AL, "no alignment", LARR, NO_AL),
    ("complete", "complete LARR", LARR, FULL_METHOD),
)
TABLE2_METRICS = (
    ("val_ctr_auc", "validation CTR AUC"),
    ("ctr_auc", "CTR AUC"),
    ("ctcvr_auc", "CTCVR AUC"),
    ("ctr_gauc", "CTR GAUC"),
    ("ctcvr_gauc", "CTCVR GAUC"),
    ("logloss", "logloss"),
    ("ctr_gap_to_bayes", "CTR AUC − Bayes"),
    ("ctcvr_gap_to_bayes", "CTCVR AUC − Bayes"),
)
AUC_METRICS = (("ctr_auc", "CTR AUC"), ("ctcvr_auc", "CTCVR AUC"))
RUN_METRICS = (
    "val_ctr_auc",
    "val_ctcvr_auc",
    "ctr_auc",
    "ctcvr_auc",
    "ctr_gauc",
    "ctcvr_gauc",
    "logloss",
    "bayes_auc_ctr",
    "bayes_auc_ctcvr",
)
# sweep tag -> (param, axis label, log x): the sweeps of LARR's alignment (Figure 4)
SWEEPS = {
    TEMPERATURE_SWEEP: ("align_temperature", "alignment temperature", True),
    NEG_RATIO_SWEEP: ("align_negatives_ratio", "alignment negatives ratio", False),
}
SWEEP_MODEL = LARR


class ReportError(ValueError):
    pass


@dataclass(frozen=True)
class ReportConfig:
    min_seeds: int = 3  # fewer seeds: still shown, flagged and listed under short_of_seeds
    output: str = ""  # markdown path; default <lakehouse>/_reports/ctr_report.md

    def __post_init__(self) -> None:
        if self.min_seeds < 1:
            raise ReportError(f"min_seeds must be at least 1, got {self.min_seeds}")


# -- runs --------------------------------------------------------------------------------------------
def _param(params: dict[str, str], name: str) -> float:
    """A run's param by name, or as the last part of a flattened `section.name` key."""
    value = params.get(name)
    if value is None:
        value = next((v for k, v in params.items() if k.endswith(f".{name}")), None)
    try:
        return float(value) if value is not None else math.nan
    except ValueError:
        return math.nan


def load_runs(experiment: str | None = None) -> pd.DataFrame:
    """One row per finished seed run (tags larr.ctr_model and larr.seed) of the configured store:
    run_id, start_time, model, ablation, seed, sweep, samples_version, the metrics and the sweep
    params. Empty (with those columns) when the experiment does not exist."""
    import mlflow

    columns = ["run_id", "start_time", "model", "ablation", "seed", "sweep", "tuned", "samples_version"]
    columns += [*RUN_METRICS, *(param for param, _, _ in SWEEPS.values())]
    client = mlflow.MlflowClient()
    found = client.get_experiment_by_name(experiment or experiment_name("ctr"))
    if found is None:
        return pd.DataFrame(columns=columns)
    runs, token = [], None
    while True:  # one page of runs at a time
        page = client.search_runs(
            [found.experiment_id], "attributes.status = 'FINISHED'", max_results=1000, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            break
    records = [
        {
            "run_id": r.info.run_id,
            "start_time": r.info.start_time,
            "model": r.data.tags.get(MODEL_TAG),
            "ablation": r.data.tags.get(ABLATION_TAG) or FULL_METHOD,
            "seed": r.data.tags.get(SEED_TAG),
            "sweep": r.data.tags.get(SWEEP_TAG) or "",
            "tuned": r.data.tags.get(TUNED_TAG) or "",
            "samples_version": r.data.tags.get(SAMPLES_TAG),
            **{m: r.data.metrics.get(m, math.nan) for m in RUN_METRICS},
            **{param: _param(r.data.params, param) for param, _, _ in SWEEPS.values()},
        }
        for r in runs
    ]
    frame = pd.DataFrame.from_records(records, columns=columns)
    return frame[frame["model"].notna() & frame["seed"].notna()].reset_index(drop=True)


def newest_per_seed(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The newest run of each seed of each `keys` group (a re-run seed replaces the old run)."""
    ordered = runs.sort_values(["start_time", "run_id"], ascending=False)
    return ordered.drop_duplicates([*keys, "seed"], keep="first").reset_index(drop=True)


def summarise(runs: pd.DataFrame, keys: list[str], metrics: list[str]) -> pd.DataFrame:
    """Per group: seeds, and <metric>_mean / <metric>_std (sample std, ddof 1) of each metric."""
    grouped = runs.groupby(keys, sort=False)
    summary = grouped[metrics].agg(["mean", "std"])
    summary.columns = [f"{metric}_{stat}" for metric, stat in summary.columns]
    summary.insert(0, "seeds", grouped.size())
    return summary


def _table_runs(runs: pd.DataFrame) -> pd.DataFrame:
    table = newest_per_seed(runs[runs["sweep"] == ""], ["model", "ablation"])
    table["ctr_gap_to_bayes"] = table["ctr_auc"] - table["bayes_auc_ctr"]
    table["ctcvr_gap_to_bayes"] = table["ctcvr_auc"] - table["bayes_auc_ctcvr"]
    return table


# -- tables --------------------------------------------------------------------------------------------
def fmt(mean: float, std: float) -> str:
    """'0.7983 ± 0.0012'; the std of one seed is undefined ('n/a'); no value at all is 'n/a'."""
    if mean is None or math.isnan(mean):
        return "n/a"
    return f"{mean:.4f} ± {'n/a' if std is None or math.isnan(std) else f'{std:.4f}'}"


def _cell_numbers(summary: pd.DataFrame, key: tuple, metrics: list[str]) -> dict | None:
    if key not in summary.index:
        return None
    row = summary.loc[key]
    numbers: dict = {"seeds": int(row["seeds"])}
    for metric in metrics:
        numbers[metric] = _number(row[f"{metric}_mean"])
        numbers[f"{metric}_std"] = _number(row[f"{metric}_std"])
    return numbers


def _number(value) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def _row(label: str, numbers: dict | None, metrics: list[str], min_seeds: int) -> list[str]:
    if numbers is None:
        return [label, *["not run"] * len(metrics), "0"]
    seeds = numbers["seeds"]
    flagged = f"{label} ({seeds} seed{'s' if seeds != 1 else ''})" if seeds < min_seeds else label
    cells = [fmt(*(math.nan if v is None else v for v in (numbers[m], numbers[f"{m}_std"]))) for m in metrics]
    return [flagged, *cells, str(seeds)]


def table2(runs: pd.DataFrame, min_seeds: int) -> tuple[dict, str]:
    """Table 2: every model (ablation none) plus the Bayes-optimal AUCs of the same evaluation rows."""
    metrics = [m for m, _ in TABLE2_METRICS]
    table = _table_runs(runs)
    table = table[table["ablation"] == FULL_METHOD]
    summary = summarise(table, ["model"], metrics)
    numbers = {key: _cell_numbers(summary, key, metrics) for key, _ in MODELS}
    # a model whose every run is a `larr tune` choice says so: its settings came from validation
    tuned = {m for m, group in table.groupby("model") if (group["tuned"].fillna("") != "").all()}
    for key in tuned & {k for k, v in numbers.items() if v is not None}:
        numbers[key]["tuned"] = True
    rows = [
        _row(f"{label} (tuned)" if key in tuned else label, numbers[key], metrics, min_seeds)
        for key, label in MODELS
    ]
    in_table = table[table["model"].isin([key for key, _ in MODELS])]
    bayes = {
        "runs": int(in_table["bayes_auc_ctr"].notna().sum()),
        "bayes_auc_ctr": _number(in_table["bayes_auc_ctr"].mean()),
        "bayes_auc_ctr_std": _number(in_table["bayes_auc_ctr"].std()),
        "bayes_auc_ctcvr": _number(in_table["bayes_auc_ctcvr"].mean()),
        "bayes_auc_ctcvr_std": _number(in_table["bayes_auc_ctcvr"].std()),
    }
    bayes_cells = {  # the test split's true probabilities: under the test AUC columns
        metric: fmt(*(math.nan if v is None else v for v in (bayes[key], bayes[f"{key}_std"])))
        for metric, key in (("ctr_auc", "bayes_auc_ctr"), ("ctcvr_auc", "bayes_auc_ctcvr"))
    }
    rows.append(["Bayes-optimal (true probabilities)", *(bayes_cells.get(m, "—") for m in metrics), "—"])
    numbers["bayes"] = bayes
    header = ["model", *(label for _, label in TABLE2_METRICS), "seeds"]
    return numbers, _markdown(header, rows)


def table3(runs: pd.DataFrame, min_seeds: int) -> tuple[dict, str]:
    """Table 3: the ablations of LARR (CTR AUC / CTCVR AUC)."""
    metrics = [m for m, _ in AUC_METRICS]
    summary = summarise(_table_runs(runs), ["model", "ablation"], metrics)
    numbers = {
        key: _cell_numbers(summary, (model, ablation), metrics) for key, _, model, ablation in ABLATIONS
    }
    rows = [_row(label, numbers[key], metrics, min_seeds) for key, label, _, _ in ABLATIONS]
    return numbers, _markdown(["variant", *(label for _, label in AUC_METRICS), "seeds"], rows)


def sweep_table(runs: pd.DataFrame, sweep: str) -> pd.DataFrame:
    """One sweep of LARR's alignment: per value of its param, seeds and mean / std of both AUCs
    (newest run per seed and value), sorted by the value. Runs without the param are left out."""
    param = SWEEPS[sweep][0]
    chosen = runs[(runs["sweep"] == sweep) & (runs["model"] == SWEEP_MODEL) & runs[param].notna()]
    chosen = newest_per_seed(chosen, [param])
    summary = summarise(chosen, [param], [m for m, _ in AUC_METRICS]).sort_index()
    return summary.rename_axis("value").reset_index()


def sweep_section(sweep: str, table: pd.DataFrame, folder: Path) -> tuple[str, str]:
    from training.common.plots import plot_sweep

    _, axis, log_x = SWEEPS[sweep]
    rows = [
        [
            f"{row['value']:g}",
            *(fmt(row[f"{m}_mean"], row[f"{m}_std"]) for m, _ in AUC_METRICS),
            str(int(row["seeds"])),
        ]
        for _, row in table.iterrows()  # one row per swept value
    ]
    markdown = f"### AUC vs {axis}\n\n" + _markdown(
        [axis, *(label for _, label in AUC_METRICS), "seeds"], rows
    )
    plot = plot_sweep(
        f"LARR: AUC vs {axis}",
        axis,
        table["value"].tolist(),
        {label: table[f"{m}_mean"].tolist() for m, label in AUC_METRICS},
        {label: table[f"{m}_std"].tolist() for m, label in AUC_METRICS},
        folder / f"ctr_sweep_{sweep}.png",
        log_x=log_x and bool((table["value"] > 0).all()),
    )
    return markdown + f"\n\n![AUC vs {axis}]({Path(plot).name})", plot


def models_plot_file(numbers: dict, folder: Path) -> str | None:
    """Table 2's AUCs per model that ran (mean ± std) against the Bayes-optimal AUCs; None when no
    model ran."""
    from training.common.plots import plot_auc_bars

    ran = [(key, label) for key, label in MODELS if numbers[key] is not None]
    if not ran:
        return None

    def values(metric: str) -> list[float]:
        return [math.nan if numbers[key][metric] is None else numbers[key][metric] for key, _ in ran]

    return plot_auc_bars(
        "AUC per model (mean ± std over seeds)",
        [label for _, label in ran],
        {label: values(m) for m, label in AUC_METRICS},
        {label: values(f"{m}_std") for m, label in AUC_METRICS},
        {label: numbers["bayes"][f"bayes_auc_{m.removesuffix('_auc')}"] for m, label in AUC_METRICS},
        folder / "ctr_auc_models.png",
    )


def cell_metrics(table2_numbers: dict, table3_numbers: dict) -> dict[str, float]:
    """Every cell of both tables as an MLflow metric: `table2/<model>/<metric>` (and `_std`,
    `seeds`), `table2/bayes/...`, `table3/<variant>/...`; rows not run and empty cells left out."""
    out = {}
    for table, numbers in (("table2", table2_numbers), ("table3", table3_numbers)):
        for row, cells in numbers.items():
            for name, value in (cells or {}).items():
                if value is not None and math.isfinite(value):
                    out[f"{table}/{row}/{name}"] = float(value)
    return out


# -- the job -------------------------------------------------------------------------------------------
def _output_path(catalog: TableCatalog, cfg: ReportConfig, log) -> Path:
    if cfg.output:
        return Path(cfg.output)
    if is_remote(catalog.root):
        folder = Path(tempfile.mkdtemp(prefix="larr-report-"))
        log(f"lakehouse {catalog.root} is remote: the report is written to {folder} and logged to MLflow")
        return folder / "ctr_report.md"
    return Path(catalog.root) / "_reports" / "ctr_report.md"


def short_of_seeds(table2_numbers: dict, table3_numbers: dict, min_seeds: int) -> list[str]:
    """`model/ablation` of every table row that ran with fewer than min_seeds seeds."""
    cells = {f"{key}/none": table2_numbers[key] for key, _ in MODELS}
    cells.update({f"{model}/{ablation}": table3_numbers[key] for key, _, model, ablation in ABLATIONS})
    return sorted(name for name, numbers in cells.items() if numbers and numbers["seeds"] < min_seeds)


def run(spark, catalog: TableCatalog, cfg: ReportConfig, log=print) -> dict:
    """Write the markdown report (and its plots beside it), log them, the tables and the cells to
    the active MLflow run, print the tables and return their numbers."""
    import mlflow

    from training.common.tracking import active

    uri = configure(catalog.root)
    runs = load_runs()
    path = _output_path(catalog, cfg, log)
    path.parent.mkdir(parents=True, exist_ok=True)
    if runs.empty:
        log(
            f"no finished seed runs in experiment {experiment_name('ctr')} of {uri}: run `larr train ctr` first"
        )
    numbers2, markdown2 = table2(runs, cfg.min_seeds)
    numbers3, markdown3 = table3(runs, cfg.min_seeds)
    short = short_of_seeds(numbers2, numbers3, cfg.min_seeds)
    figures: dict = {}
    tables = {"table2": markdown2, "table3": markdown3}
    models_plot = models_plot_file(numbers2, path.parent)
    if models_plot:
        figures["models_plot"] = models_plot
    versions = sorted({str(v) for v in _table_runs(runs)["samples_version"].dropna()})
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    sections = [
        "# LARR CTR report",
        f"{len(runs)} finished seed runs of experiment `{experiment_name('ctr')}` ({uri}), {stamp}. "
        "Each cell: mean ± sample std over seeds, newest finished run per seed; "
        f"a row marked `(n seeds)` has fewer than {cfg.min_seeds}.",
        "## Table 2: models (test split)\n\n"
        + markdown2
        + (f"\n\n![AUC per model]({Path(models_plot).name})" if models_plot else ""),
        "## Table 3: ablations\n\n" + markdown3,
    ]
    if len(versions) > 1:
        sections.insert(
            2, f"**Warning:** the runs used different samples.ctr versions ({', '.join(versions)})."
        )
    sweeps: dict = {}
    for sweep in SWEEPS:  # the sweeps that have runs
        table = sweep_table(runs, sweep)
        if table.empty:
            continue
        markdown, figures[f"{sweep}_plot"] = sweep_section(sweep, table, path.parent)
        sections.append(f"## Sweep: {sweep}\n\n" + markdown)
        tables[f"sweep_{sweep}"] = markdown
        sweeps[sweep] = [
            {k: int(v) if k == "seeds" else _number(v) for k, v in row.items()}
            for row in table.to_dict("records")
        ]
    # the studies beside the tables: where the gap to Bayes goes, the case study (their newest runs)
    studies_markdown, studies, study_plots = study_sections(path.parent)
    sections += studies_markdown
    figures.update(study_plots)
    path.write_text("\n\n".join(sections) + "\n")
    if active():
        mlflow.log_artifact(str(path))
        for name, markdown in tables.items():
            mlflow.log_text(markdown + "\n", f"tables/{name}.md")
        for plot in figures.values():
            mlflow.log_artifact(plot)  # `larr`'s own logging of *_plot figures rewrites the same file
        mlflow.log_metrics(cell_metrics(numbers2, numbers3))
        if versions:
            mlflow.log_param("samples_versions", ",".join(versions))
    log(markdown2)
    log(markdown3)
    return {
        "report": str(path),
        "table2": numbers2,
        "table3": numbers3,
        "sweeps": sweeps,
        "runs": int(len(runs)),
        "short_of_seeds": short,
        "samples_versions": versions,
        "studies": studies,
        **figures,
    }
