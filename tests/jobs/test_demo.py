"""`make demo` / `make study` (jobs/demo.py): every step is a valid command, an interrupted run
continues after its last finished step and says so, and the closing tables read the real records."""

from __future__ import annotations

import json

import pytest

from jobs import demo
from jobs.cli import command_config, parse_args


@pytest.mark.parametrize("profile", sorted(demo.PROFILES))
def test_every_step_parses_and_its_config_loads(profile, tmp_path):
    for step in demo.PROFILES[profile]:
        args = parse_args([*step.args, "--lakehouse", str(tmp_path)])
        command_config(args._command, args)  # a typo in a --set key or a bad value fails here


def test_the_demo_covers_every_stage_once_with_three_models_on_one_seed():
    commands = [" ".join(arg for arg in step.args[:2] if not arg.startswith("--")) for step in demo.DEMO]
    for command in ("generate", "etl clean", "etl samples", "train cpt", "train contrastive", "embed scenes"):
        assert command in commands
    ctr = [step.args for step in demo.DEMO if step.args[:2] == ("train", "ctr")]
    assert [args[3] for args in ctr] == list(demo.DEMO_MODELS) == ["deepfm", "ple", "larr"]
    assert all("seeds=[1]" in args for args in ctr)
    assert len({step.key for step in demo.STUDY}) == len(demo.STUDY)  # keys identify steps
    # the study runs the defaults on its own world: no record of the demo's world counts for it
    assert not {step.key for step in demo.DEMO} & {step.key for step in demo.STUDY[:1]}


def test_the_study_gap_oracles_are_columns_its_world_writes():
    from etl.synthetic.impressions import TERM_COLUMNS

    generate = demo.STUDY[0].args
    assert generate[0] == "generate" and "world.semantic_terms=true" in generate
    assert set(demo.STUDY_ORACLES) <= {"semantic_logit", "collaborative_score", *TERM_COLUMNS}
    gap = next(step.args for step in demo.STUDY if step.args[0] == "gap")
    assert f"oracles=[{','.join(demo.STUDY_ORACLES)}]" in gap


def _profile(monkeypatch, *steps: demo.Step) -> None:
    monkeypatch.setitem(demo.PROFILES, "demo", list(steps))


@pytest.mark.slow  # five `larr` processes
def test_an_interrupted_run_continues_after_its_last_finished_step(tmp_path, monkeypatch, capsys):
    lakehouse = tmp_path / "lakehouse"
    report = demo.Step(("report", "--set", "min_seeds=1"))
    broken = demo.Step(("report", "--set", "min_seeds=0"))  # refused: a one-line error, exit code 2
    _profile(monkeypatch, report, broken)
    assert demo.run("demo", lakehouse) == 1
    out = capsys.readouterr()
    assert "failed (exit code 2)" in out.err and "re-run to continue" in out.err
    assert list(demo.Progress.load(lakehouse).done) == [report.key]

    fixed = demo.Step(("report", "--set", "min_seeds=2"))
    _profile(monkeypatch, report, fixed)
    assert demo.run("demo", lakehouse) == 0
    out = capsys.readouterr().out
    assert "continuing: 1 of 2 steps finished in an earlier run are skipped" in out
    assert f"== larr {report.key}: done earlier, skipped" in out
    assert f"== larr {fixed.key}\n" in out
    assert "larr demo finished in" in out
    done = demo.Progress.load(lakehouse).done
    assert list(done) == [report.key, fixed.key]
    assert f"larr {fixed.key}" in demo.timing_table([report, fixed], demo.Progress.load(lakehouse))

    # running an earlier step again forgets the ones after it (their inputs were rewritten)
    assert demo.run("demo", lakehouse, restart=True) == 0
    assert "continuing" not in capsys.readouterr().out


def test_the_models_table_reads_the_newest_report_record(tmp_path):
    runs = tmp_path / "_runs"
    runs.mkdir()
    assert demo.models_table(tmp_path) == "no `larr report` record yet"
    table2 = {
        "deepfm": {"seeds": 1, "ctr_auc": 0.75, "ctr_gauc": 0.61, "ctr_gap_to_bayes": -0.12},
        "p5": None,
        "bayes": {"bayes_auc_ctr": 0.87},
    }
    (runs / "report-20260101T000000000000Z.json").write_text(json.dumps({"table2": table2}))
    table = demo.models_table(tmp_path)
    assert "deepfm" in table and "0.7500" in table and "-0.1200" in table and "0.8700" in table
    assert "p5" not in table
