"""What `larr bench` reads from Spark's status store: a step's own stages (not another step's),
shuffle bytes, output, and the skew of a stage whose one task does nearly all the work."""

from pyspark.sql import functions as F

from benchmarks.etl import _profiled
from benchmarks.memory import peak_memory
from benchmarks.spark_metrics import measured, stage_metrics, worst_skew


def test_a_steps_stages_shuffle_and_output_are_its_own(spark, catalog):
    frame = spark.range(20_000, numPartitions=2).select((F.col("id") % 5000).alias("k"), "id")
    spark.range(10).count()  # another step's job: not counted below
    seconds, metrics = _profiled(
        spark, "grouped copy", lambda: catalog.write(frame.groupBy("k").count(), "t.g")
    )
    assert seconds > 0 and metrics is not None
    assert metrics["jobs"] >= 1 and metrics["stages"] >= 2  # the aggregation's map and reduce sides
    assert metrics["shuffle_write_mb"] > 0 and metrics["output_mb"] > 0
    assert metrics["busy"] > 0 and metrics["task_seconds"] > 0
    assert metrics["peak_memory"]["jvm_peak_rss_mb"] > 0
    assert (
        metrics["heaviest"]
        and metrics["heaviest"][0]["task_seconds"] >= metrics["heaviest"][-1]["task_seconds"]
    )

    # Delta's own jobs (the new table's snapshot) are told apart from the query's
    assert 0 < metrics["delta_log_task_seconds"] < metrics["task_seconds"]
    assert any("Exchange" in stage["query"] for stage in metrics["heaviest"]), metrics["heaviest"]

    with measured(spark, "nothing") as group:
        pass
    empty = stage_metrics(spark, group)
    assert (empty.jobs, empty.stages, empty.tasks) == (0, 0, 0)


def test_one_slow_task_shows_as_skew(spark):
    heavy = spark.range(0, 3_000_000, numPartitions=1)
    light = spark.range(0, 300, numPartitions=3)
    rows = heavy.union(light).select(F.max(F.xxhash64("id")))
    with measured(spark, "skewed") as group:
        rows.collect()
    metrics = stage_metrics(spark, group)
    assert metrics.max_skew is not None and metrics.max_skew > 3, metrics
    slow = metrics.heaviest[0]
    assert slow.tasks == 4 and slow.skew == metrics.max_skew


def test_skew_of_a_stage_that_costs_no_time_is_left_out():
    # (tasks, task seconds, slowest / median task): the 250x stage holds 0.6% of the time
    stages = [(8, 60.0, 1.4), (4, 0.6, 250.0), (2, 30.0, 9.0), (6, 9.4, 2.1)]
    assert worst_skew(stages) == 2.1
    assert worst_skew([(4, 1.0, 5.0), (4, 1.0, None)]) == 5.0
    assert worst_skew([(1, 10.0, None)]) is None and worst_skew([]) is None


def test_peak_memory_sees_a_steps_own_allocation(spark):
    jvm = spark.sparkContext._jvm
    with peak_memory(spark) as light:
        spark.range(10).count()
    with peak_memory(spark) as heavy:
        buffer = jvm.java.nio.ByteBuffer.allocate(256 * 1024 * 1024)  # on the JVM's heap
        jvm.java.lang.System.gc()  # whatever the collector, the live buffer ends in the old generation
    spark.sparkContext._gateway.detach(buffer)

    # not compared with the light step's figure: the collection may free other objects meanwhile
    assert heavy["jvm_old_gen_peak_mb"] >= 256, (light, heavy)
    assert heavy["jvm_peak_rss_mb"] > 0 and light["jvm_peak_rss_mb"] > 0
    assert 2_000 < heavy["jvm_heap_max_mb"] <= 3 * 1024  # the test session's 3g driver
    assert heavy["python_peak_rss_mb"] > 0
