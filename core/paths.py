"""Where the defaults live: the repository (a source checkout) or the lakehouse, never the working folder.

`larr`, the notebooks and the tests may start from any folder; a default such as the base model's
`.models/smollm2-135m-instruct` or the demo lakehouse `lakehouse/` is read relative to the
checkout the code runs from. An installed wheel (no checkout around it) falls back to the working
folder, as any command-line tool does.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
IN_CHECKOUT = (REPO_ROOT / "pyproject.toml").is_file()
BASE_MODEL = ".models/smollm2-135m-instruct"  # written by `make setup` (training/lm/convert_smollm2.py)
LAKEHOUSE_ENV = "LARR_LAKEHOUSE"


def project_root() -> Path:
    """The checkout's root, else the working folder (an installed wheel)."""
    return REPO_ROOT if IN_CHECKOUT else Path.cwd()


def default_lakehouse() -> str:
    """$LARR_LAKEHOUSE, else the checkout's `lakehouse/` (absolute), whatever the working folder."""
    return os.environ.get(LAKEHOUSE_ENV) or str(project_root() / "lakehouse")


def repo_path(path: str | Path) -> Path:
    """A relative path that does not exist from the working folder but does in the checkout is the
    checkout's (`.models/...`, `jobs/deepspeed/...`); anything else is returned as given."""
    path = Path(path).expanduser()
    if path.is_absolute() or path.exists() or not IN_CHECKOUT:
        return path
    in_repo = REPO_ROOT / path
    return in_repo if in_repo.exists() else path
