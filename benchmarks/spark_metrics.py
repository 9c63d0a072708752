"""What Spark itself measured for one benchmarked step: its stages, task time, shuffle bytes, spill
and skew, read from the driver's status store (the data behind the Spark UI, kept with the UI off).

`measured(spark, label)` runs a block under a job group (Delta's own background jobs inherit it);
`stage_metrics(spark, group)` then sums the group's stages. Local and standalone masters only: the
status store is reached through py4j, which Spark Connect (Databricks serverless) does not offer,
so there the figures are None with the reason.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from pyspark.sql import SparkSession

MB = 1024 * 1024
DELTA_PREFIX = "Delta:"  # Delta describes its own queries (log replay, snapshots, file listing) so
DELTA_SITES = ("DeltaTableOperations", "DatabricksLogging")  # history, commit bookkeeping
TOP_STAGES = 3
SKEW_MIN_SHARE = 0.05  # stages below this share of a step's task time are left out of max_skew
PLAN_OPERATORS = 8  # a stage's query: its first few physical operators, root first
_OPERATOR = re.compile(r"^[\s+:\-*]*([A-Z][A-Za-z]*(?: [A-Z][A-Za-z]*)*) \(\d+\)", re.M)


@dataclass(frozen=True)
class StageFigures:
    stage_id: int
    name: str
    query: str  # the SQL execution it ran for: its description and operators (AQE's final plan)
    tasks: int
    task_seconds: float
    shuffle_read_mb: float
    shuffle_write_mb: float
    spill_mb: float
    skew: float | None  # the slowest task's run time / the median task's (None: one task)


@dataclass(frozen=True)
class StepMetrics:
    jobs: int
    stages: int  # stages that ran (skipped ones, reused shuffle output, not counted)
    tasks: int
    task_seconds: float  # executor run time summed over tasks
    delta_log_task_seconds: float  # of which Delta's own jobs (log replay, snapshots, listing)
    shuffle_read_mb: float
    shuffle_write_mb: float
    memory_spill_mb: float
    disk_spill_mb: float
    input_mb: float
    output_mb: float
    # the largest slowest/median task ratio over stages of >= 4 tasks holding >= SKEW_MIN_SHARE
    # of the step's task time
    max_skew: float | None
    heaviest: list[StageFigures] = field(default_factory=list)  # by task time, the top few

    def as_dict(self) -> dict:
        return asdict(self)


def _status_store(spark: SparkSession):
    return spark.sparkContext._jsc.sc().statusStore()


@contextmanager
def measured(spark: SparkSession, label: str) -> Iterator[str]:
    """Run the block's Spark jobs under a fresh job group; yields the group id."""
    context = spark.sparkContext
    group = f"larr-bench-{uuid.uuid4().hex[:12]}"
    context.setJobGroup(group, label, False)
    try:
        yield group
    finally:
        context._jsc.clearJobGroup()


def worst_skew(stages: list[tuple[int, float, float | None]]) -> float | None:
    """The largest skew of (tasks, task seconds, skew) stages with >= 4 tasks that hold at least
    SKEW_MIN_SHARE of the step's task time: in a stage of milliseconds one task that waited reads
    as a large ratio without delaying anything."""
    total = sum(seconds for _, seconds, _ in stages)
    weighty = [
        skew for tasks, seconds, skew in stages if tasks >= 4 and skew and seconds >= SKEW_MIN_SHARE * total
    ]
    return max(weighty) if weighty else None


def _skew(store, gateway, stage) -> float | None:
    """Slowest over median task run time of a stage's attempt (from the store's task summary)."""
    if stage.numCompleteTasks() < 2:
        return None
    quantiles = gateway.new_array(gateway.jvm.double, 2)
    quantiles[0], quantiles[1] = 0.5, 1.0
    summary = store.taskSummary(stage.stageId(), stage.attemptId(), quantiles)
    if not summary.isDefined():
        return None
    run_time = summary.get().executorRunTime()
    median, slowest = run_time.apply(0), run_time.apply(1)
    return round(slowest / max(median, 1.0), 2)


