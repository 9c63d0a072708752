"""The Databricks bundle (databricks.yml), offline: every job validates against the
`databricks-bundles` models, every task runs a registered `larr` command whose config loads with
the variables' defaults, the task graph runs each task after the tasks that write the tables and
train the models it needs, and the wheel installs on a Databricks ML runtime."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from functools import cache

import pytest
import yaml
from databricks.bundles.jobs import Job
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from core.catalog import TableCatalog
from jobs.cli import build_parser
from jobs.commands import COMMANDS, Command
from jobs.config import default_config_path, load_config
from tests.conftest import REPO_ROOT

BUNDLE_FILE = REPO_ROOT / "databricks.yml"
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
VAR = re.compile(r"\$\{var\.([A-Za-z0-9_-]+)\}")
# what a Databricks ML runtime provides: a wheel that required one of them would replace the runtime's
RUNTIME_PACKAGES = {
    "pyspark", "delta-spark", "torch", "numpy", "pandas", "pyarrow", "mlflow", "mlflow-skinny",
    "transformers", "tokenizers", "deepspeed",
}  # fmt: skip
GPU_COMMANDS = {"train cpt", "train contrastive", "train ctr", "embed scenes", "embed texts"}
DEDICATED = {"SINGLE_USER", "DATA_SECURITY_MODE_DEDICATED"}
UNITY_CATALOG_MODES = DEDICATED | {"USER_ISOLATION", "DATA_SECURITY_MODE_STANDARD", "DATA_SECURITY_MODE_AUTO"}


@cache
def bundle() -> dict:
    return yaml.safe_load(BUNDLE_FILE.read_text())


def defaults() -> dict[str, str]:
    return {name: str(spec["default"]) for name, spec in bundle()["variables"].items()}


def resolve(value):
    """`${var.x}` -> the variable's default, in every string of a YAML value."""
    if isinstance(value, str):
        return VAR.sub(lambda m: defaults()[m.group(1)], value)
    if isinstance(value, list):
        return [resolve(v) for v in value]
    if isinstance(value, dict):
        return {k: resolve(v) for k, v in value.items()}
    return value


def jobs() -> dict[str, dict]:
    return bundle()["resources"]["jobs"]


def job_ids() -> list[str]:
    return list(jobs())


def tasks_of(job: dict) -> dict[str, dict]:
    return {task["task_key"]: task for task in job["tasks"]}


def ancestors(tasks: dict[str, dict], key: str) -> set[str]:
    seen: set[str] = set()
    todo = [d["task_key"] for d in tasks[key].get("depends_on", [])]
    while todo:
        parent = todo.pop()
        if parent not in seen:
            seen.add(parent)
            todo.extend(d["task_key"] for d in tasks[parent].get("depends_on", []))
    return seen


@dataclasses.dataclass(frozen=True)
class Invocation:
    command: Command
    args: object  # the parsed argparse namespace
    config: object  # the loaded config dataclass


def invocation(task: dict) -> Invocation | None:
    """The `larr` command a wheel task runs, with its config loaded as the CLI loads it."""
    if "python_wheel_task" not in task:
        return None
    args = build_parser().parse_args(resolve(task["python_wheel_task"]["parameters"]))
    command = args._command
    flagged = [
        f"{k}={json.dumps(v)}" for k in command.flags if (v := getattr(args, f"flag_{k}", None)) is not None
    ]
    path = args.config or (default_config_path(command.config_file) if command.config_file else None)
    return Invocation(command, args, load_config(command.config_cls, path, [*args.overrides, *flagged]))


@cache
def invocations(job_id: str) -> dict[str, Invocation]:
    return {key: inv for key, task in tasks_of(jobs()[job_id]).items() if (inv := invocation(task))}


def exclusive(tasks: dict[str, dict], a: str, b: str) -> bool:
    """True when a condition task runs one of the two and excludes the other."""
    outcomes_a = {(d["task_key"], d.get("outcome")) for d in tasks[a].get("depends_on", [])}
    outcomes_b = {(d["task_key"], d.get("outcome")) for d in tasks[b].get("depends_on", [])}
    return any(
        key == other and "condition_task" in tasks[key] and outcome != other_outcome
        for key, outcome in outcomes_a
        for other, other_outcome in outcomes_b
    )


# -- the file and its variables -------------------------------------------------------------------
def test_the_bundle_lives_at_the_repository_root():
    assert BUNDLE_FILE.is_file()
    assert not (REPO_ROOT / "jobs" / "databricks.yml").exists()
    assert "jobs/databricks.yml" not in (REPO_ROOT / "README.md").read_text()
    assert jobs(), "the bundle declares no job"


