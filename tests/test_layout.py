import importlib
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.parametrize("package", ["core", "etl", "features", "training", "jobs", "benchmarks"])
def test_packages_import_from_this_repository(package):
    module = importlib.import_module(package)
    assert Path(module.__file__).resolve().parent == REPO_ROOT / package


def test_console_script_is_declared():
    text = (REPO_ROOT / "pyproject.toml").read_text()
    assert 'larr = "jobs.cli:main"' in text
    assert 'name = "larr-platform"' in text


def test_ci_runs_make_test():
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text()


NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))


def test_notebook_code_cells_are_valid_python():
    import json

    assert NOTEBOOKS
    for notebook in NOTEBOOKS:
        cells = json.loads(notebook.read_text())["cells"]
        code = [c for c in cells if c["cell_type"] == "code"]
        assert code, notebook
        for cell in code:
            compile("".join(cell["source"]), f"{notebook.name}", "exec")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs_on_the_project_kernel(notebook):
    """Outputs stay out of git (tests/notebooks/ executes every notebook instead); the kernel is the
    project venv's, registered by `make notebooks`, not whatever `python3` a Jupyter install has."""
    import json

    content = json.loads(notebook.read_text())
    assert content["metadata"]["kernelspec"] == {
        "name": "larr",
        "display_name": "LARR (project venv)",
        "language": "python",
    }
    for cell in content["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, cell["source"]
        assert "attachments" not in cell, cell["source"]


def test_every_package_is_listed_for_the_wheel():
    import tomllib

    listed = set(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(REPO_ROOT).parts)
        for top in ("core", "etl", "features", "training", "jobs", "benchmarks")
        for init in (REPO_ROOT / top).rglob("__init__.py")
    }
    assert found == listed