def _executions(spark: SparkSession, stage_ids: set[int]) -> dict[int, object]:
    """stage id -> the SQL execution (status store data) that ran it, newest executions first."""
    executions = spark._jsparkSession.sharedState().statusStore().executionsList()
    found: dict[int, object] = {}
    for index in reversed(range(executions.size())):
        if len(found) == len(stage_ids):
            break
        execution = executions.apply(index)
        stages = execution.stages().iterator()
        while stages.hasNext():
            stage_id = stages.next()
            if stage_id in stage_ids:
                found[stage_id] = execution
    return found


def _query(execution) -> str:
    """ "<description> | <operators of AQE's final plan, root first>"."""
    if execution is None:
        return ""
    plan = str(execution.physicalPlanDescription()).split("== Initial Plan ==")[0]
    operators = list(dict.fromkeys(_OPERATOR.findall(plan)))[:PLAN_OPERATORS]
    return f"{execution.description()} | {' < '.join(operators)}"


def _is_delta(stage, execution) -> bool:
    """Delta's own work: its queries describe themselves ("Delta: ..."), its history and commit
    bookkeeping run from its own call sites."""
    if execution is not None and str(execution.description()).startswith(DELTA_PREFIX):
        return True
    return any(site in str(stage.name()) for site in DELTA_SITES)


def stage_metrics(spark: SparkSession, group: str) -> StepMetrics | None:
    """The summed figures of every stage a job group ran; None where the store is out of reach."""
    try:
        store = _status_store(spark)
    except Exception:  # Spark Connect: no JVM on this side
        return None
    gateway = spark.sparkContext._gateway
    job_ids = spark.sparkContext.statusTracker().getJobIdsForGroup(group)
    stage_ids = set()
    for job_id in job_ids:
        ids = store.job(job_id).stageIds()
        stage_ids.update(ids.apply(i) for i in range(ids.size()))
    executions = _executions(spark, stage_ids)
    stages, delta_seconds = [], 0.0
    totals = dict.fromkeys(("tasks", "run_ms", "read", "write", "memory", "disk", "input", "output"), 0.0)
    for stage_id in sorted(stage_ids):
        stage = store.lastStageAttempt(stage_id)
        if str(stage.status()) == "SKIPPED":
            continue
        run_seconds = stage.executorRunTime() / 1000
        if _is_delta(stage, executions.get(stage_id)):
            delta_seconds += run_seconds
        totals["tasks"] += stage.numCompleteTasks()
        totals["run_ms"] += stage.executorRunTime()
        totals["read"] += stage.shuffleReadBytes()
        totals["write"] += stage.shuffleWriteBytes()
        totals["memory"] += stage.memoryBytesSpilled()
        totals["disk"] += stage.diskBytesSpilled()
        totals["input"] += stage.inputBytes()
        totals["output"] += stage.outputBytes()
        stages.append((stage, run_seconds))
    skews = {
        stage.stageId(): _skew(store, gateway, stage) for stage, _ in stages if stage.numCompleteTasks() >= 2
    }
    per_stage = [(stage.numCompleteTasks(), seconds, skews.get(stage.stageId())) for stage, seconds in stages]
    top = sorted(stages, key=lambda pair: -pair[1])[:TOP_STAGES]
    heaviest = [
        StageFigures(
            stage_id=stage.stageId(),
            name=str(stage.name()),
            query=_query(executions.get(stage.stageId())),
            tasks=stage.numCompleteTasks(),
            task_seconds=round(seconds, 2),
            shuffle_read_mb=round(stage.shuffleReadBytes() / MB, 3),
            shuffle_write_mb=round(stage.shuffleWriteBytes() / MB, 3),
            spill_mb=round((stage.memoryBytesSpilled() + stage.diskBytesSpilled()) / MB, 3),
            skew=skews.get(stage.stageId()),
        )
        for stage, seconds in top
    ]
    return StepMetrics(
        jobs=len(job_ids),
        stages=len(stages),
        tasks=int(totals["tasks"]),
        task_seconds=round(totals["run_ms"] / 1000, 2),
        delta_log_task_seconds=round(delta_seconds, 2),
        shuffle_read_mb=round(totals["read"] / MB, 3),
        shuffle_write_mb=round(totals["write"] / MB, 3),
        memory_spill_mb=round(totals["memory"] / MB, 3),
        disk_spill_mb=round(totals["disk"] / MB, 3),
        input_mb=round(totals["input"] / MB, 3),
        output_mb=round(totals["output"] / MB, 3),
        max_skew=worst_skew(per_stage),
        heaviest=heaviest,
    )