def test_every_variable_used_is_declared_with_a_default_and_every_declared_one_is_used():
    declared = bundle()["variables"]
    used = set(VAR.findall(BUNDLE_FILE.read_text()))
    assert used <= set(declared), f"undeclared: {sorted(used - set(declared))}"
    assert set(declared) <= used, f"never used: {sorted(set(declared) - used)}"
    for name, spec in declared.items():
        assert str(spec.get("default", "")).strip(), f"variable {name} has no default"
    assert declared["encoder"]["default"] == "latest:contrastive"


# -- the jobs against the Databricks models -------------------------------------------------------
@pytest.mark.parametrize("job_id", job_ids())
def test_every_job_validates_against_the_databricks_bundles_models(job_id):
    # `from_dict` refuses an unknown field or enum value anywhere in the job
    Job.from_dict(jobs()[job_id])
    Job.from_dict(resolve(jobs()[job_id]))


@pytest.mark.parametrize("job_id", job_ids())
def test_every_task_runs_a_registered_larr_command_from_the_bundles_wheel(job_id):
    package = PYPROJECT["project"]["name"].replace("-", "_")
    volume = "/Volumes/{catalog}/{schema}/{volume}".format(**defaults())
    for key, task in tasks_of(jobs()[job_id]).items():
        if "condition_task" in task:
            continue
        wheel = task["python_wheel_task"]
        assert wheel["package_name"] == package, key
        assert wheel["entry_point"] in PYPROJECT["project"]["scripts"], key
        assert task["libraries"] == [{"whl": "./dist/*.whl"}], key
        inv = invocations(job_id)[key]  # parses and loads the config strictly: every --set is a real key
        assert COMMANDS[inv.command.name] is inv.command, key
        assert inv.args.lakehouse == volume, key
        assert inv.args.unity_catalog == "{catalog}.{schema}".format(**defaults()), key


def test_the_artifact_builds_the_wheel_that_the_tasks_install():
    (artifact,) = bundle()["artifacts"].values()
    assert artifact["type"] == "whl"
    assert artifact["path"] == "."
    assert artifact["build"] == "python -m pip wheel --no-deps -w dist ."


# -- the task graph -------------------------------------------------------------------------------
@pytest.mark.parametrize("job_id", job_ids())
def test_dependencies_name_tasks_of_the_job_and_form_no_cycle(job_id):
    job = jobs()[job_id]
    keys = [t["task_key"] for t in job["tasks"]]
    assert len(keys) == len(set(keys)), "duplicate task keys"
    tasks = tasks_of(job)
    for key, task in tasks.items():
        for dep in task.get("depends_on", []):
            assert dep["task_key"] in tasks, f"{key} depends on unknown task {dep['task_key']}"
        assert key not in ancestors(tasks, key), f"{key} depends on itself"


@pytest.mark.parametrize("job_id", job_ids())
def test_every_table_a_task_reads_is_written_by_a_task_it_depends_on(job_id):
    tasks = tasks_of(jobs()[job_id])
    runs = invocations(job_id)
    for key, inv in runs.items():
        written = {
            t for parent in ancestors(tasks, key) if parent in runs for t in runs[parent].command.writes
        }
        missing = set(inv.command.reads) - written
        assert not missing, (
            f"{key} ({inv.command.name}) reads {sorted(missing)}, written by none of its dependencies"
        )


@pytest.mark.parametrize("job_id", job_ids())
def test_tasks_that_write_the_same_table_run_one_after_the_other(job_id):
    tasks = tasks_of(jobs()[job_id])
    runs = invocations(job_id)
    for a in runs:
        for b in runs:
            if a < b and set(runs[a].command.writes) & set(runs[b].command.writes):
                ordered = a in ancestors(tasks, b) or b in ancestors(tasks, a)
                assert ordered or exclusive(tasks, a, b), f"{a} and {b} may write the same table at once"


def _stage_variant(inv: Invocation) -> tuple[str, str]:
    return inv.command.stage, getattr(inv.config, "ablation", "none")


def _latest_sources(config) -> list[str]:
    found = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            found += _latest_sources(value)
        elif isinstance(value, str) and value.startswith("latest:"):
            found.append(value)
    return found


@pytest.mark.parametrize("job_id", job_ids())
def test_every_model_a_task_loads_is_trained_or_embedded_by_a_task_it_depends_on(job_id):
    tasks = tasks_of(jobs()[job_id])
    runs = invocations(job_id)
    for key, inv in runs.items():
        before = [runs[p] for p in ancestors(tasks, key) if p in runs]
        if inv.command.name == "train ctr" and inv.config.model != "larr":
            continue  # the ID models and P5 load no encoder
        sources = _latest_sources(inv.config)
        if inv.command.name == "train ctr":
            sources.append(inv.config.default_encoder())
            embedded = {p.config.encoder for p in before if p.command.name == "embed scenes"}
            assert inv.config.default_encoder() in embedded, (
                f"{key}: no scene vectors of its encoder before it"
            )
        for source in sources:
            stage, _, variant = source.removeprefix("latest:").partition("/")
            trained = {_stage_variant(p) for p in before if p.command.name.startswith("train ")}
            assert (stage, variant or "none") in trained, (
                f"{key} loads {source}, trained by none of its dependencies"
            )


