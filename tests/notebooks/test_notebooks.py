"""Every notebook runs headless top to bottom (nbclient), as Jupyter runs it: a kernel of this
venv's Python (a kernelspec named `larr` in a temp folder, no `--user` install), started in
notebooks/, with $LARR_LAKEHOUSE set. On the tiny lakehouse of the real jobs every cell passes and
shows its figures; on an empty lakehouse the first cell says what to run and nothing raises."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS = sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb"))
DEMO_LINE = "no lakehouse at {root} yet: run `make demo` (about 15 minutes) or set LARR_LAKEHOUSE"


@pytest.fixture(scope="module")
def kernels(tmp_path_factory) -> Path:
    """A kernelspec `larr` (the notebooks' kernel name) running this interpreter."""
    folder = tmp_path_factory.mktemp("kernels")
    (folder / "larr").mkdir()
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "LARR (project venv)",
        "language": "python",
    }
    (folder / "larr" / "kernel.json").write_text(json.dumps(spec))
    return folder


def execute(name: str, lakehouse: Path, kernels: Path):
    """Run notebook `name` on `lakehouse`; any cell that raises fails the test (CellExecutionError)."""
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    kernel = KernelManager(
        kernel_name=notebook.metadata.kernelspec.name,
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]),
    )
    # as a fresh Jupyter would: no tracking URI, no Spark gateway of this process to attach to
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "MLFLOW_TRACKING_URI" and not k.startswith("PYSPARK_GATEWAY")
    }
    env["LARR_LAKEHOUSE"] = str(lakehouse)
    client = NotebookClient(
        notebook, km=kernel, timeout=300, resources={"metadata": {"path": str(NOTEBOOK_DIR)}}
    )
    client.execute(env=env)
    return notebook


def texts(cell) -> str:
    """What a code cell showed as text: prints, reprs and markdown."""
    parts = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            parts.append(output["text"])
        elif output["output_type"] in ("display_data", "execute_result"):
            data = output["data"]
            parts.append(data.get("text/markdown") or data.get("text/plain", ""))
    return "".join(parts)


def images(notebook) -> int:
    return sum(
        "image/png" in output.get("data", {}) for cell in notebook.cells for output in cell.get("outputs", [])
    )


def code_cells(notebook) -> list:
    return [c for c in notebook.cells if c.cell_type == "code"]


def test_there_are_three_notebooks():
    assert NOTEBOOKS == ["01_explore_tables.ipynb", "02_compare_experiments.ipynb", "03_case_study.ipynb"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_on_an_empty_lakehouse_the_first_cell_says_what_to_run(name, kernels, tmp_path):
    empty = tmp_path / "lakehouse"
    empty.mkdir()
    cells = code_cells(execute(name, empty, kernels))
    assert texts(cells[0]) == DEMO_LINE.format(root=empty) + "\n"
    skipped = f"skipped: no lakehouse at {empty} yet (see the first cell)"
    for cell in cells[1:]:  # every guarded section says it skipped, none ran
        assert set(texts(cell).splitlines()) <= {skipped}, cell.source
    assert any(texts(cell) for cell in cells[1:])
    assert list(empty.iterdir()) == []  # no MLflow store, no table written


def test_explore_tables(notebook_lakehouse, kernels):
    notebook = execute("01_explore_tables.ipynb", notebook_lakehouse, kernels)
    cells = code_cells(notebook)
    first = texts(cells[0])
    assert first.startswith(f"lakehouse {notebook_lakehouse} ($LARR_LAKEHOUSE)") and "not run" not in first
    shown = "\n".join(texts(c) for c in cells)
    assert "not run yet" not in shown and "skipped" not in shown
    for column in (
        "ctr",
        "cvr",
        "scene_district_type",  # the scene breakdown: declared features, not the world's columns
        "true_p",
        "source_table",
        "global_ctr",
        "user_ctr",
        "poi_cvr",
    ):
        assert column in shown, column
    assert re.search(r"raw\.impressions\s+\S+\s+\d+", shown)  # rejects counted by table and reason
    assert "features.user_stats: user_id" in shown and "features.poi_stats: poi_id" in shown
    assert images(notebook) == 1  # the long tail


def test_compare_experiments(notebook_lakehouse, kernels):
    notebook = execute("02_compare_experiments.ipynb", notebook_lakehouse, kernels)
    cells = code_cells(notebook)
    # the tiny lakehouse has no stage 1 run: said in the first cell and in the curves' section
    assert texts(cells[0]).splitlines()[1:] == [
        "stage 1 (continual pretraining) has not run yet (larr-cpt runs missing): run `larr train cpt`"
    ]
    shown = "\n".join(texts(c) for c in cells)
    number = r"0\.\d{4} ± 0\.\d{4}"  # two seeds: a mean and a standard deviation
    assert re.search(rf"\| PLE \(2 seeds\) \| {number} \|", shown)
    assert re.search(rf"\| LARR \(2 seeds\) \| {number} \|", shown)
    # the validation CTR AUC column first; the Bayes row fills the test split's AUC columns only
    assert re.search(r"\| Bayes-optimal \(true probabilities\) \| — \| 0\.\d{4} ±", shown)
    assert re.search(rf"\| complete LARR \(2 seeds\) \| {number} \|", shown)
    assert "ctr_gauc_mean" in shown and "no CPT | not run" in shown
    assert re.search(r"value\s+seeds", shown)  # the temperature sweep's table
    # gap to Bayes, the CTR curves, the contrastive curves, the temperature sweep
    assert images(notebook) == 4


def test_case_study(notebook_lakehouse, kernels):
    notebook = execute("03_case_study.ipynb", notebook_lakehouse, kernels)
    cells = code_cells(notebook)
    shown = "\n".join(texts(c) for c in cells)
    assert "recall: '<user_env>a user visiting Chengdu on vacation</user_env>' with encoder " in shown
    ranked = re.findall(r"^(\d+)\. .+ -?\d\.\d{3}$", shown, re.M)
    assert ranked == [str(i) for i in range(1, 11)]  # the top 10 POIs, printed by recall
    assert "</user_env>" in texts(cells[-1]) and "weight" in texts(cells[-1])  # the attention table
    assert images(notebook) == 1  # the attention bar chart
