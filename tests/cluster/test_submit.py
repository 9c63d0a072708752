"""The cluster recipe of docs/cluster.md, run as written on a real standalone cluster (two executors):
every application ran tasks on both executors (event logs), every table equals the local-mode
run's row for row, the embedding UDF loaded the encoder once per Python worker from the staged
copy on the lakehouse, and cluster faults end in one line or in Spark's task retry."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from tests.cluster.conftest import SCRIPT, recipe
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.cluster

SMALL_WORLD = [
    "--set", "world.users=60", "--set", "world.pois=120", "--set", "world.days=3",
    "--set", "world.impressions_per_day=300", "--set", "test_day=3",
]  # fmt: skip
EXPECTED_JOBS = ["generate", "etl clean", "features scene", "features stats", "etl samples", "embed scenes"]
VECTOR_TOLERANCE = 1e-5  # the same weights on the same CPU; batches differ in padding only


def _log_encoder(lakehouse: Path, folder: Path) -> None:
    """A tiny stage-2 encoder logged into the lakehouse's store, as `larr train contrastive` does."""
    import mlflow

    from core.tracking import configure, experiment_for, record_model

    configure(str(lakehouse))
    experiment_for("contrastive")
    with mlflow.start_run(run_name="tiny encoder"):
        model_uri = mlflow.pyfunc.log_model(
            name="encoder",
            python_model=str(REPO_ROOT / "training" / "embedding" / "pyfunc.py"),
            artifacts={"encoder": str(folder / "artifacts" / "encoder")},
            pip_requirements=["torch", "transformers", "numpy", "pandas"],
        ).model_uri
        record_model(model_uri)


@pytest.fixture(scope="module")
def encoder_folder(tmp_path_factory) -> Path:
    from tests.features.builders import tiny_encoder_model

    folder, _, _ = tiny_encoder_model(tmp_path_factory.mktemp("encoder") / "model")
    return folder


