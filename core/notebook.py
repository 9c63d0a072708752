"""What the analyst notebooks (notebooks/*.ipynb) share: the lakehouse and its MLflow store found
from any working folder, checks that print one line saying what to run instead of raising, a
small Spark session, and step-wise metric histories for learning curves.

    lh = open_lakehouse(WORLD, CTR)  # the first cell: where, and which stage is missing
    if lh.ready(CTR):                # a later section: True, or one line and False
        ...

Jupyter starts a kernel in the notebook's own folder (notebooks/), so nothing here reads the
working folder: the lakehouse is $LARR_LAKEHOUSE, else the checkout's `lakehouse/`
(core/paths.py), and its MLflow store is the one `larr` writes (core/tracking.py). On a local
lakehouse the checks read the file system only: no Spark session starts and no MLflow store is
created, so a fresh checkout answers at once.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from core.catalog import TableCatalog, is_remote
from core.paths import LAKEHOUSE_ENV
from core.spark import SparkSettings
from core.tracking import experiment_name, tracking_uri

DEMO_HINT = f"run `make demo` (about 15 minutes) or set {LAKEHOUSE_ENV}"
# the kernel is a second JVM beside whatever else runs: 2 cores, 1 GB, few shuffle partitions
NOTEBOOK_SPARK = SparkSettings(
    master="local[2]", app_name="larr-notebook", shuffle_partitions=4, driver_memory="1g"
)


@dataclass(frozen=True)
class Stage:
    """What a notebook section needs: Delta tables and/or finished runs of a stage's MLflow
    experiment (`larr-<experiment>`, those matching `runs_filter`), and the command that makes them."""

    name: str  # "stage 3 (the CTR models)": the message reads "<name> has not run yet: run `<run>`"
    run: str  # "larr train ctr --model larr"
    tables: tuple[str, ...] = ()
    experiment: str = ""  # core.tracking stage: ctr, cpt, contrastive, ...
    runs_filter: str = ""  # an MLflow filter string, e.g. "tags.`larr.sweep` != ''"

    def __post_init__(self) -> None:
        object.__setattr__(self, "tables", tuple(self.tables))
        if not self.tables and not self.experiment:
            raise ValueError(f"stage {self.name!r} needs tables or an experiment")


@dataclass
class Lakehouse:
    catalog: TableCatalog
    source: str  # where the root came from, for the first line
    _spark: object = field(default=None, repr=False)

    @property
    def root(self) -> str:
        return self.catalog.root

    @property
    def local(self) -> bool:
        return not is_remote(self.root) and not self.catalog.unity_prefix

    @property
    def found(self) -> bool:
        """A remote or Unity Catalog lakehouse is taken as there; a local one must hold a Delta
        table or the MLflow store."""
        if not self.local:
            return True
        root = Path(self.root)
        return root.is_dir() and (any(root.glob("*/*/_delta_log")) or (root / "mlflow.db").is_file())

    @property
    def spark(self):
        """A small local Delta-enabled session, started on first use (the cluster's on Databricks)."""
        if self._spark is None:
            from core.spark import get_spark

            self._spark = get_spark(NOTEBOOK_SPARK)
        return self._spark

    # -- tables ----------------------------------------------------------------------------------
    def has_table(self, name: str) -> bool:
        if self.local:
            log = Path(self.catalog.location(name)) / "_delta_log"
            return log.is_dir() and any(log.glob("*.json"))
        return self.catalog.exists(self.spark, name)

    def read(self, name: str):
        """A table as a Spark DataFrame (its latest version)."""
        return self.catalog.read(self.spark, name)

    # -- MLflow ------------------------------------------------------------------------------------
    def store(self) -> str | None:
        """The tracking URI when the store exists (MLflow pointed at it), else None; a local
        sqlite store is never created here."""
        uri = (
            tracking_uri(self.root)
            if not is_remote(self.root) or os.environ.get("MLFLOW_TRACKING_URI")
            else None
        )
        if uri is None or (
            uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file()
        ):
            return None
        import mlflow

        mlflow.set_tracking_uri(uri)
        return uri

    def runs(self, stage: Stage, max_results: int = 1000):
        """The stage's finished runs (mlflow.search_runs: a pandas DataFrame, newest first); empty
        when the store or the experiment does not exist."""
        import mlflow
        import pandas as pd

        if self.store() is None:
            return pd.DataFrame()
        experiment = mlflow.MlflowClient().get_experiment_by_name(experiment_name(stage.experiment))
        if experiment is None:
            return pd.DataFrame()
        query = " and ".join(q for q in ("attributes.status = 'FINISHED'", stage.runs_filter) if q)
        return mlflow.search_runs(
            [experiment.experiment_id],
            query,
            order_by=["attributes.start_time DESC"],
            max_results=max_results,
        )

    # -- checks ------------------------------------------------------------------------------------
    def missing(self, stage: Stage) -> list[str]:
        """What of `stage` is not there yet: table names, or `larr-<experiment> runs`."""
        gone = [name for name in stage.tables if not self.has_table(name)]
        if stage.experiment and self.runs(stage, max_results=1).empty:
            gone.append(f"{experiment_name(stage.experiment)} runs")
        return gone

    def ready(self, *stages: Stage, log=print) -> bool:
        """True when every stage ran; else one line per missing stage saying what to run."""
        if not self.found:
            log(f"skipped: no lakehouse at {self.root} yet (see the first cell)")
            return False
        ok = True
        for stage in stages:
            gone = self.missing(stage)
            if gone:
                log(f"{stage.name} has not run yet ({', '.join(gone)} missing): run `{stage.run}`")
                ok = False
        return ok


def quiet_kernel() -> None:
    """Leave out of cell outputs what is noise in a notebook: tqdm's note that ipywidgets is
    missing, MLflow's artifact download bars, the encoder pyfunc's type-hint advice."""
    warnings.filterwarnings("ignore", message="IProgress not found")
    warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def open_lakehouse(*stages: Stage, lakehouse: str | None = None, log=print) -> Lakehouse:
    """The first cell: find the lakehouse and say in one line where it is, or that there is none
    and what to run; then one line per stage of `stages` that has not run yet. Never raises for
    a missing lakehouse or stage."""
    quiet_kernel()
    catalog = TableCatalog.resolve(lakehouse)
    if lakehouse:
        source = "given"
    elif os.environ.get(LAKEHOUSE_ENV):
        source = f"${LAKEHOUSE_ENV}"
    else:
        source = "the checkout's lakehouse/"
    lh = Lakehouse(catalog=catalog, source=source)
    if not lh.found:
        log(f"no lakehouse at {lh.root} yet: {DEMO_HINT}")
        return lh
    uri = lh.store()
    log(f"lakehouse {lh.root} ({source}); MLflow store {uri or 'not written yet'}")
    lh.ready(*stages, log=log)
    return lh


def metric_histories(run_ids: Iterable[str], key: str = "train_loss"):
    """Every logged step of metric `key` of each run: a pandas DataFrame run_id, step, value
    (sorted), for learning curves; runs that never logged it have no rows."""
    import mlflow
    import pandas as pd

    client = mlflow.MlflowClient()
    rows = [(run_id, m.step, m.value) for run_id in run_ids for m in client.get_metric_history(run_id, key)]
    frame = pd.DataFrame(rows, columns=["run_id", "step", "value"])
    return frame.sort_values(["run_id", "step"]).reset_index(drop=True)


def plot_curves(curves, label: str, title: str, ax=None):
    """One line per value of column `label` of a `metric_histories` frame (merged with run
    columns); returns the matplotlib Axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    for name, curve in curves.groupby(label, sort=True):
        ax.plot(curve["step"], curve["value"], label=str(name))
    ax.set(title=title, xlabel="optimizer step", ylabel="train_loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return ax
