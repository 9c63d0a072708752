"""The report's sections on the studies beside Tables 2 and 3: the newest finished `larr gap` run
(where the gap to Bayes goes, by data size, with each model's semantic capture) and the newest
finished `larr casestudy` run (the case study's precision per encoder). Each section is what the
study's own run logged (its tables, its plots copied beside the report), named by run id and date
so a reader can open the run; a study never run gives no section."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from core.tracking import experiment_name
from training.ctr.names import GAP_MODEL_TAG
from training.embedding.casestudy_report import PER_SCENE_HEADER


@dataclass(frozen=True)
class Study:
    title: str
    stage: str  # the MLflow experiment's stage
    filter: str  # which finished runs of that experiment are this study's
    tables: tuple[str, ...]  # markdown artifacts, in order
    plots: tuple[str, ...]  # PNG artifacts, copied beside the report
    command: str


STUDIES = (
    Study(
        "Where the gap to Bayes goes",
        "ctr",
        f"tags.`{GAP_MODEL_TAG}` LIKE '%'",
        ("gap.md", "gap_by_size.md"),
        ("gap.png", "gap_by_size.png"),
        "larr gap",
    ),
    Study("The case study", "casestudy", "", ("casestudy.md",), ("casestudy.png",), "larr casestudy"),
)


def newest_run(study: Study):
    """The newest finished run of the study, or None."""
    import mlflow

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(experiment_name(study.stage))
    if experiment is None:
        return None
    condition = " and ".join(c for c in ("attributes.status = 'FINISHED'", study.filter) if c)
    runs = client.search_runs(
        [experiment.experiment_id], condition, order_by=["attributes.start_time DESC"], max_results=1
    )
    return runs[0] if runs else None


def section(study: Study, folder: Path) -> tuple[str, str, list[str]] | None:
    """(markdown, run id, plot files copied into `folder`) of the study's newest run, or None."""
    import mlflow

    found = newest_run(study)
    if found is None:
        return None
    client = mlflow.MlflowClient()
    run_id = found.info.run_id
    logged = {a.path for a in client.list_artifacts(run_id)}
    when = dt.datetime.fromtimestamp(found.info.start_time / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"## {study.title} (`{study.command}`)",
        f"From the newest finished `{study.command}` run, {run_id} ({when}).",
    ]
    for name in study.tables:
        if name in logged:
            text = mlflow.artifacts.load_text(f"runs:/{run_id}/{name}")  # read, not copied beside the report
            kept = text.split("\n\n" + PER_SCENE_HEADER)[0]  # casestudy.md: its summary only
            parts.append("\n".join(line for line in kept.splitlines() if not line.startswith("# ")).strip())
    plots = []
    for name in study.plots:
        if name in logged:
            plots.append(client.download_artifacts(run_id, name, str(folder)))
            parts.append(f"![{name}]({name})")
    return "\n\n".join(parts), run_id, plots


def study_sections(folder: Path) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """(markdown sections, {study command: run id}, {plot key: path}) of every study that ran."""
    sections, runs, plots = [], {}, {}
    for study in STUDIES:
        found = section(study, folder)
        if found is None:
            continue
        markdown, runs[study.command], files = found
        sections.append(markdown)
        plots.update({f"{Path(f).stem}_plot": f for f in files})
    return sections, runs, plots