@pytest.mark.parametrize("job_id", job_ids())
def test_tasks_sharing_a_single_node_cluster_run_one_at_a_time(job_id):
    job = jobs()[job_id]
    tasks = tasks_of(job)
    for cluster in job.get("job_clusters", []):
        if cluster["new_cluster"].get("num_workers", 1) != 0:
            continue
        on_it = [k for k, t in tasks.items() if t.get("job_cluster_key") == cluster["job_cluster_key"]]
        for i, a in enumerate(on_it):
            for b in on_it[i + 1 :]:
                assert a in ancestors(tasks, b) or b in ancestors(tasks, a), (
                    f"{a} and {b} may share the GPU of {cluster['job_cluster_key']} at once"
                )


def test_the_job_runs_every_stage_and_every_row_of_the_report():
    from training.ctr.report import ABLATIONS, MODELS

    (job_id,) = job_ids()
    runs = invocations(job_id)
    names = {inv.command.name for inv in runs.values()}
    stages = {
        "etl clean", "etl corpus", "etl pairs", "features scene", "features stats", "etl samples",
        "train cpt", "train contrastive", "embed scenes", "embed texts", "train ctr", "report",
    }  # fmt: skip
    assert stages <= names and names & {"generate", "etl ingest"}
    ctr = {key: inv for key, inv in runs.items() if inv.command.name == "train ctr"}
    trained = {(inv.config.model, inv.config.ablation) for inv in ctr.values()}
    wanted = {(key, "none") for key, _ in MODELS} | {(model, ablation) for _, _, model, ablation in ABLATIONS}
    assert wanted <= trained, f"no task trains {sorted(wanted - trained)}"
    (report,) = [key for key, inv in runs.items() if inv.command.name == "report"]
    depends = {d["task_key"] for d in tasks_of(jobs()[job_id])[report]["depends_on"]}
    assert set(ctr) <= depends


# -- clusters ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("job_id", job_ids())
def test_clusters_are_unity_catalog_ml_runtimes_and_gpu_work_runs_on_gpus(job_id):
    job = jobs()[job_id]
    clusters = {c["job_cluster_key"]: c["new_cluster"] for c in job["job_clusters"]}
    for key, spec in clusters.items():
        assert spec.get("data_security_mode") in UNITY_CATALOG_MODES, key
        if spec["data_security_mode"] in DEDICATED:
            assert spec.get("single_user_name"), key
        assert re.fullmatch(r"1[7-9]\.\d+\.x-(cpu|gpu)-ml-scala2\.13", spec["spark_version"]), key
        assert spec.get("spark_env_vars", {}).get("MLFLOW_TRACKING_URI") == "databricks", key
    tasks = tasks_of(job)
    used = {t.get("job_cluster_key") for t in tasks.values()}
    assert set(clusters) <= used, f"unused clusters {sorted(set(clusters) - used)}"
    for key, inv in invocations(job_id).items():
        cluster = tasks[key]["job_cluster_key"]
        gpu = "-gpu-" in clusters[cluster]["spark_version"]
        assert gpu == (inv.command.name in GPU_COMMANDS) or inv.command.name == "report", (key, cluster)


