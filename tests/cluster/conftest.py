"""A real standalone Spark cluster (a master and two 1-core workers from the venv's pyspark,
`jobs/spark/cluster.sh`) for the whole `cluster` test session, on free ports in a temp folder,
and the cluster recipe of docs/cluster.md as a bash script."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "jobs" / "spark" / "cluster.sh"
RECIPE_MASTER = "spark://127.0.0.1:7077"


@dataclass(frozen=True)
class Cluster:
    folder: Path
    master: str
    env: dict[str, str]

    def events(self) -> list[Path]:
        return sorted((self.folder / "events").glob("app-*"))

    def pids(self) -> dict[str, int]:
        return {p.stem: int(p.read_text()) for p in self.folder.glob("*.pid")}


def _free_port_block(size: int) -> int:
    """A base port with `size` consecutive free ports (master UI, then one per worker)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + size >= 65535:
            continue
        try:
            for port in range(base, base + size):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no block of free ports")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def cluster(tmp_path_factory) -> Cluster:
    folder = tmp_path_factory.mktemp("spark-cluster")
    port = _free_port()
    env = {
        **os.environ,
        "LARR_CLUSTER_DIR": str(folder),
        "LARR_SPARK_MASTER_PORT": str(port),
        "LARR_SPARK_UI_PORT": str(_free_port_block(3)),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    started = subprocess.run(
        ["bash", str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=180
    )
    assert started.returncode == 0, started.stdout + started.stderr
    yield Cluster(folder, f"spark://127.0.0.1:{port}", env)
    subprocess.run(["bash", str(SCRIPT), "down"], env=env, capture_output=True, text=True, timeout=120)


def recipe_lines() -> list[str]:
    """The bash lines of docs/cluster.md's cluster recipe (the fenced block after the `cluster-recipe`
    mark)."""
    page = (REPO_ROOT / "docs" / "cluster.md").read_text()
    start = page.index("<!-- cluster-recipe")
    block = re.search(r"```bash\n(.*?)\n\s*```", page[start:], re.S)
    return [line.strip() if line.startswith("  ") else line for line in block.group(1).splitlines()]


def recipe(
    cluster: Cluster, lakehouse: Path, extra: dict[str, list[str]]
) -> tuple[str, list[tuple[str, list[str]]]]:
    """(a bash script that runs the recipe on `cluster` into `lakehouse`, the recipe's jobs as
    (command, its flags)). `make cluster-up/down` are the fixture's; `extra` appends flags to a job
    (tiny sizes)."""
    script, jobs = ["set -euo pipefail"], []
    for line in recipe_lines():
        if line.startswith("make cluster-"):
            continue
        if line.startswith("larr_submit "):
            job = line.split("#")[0].split()[1:]
            name = " ".join(w for w in job if not w.startswith("-") and "=" not in w)
            jobs.append((name, job[len(name.split()) :]))
            line = " ".join([line.split("#")[0].strip(), *extra.get(name, [])])
            script.append(f'echo "== {name}" >&2')
        script.append(line.replace(RECIPE_MASTER, cluster.master))
        if line.startswith("export LAKEHOUSE="):
            script.append(f"export LAKEHOUSE={lakehouse}")
    return "\n".join(script), jobs
