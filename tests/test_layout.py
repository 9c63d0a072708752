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


def test_notebook_code_cells_are_valid_python():
    import json

    for notebook in (REPO_ROOT / "notebooks").glob("*.ipynb"):
        cells = json.loads(notebook.read_text())["cells"]
        code = [c for c in cells if c["cell_type"] == "code"]
        assert code, notebook
        for cell in code:
            compile("".join(cell["source"]), f"{notebook.name}", "exec")


def test_every_package_is_listed_for_the_wheel():
    import tomllib

    listed = set(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(REPO_ROOT).parts)
        for top in ("core", "etl", "features", "training", "jobs", "benchmarks")
        for init in (REPO_ROOT / top).rglob("__init__.py")
    }
    assert found == listed