# -- the command registry's tables --------------------------------------------------------------------
def _tables_in_the_code() -> dict[str, tuple[set[str], set[str]]]:
    """(reads, writes) of each command, from the constants its job module reads and writes with."""
    from core.raw_schema import TABLES as RAW
    from core.schema_table import SCHEMA_TABLE
    from etl.clean import job as clean
    from etl.ingest import job as ingest
    from etl.synthetic import job as generate
    from etl.text import corpus, pairs
    from features import recall, samples, scene, stats
    from features.embeddings import scenes, store, texts
    from training.ctr.gap import GapConfig
    from training.ctr.train import CtrConfig
    from training.embedding import contrastive
    from training.embedding.casestudy import CaseStudyConfig
    from training.lm import cpt

    raw = {f"raw.{t}" for t in RAW}
    stat_tables = {stats.USER_STATS, stats.POI_STATS, stats.USER_POI_STATS, stats.GLOBAL_STATS}
    ctr = ({SCHEMA_TABLE, CtrConfig().table}, set())
    nothing = (set(), set())
    return {
        "generate": (set(), {SCHEMA_TABLE, *generate.TABLES}),
        "etl ingest": (set(), {SCHEMA_TABLE, *raw, ingest.MAPPING_TABLE}),
        "etl clean": ({SCHEMA_TABLE, *raw}, {*(f"clean.{t}" for t in RAW), clean.REJECTS}),
        "etl corpus": ({SCHEMA_TABLE, *corpus.INPUTS}, {corpus.OUTPUT}),
        "etl pairs": ({SCHEMA_TABLE, *pairs.INPUTS}, {pairs.OUTPUT}),
        "features scene": ({SCHEMA_TABLE, *scene.INPUTS}, {scene.OUTPUT}),
        "features stats": ({stats.INPUT}, stat_tables),
        "etl samples": ({SCHEMA_TABLE, *samples.INPUTS, *stat_tables}, {samples.OUTPUT}),
        "train cpt": ({SCHEMA_TABLE, cpt.TABLE}, set()),
        "train contrastive": ({SCHEMA_TABLE, contrastive.TABLE}, set()),
        "embed scenes": ({scenes.INPUT}, {scenes.OUTPUT, store.REJECTS}),
        "embed texts": ({SCHEMA_TABLE, *texts.INPUTS}, {*texts.OUTPUTS.values(), store.REJECTS}),
        "train ctr": ctr,
        "bench ctr": ctr,
        "sweep": ctr,
        "tune": ctr,
        "gap": (
            {SCHEMA_TABLE, GapConfig().samples_table, GapConfig().truth_table},
            {GapConfig().oracle_table},
        ),
        "recall": ({SCHEMA_TABLE, recall.POI_EMBEDDINGS, recall.POIS}, set()),
        "casestudy": (
            {SCHEMA_TABLE, recall.POIS, CaseStudyConfig().truth_table},
            {texts.OUTPUTS["poi"], store.REJECTS},
        ),
        "report": nothing,  # MLflow only
        "etl vacuum": nothing,  # every table the run manifest lists (none when there is no manifest)
        # the other benchmarks work in a scratch lakehouse of their own
        "bench generate": nothing,
        "bench etl": nothing,
        "bench samples": nothing,
        "bench llm": nothing,
        "bench embed": nothing,
    }


def test_declared_tables_are_catalog_names_and_match_the_jobs_constants():
    code = _tables_in_the_code()
    assert set(code) == set(COMMANDS), "a command without a reads/writes check"
    for name, command in COMMANDS.items():
        for table in (*command.reads, *command.writes):
            TableCatalog._check(table)  # `layer.table`, as the catalog spells it
        assert (set(command.reads), set(command.writes)) == code[name], name


# -- the wheel --------------------------------------------------------------------------------------
def test_the_wheel_requires_nothing_a_databricks_ml_runtime_provides_and_allows_python_3_12(tmp_path):
    # built from a copy of the sources, so that no build/ or egg-info lands in the checkout
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    for package in ("core", "etl", "features", "training", "jobs", "benchmarks"):
        shutil.copytree(REPO_ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            ".",
        ],
        cwd=source,
        check=True,
    )
    (wheel,) = out.glob("larr_platform-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        text = archive.read(metadata).decode()
    requires = [
        Requirement(line.split(":", 1)[1]) for line in text.splitlines() if line.startswith("Requires-Dist:")
    ]
    always = {r.name.lower().replace("_", "-") for r in requires if r.marker is None}
    assert not always & RUNTIME_PACKAGES, (
        f"the wheel would replace the runtime's {sorted(always & RUNTIME_PACKAGES)}"
    )
    assert all(not str(r.specifier).startswith("==") for r in requires if r.marker is None)
    (python,) = [
        line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Python:")
    ]
    assert "3.12" in SpecifierSet(python), python  # Databricks Runtime 17.x
    assert "3.11" in SpecifierSet(python), python  # the local set-up
    # the configs the tasks load by default travel in the wheel
    assert {"jobs/train_ctr.yaml", "jobs/generate.yaml", "etl/synthetic/schema.yaml"} <= names
    assert any(n.endswith("entry_points.txt") for n in names)


def _pins(lines) -> dict[str, str]:
    return {
        req.name.lower().replace("_", "-"): str(req.specifier)
        for line in lines
        if line.strip() and not line.startswith("#")
        for req in [Requirement(line)]
    }


def test_the_local_extra_pins_the_runtime_stack_as_requirements_lock_does():
    lock = _pins((REPO_ROOT / "requirements.lock").read_text().splitlines())
    local = _pins(PYPROJECT["project"]["optional-dependencies"]["local"])
    assert RUNTIME_PACKAGES - {"mlflow-skinny"} <= set(local)
    for name, pin in local.items():
        assert pin.startswith("==") and lock.get(name) == pin, name
    assert lock["databricks-bundles"] == "==1.22.1"  # the models the bundle tests validate with