@pytest.fixture(scope="module")
def cluster_run(cluster, encoder_folder, tmp_path_factory):
    lakehouse = tmp_path_factory.mktemp("cluster") / "lakehouse"
    _log_encoder(lakehouse, encoder_folder)
    script, jobs = recipe(cluster, lakehouse, {"generate": SMALL_WORLD})
    done = subprocess.run(
        ["bash", "-c", script], cwd=REPO_ROOT, env=cluster.env, capture_output=True, text=True, timeout=1500
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return {"lakehouse": lakehouse, "jobs": jobs, "stdout": done.stdout, "stderr": done.stderr}


@pytest.fixture(scope="module")
def local_run(spark, cluster_run, encoder_folder, tmp_path_factory):
    from jobs.cli import main

    lakehouse = tmp_path_factory.mktemp("local") / "lakehouse"
    for job, flags in cluster_run["jobs"]:
        extra = SMALL_WORLD if job == "generate" else flags
        if job == "embed scenes":  # the same weights, from their folder (no MLflow store here)
            assert flags == ["--set", "encoder=latest:contrastive"]
            extra = ["--set", f"encoder={encoder_folder}"]
        assert main([*job.split(), "--lakehouse", str(lakehouse), *extra]) == 0, job
    return lakehouse


def _applications(cluster) -> dict[str, dict]:
    """Per application name: executor id -> tasks it ran, from the event logs."""
    apps: dict[str, dict] = {}
    for path in cluster.events():
        name, tasks = None, Counter()
        for line in path.read_text().splitlines():
            event = json.loads(line)
            if event["Event"] == "SparkListenerApplicationStart":
                name = event["App Name"]
            elif event["Event"] == "SparkListenerTaskEnd":
                tasks[event["Task Info"]["Executor ID"]] += 1
        apps[name] = {"tasks": tasks, "log": path}
    return apps


def test_the_recipe_submits_the_whole_etl_and_the_embedding(cluster_run):
    assert [job for job, _ in cluster_run["jobs"]] == EXPECTED_JOBS
    summaries = [json.loads(line) for line in cluster_run["stdout"].splitlines() if line.startswith("{")]
    assert [s["job"] for s in summaries] == EXPECTED_JOBS
    assert "spark_submit.py" not in cluster_run["stderr"]


def test_every_application_ran_tasks_on_two_executors(cluster, cluster_run):
    apps = _applications(cluster)
    for job in EXPECTED_JOBS:
        name = "larr-" + job.replace(" ", "-")
        assert name in apps, f"no event log of {name}: {sorted(apps)}"
        executors = {e: n for e, n in apps[name]["tasks"].items() if e != "driver"}
        assert len(executors) >= 2, f"{name}: tasks per executor {executors}"


def _tables(lakehouse: Path) -> list[str]:
    return sorted(
        f"{p.parent.parent.name}.{p.parent.name}"
        for p in lakehouse.glob("*/*/_delta_log")
        if not p.parent.parent.name.startswith("_")
    )


def test_every_table_equals_the_local_mode_run(spark, cluster_run, local_run):
    from core.catalog import TableCatalog
    from core.manifest import MANIFEST

    on_cluster, local = (
        TableCatalog.resolve(str(cluster_run["lakehouse"])),
        TableCatalog.resolve(str(local_run)),
    )
    names = _tables(cluster_run["lakehouse"])
    assert names == _tables(local_run) and len(names) >= 15
    # the run manifests differ in run ids and times only: the same jobs published the same tables
    published = on_cluster.read(spark, MANIFEST).select("job", "table").distinct()
    local_published = local.read(spark, MANIFEST).select("job", "table").distinct()
    assert published.exceptAll(local_published).count() == 0 == local_published.exceptAll(published).count()
    for name in (n for n in names if n != MANIFEST):
        a, b = on_cluster.read(spark, name), local.read(spark, name)
        assert a.schema == b.schema, name
        if name == "features.scene_embeddings":
            keys = ["feature", "value", "encoder_version"]
            joined = a.alias("a").join(b.alias("b"), keys, "full_outer")
            gap = joined.select(
                F.max(F.array_max(F.zip_with("a.vector", "b.vector", lambda x, y: F.abs(x - y)))).alias(
                    "gap"
                ),
                F.count("*").alias("rows"),
            ).first()
            assert gap["rows"] == a.count() == b.count() and gap["gap"] < VECTOR_TOLERANCE, (name, gap)
            a, b = a.drop("vector", "encoder_uri"), b.drop("vector", "encoder_uri")
        assert a.count() == b.count(), name
        assert a.exceptAll(b).count() == 0 and b.exceptAll(a).count() == 0, f"{name} differs"


def test_the_udf_loaded_the_encoder_once_per_python_worker_from_the_lakehouse(cluster, cluster_run):
    app = _applications(cluster)["larr-embed-scenes"]["log"].name
    loads: dict[str, list[str]] = defaultdict(list)
    for stderr in (cluster.folder / "work").glob(f"worker-*/{app}/*/stderr"):
        for line in stderr.read_text().splitlines():
            if line.startswith("larr embed: encoder "):
                loads[str(stderr.parent)].append(line)
    assert len(loads) >= 2, f"loads per executor: {dict(loads)}"
    staged = str(cluster_run["lakehouse"].resolve() / "_encoders")
    for executor, lines in loads.items():
        pids = Counter(re.search(r"by pid (\d+)", line).group(1) for line in lines)
        assert all(n == 1 for n in pids.values()), (executor, lines)
        assert all(f"loaded from {staged}/enc-" in line and " on cpu " in line for line in lines), lines
    assert "sqlite" not in " ".join(line for lines in loads.values() for line in lines)


def _submit(
    cluster, lakehouse: Path, *args: str, master: str | None = None, conf=()
) -> subprocess.CompletedProcess:
    env_lines = subprocess.run(["bash", str(SCRIPT), "env"], env=cluster.env, capture_output=True, text=True)
    exports = dict(re.findall(r"(\w+)=(\S+)", env_lines.stdout))
    jars = ",".join(str(p) for p in sorted((REPO_ROOT / ".jars").glob("*.jar")))
    command = [
        f"{exports['SPARK_HOME']}/bin/spark-submit", "--master", master or cluster.master, "--jars", jars,
        *[x for c in conf for x in ("--conf", c)], str(REPO_ROOT / "jobs" / "spark_submit.py"),
        *args, "--lakehouse", str(lakehouse),
    ]  # fmt: skip
    return subprocess.run(
        command, cwd=REPO_ROOT, env={**cluster.env, **exports}, capture_output=True, text=True, timeout=600
    )


def _errors(done: subprocess.CompletedProcess) -> list[str]:
    """The CLI's error lines. spark-submit merges the Python driver's stderr into its stdout, and
    the JVM may log after it."""
    lines = (done.stdout + done.stderr).splitlines()
    return [line for line in lines if line.startswith("larr ") and ": error: " in line]


def test_an_unreachable_master_is_one_line(cluster, tmp_path):
    from tests.cluster.conftest import _free_port

    bad = f"spark://127.0.0.1:{_free_port()}"
    started = time.perf_counter()
    done = _submit(cluster, tmp_path / "lh", "generate", *SMALL_WORLD, master=bad)
    assert done.returncode == 2, done.stderr[-2000:]
    (last,) = _errors(done)
    assert last.startswith(f"larr generate: error: Spark master {bad} is unreachable"), last
    assert "Traceback" not in done.stdout + done.stderr and time.perf_counter() - started < 60
    assert not (tmp_path / "lh" / "raw").exists()


def test_executors_without_the_project_are_one_line(cluster, tmp_path):
    python = "/usr/bin/python3"  # the system Python: neither the project nor pandas
    if not Path(python).is_file():
        pytest.skip("no system python3 to stand for a bare executor image")
    done = _submit(
        cluster, tmp_path / "lh", "generate", *SMALL_WORLD, conf=[f"spark.pyspark.python={python}"]
    )
    assert done.returncode == 2, done.stderr[-2000:]
    (last,) = _errors(done)
    assert last.startswith("larr generate: error: executors of spark://") and "No module named" in last, last
    assert "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / "lh" / "raw" / "impressions").exists()


def _submit_command(cluster, lakehouse: Path, job: str) -> str:
    script, _ = recipe(cluster, lakehouse, {})
    prelude = [line for line in script.splitlines() if not line.startswith(("larr_submit ", "echo "))]
    return "\n".join([*prelude, f"export LAKEHOUSE={lakehouse}", f"larr_submit {job}"])


CTR_TINY = ["--model", "deepfm", "--set", "seeds=[1]", "--set", "batch_size=64", "--set", "max_steps=8",
            "--set", "log_model=false", "--set", "progress=false"]  # fmt: skip
TRAIN_TOLERANCE = 1e-4  # gloo's all-reduce sums in another order than one process's backward
GAUC_TOLERANCE = 1e-3  # per-user AUCs over a few impressions each: a 1e-7 change flips a near-tie


@pytest.mark.extended  # about 2 minutes: `make test-extended` (the recipe's ETL on the cluster stays in CI)
def test_ctr_trains_on_two_executors_like_one_process(spark, cluster, cluster_run, tmp_path):
    """`train ctr` submitted with the TorchDistributor launcher in executor mode: 2 ranks in a
    barrier stage on the two executors, the same global batch as one local process."""
    from jobs.cli import main

    single = tmp_path / "single"
    shutil.copytree(cluster_run["lakehouse"], single)
    assert main(["train", "ctr", "--lakehouse", str(single), *CTR_TINY]) == 0
    local = json.loads((sorted((single / "_runs").glob("train-ctr-*.json"))[-1]).read_text())

    distributed = tmp_path / "distributed"
    shutil.copytree(cluster_run["lakehouse"], distributed)
    known = set(cluster.events())
    launch = ["--set", "launch.launcher=torch_distributor", "--set", "launch.num_processes=2",
              "--set", "launch.local_mode=false"]  # fmt: skip
    done = subprocess.run(
        ["bash", "-c", _submit_command(cluster, distributed, " ".join(["train ctr", *CTR_TINY, *launch]))],
        cwd=REPO_ROOT, env=cluster.env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    summary = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    assert "ctr_auc" in local and local["train_rows"] == summary["train_rows"]
    for key in ("ctr_auc", "ctcvr_auc", "ctr_gauc", "logloss"):
        if key in local:
            tolerance = GAUC_TOLERANCE if "gauc" in key else TRAIN_TOLERANCE
            assert abs(summary[key] - local[key]) < tolerance, (key, summary[key], local[key])
    (app,) = [p for p in cluster.events() if p not in known]
    barrier = Counter()
    for line in app.read_text().splitlines():
        event = json.loads(line)
        if event["Event"] == "SparkListenerTaskEnd" and event["Task Info"]["Executor ID"] != "driver":
            barrier[event["Task Info"]["Executor ID"]] += 1
    assert len(barrier) == 2, barrier


@pytest.mark.extended  # about 2 minutes; Spark's task retry, not ours: `make test-extended`
def test_a_worker_killed_mid_clean_is_survived_by_task_retry(spark, cluster, cluster_run, tmp_path):
    """SIGKILL one worker (and its executor) once the job's tasks run: Spark retries them on the
    other executor, the job finishes, and the tables equal the undisturbed run's."""
    from core.catalog import TableCatalog

    lakehouse = tmp_path / "lakehouse"
    shutil.copytree(cluster_run["lakehouse"], lakehouse)
    catalog = TableCatalog.resolve(str(lakehouse))
    before = {n: catalog.version(spark, n) for n in ("clean.impressions", "clean.users", "clean.pois")}
    known = set(cluster.events())
    worker = cluster.pids()["worker-2"]
    process = subprocess.Popen(
        ["bash", "-c", _submit_command(cluster, lakehouse, "etl clean --force")],  # unchanged inputs
        cwd=REPO_ROOT, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 240
    while time.time() < deadline:
        new = [p for p in cluster.events() if p not in known]
        if new and new[0].read_text().count('"SparkListenerTaskEnd"') >= 3:
            break
        time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("the clean job's tasks never started")
    subprocess.run(["pkill", "-KILL", "-P", str(worker)])  # its executor
    subprocess.run(["kill", "-KILL", str(worker)])
    out, err = process.communicate(timeout=600)
    try:
        assert process.returncode == 0, (out + err)[-3000:]
        (app,) = [p for p in cluster.events() if p not in known]
        events = [json.loads(line) for line in app.read_text().splitlines()]
        removed = [e for e in events if e["Event"] == "SparkListenerExecutorRemoved"]
        # The worker reports its killed executor ("exited with code 137") unless the
        # master notices the lost worker first: either way it died mid-job.
        reasons = [e["Removed Reason"] for e in removed]
        assert removed and all("worker lost" in r or "code 137" in r for r in reasons), reasons
        after_removal = events[events.index(removed[0]) :]
        assert any(e["Event"] == "SparkListenerTaskEnd" for e in after_removal)  # the job went on
        after = TableCatalog.resolve(str(lakehouse))
        original = TableCatalog.resolve(str(cluster_run["lakehouse"]))
        for name, version in before.items():
            assert after.version(spark, name) == version + 1, name
            a, b = after.read(spark, name), original.read(spark, name)
            assert a.exceptAll(b).count() == 0 and b.exceptAll(a).count() == 0, name
    finally:
        subprocess.run(["bash", str(SCRIPT), "up"], env=cluster.env, capture_output=True, timeout=180)
