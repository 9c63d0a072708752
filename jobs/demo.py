"""`make demo` and `make study`: every stage once in about 15 minutes, or today's full protocol.

    python -m jobs.demo demo  [--lakehouse DIR] [--restart]
    python -m jobs.demo study [--lakehouse DIR] [--restart]

Each step is one `larr` command run as its own process, as a user would type it. A step that
finished is recorded in `<lakehouse>/_demo/steps.json`, so an interrupted demo re-run continues
with the first step not yet done (a training step that was cut short resumes from its last
checkpoint, as every trainer does). Running a step forgets the records of the steps after it,
whose inputs it rewrites, and of the other profile's steps; `--restart` forgets them all. The
demo ends with each step's share of the time, a short table of the CTR models against the Bayes
ceiling and where to look next.

The demo runs the defaults of `jobs/*.yaml` on a world half the default size, with shorter LLM
stages (stage 2 without the base model's evaluation), and the CTR models on one seed. The study
runs the defaults: the data and both LLM stages, the ablation encoders, `larr tune` for every ID
model (LARR's ablations at its chosen settings) over the configured seeds, P5, the sweeps, the
bring-your-own-logs example and the report.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.paths import BASE_MODEL, REPO_ROOT, default_lakehouse
from core.tracking import FULL_METHOD
from training.ctr.names import CTR_ABLATIONS, DEEPFM, ID_MODELS, LARR, P5, PLE

SCENE = "a user visiting Chengdu on vacation"
DEMO_MODELS = (DEEPFM, PLE, LARR)
# Spark's and the JVM's start-up chatter; the commands' own lines and their JSON pass through
NOISE = re.compile(
    r"^(WARNING|Using Spark|Setting default|To adjust|\s*$|[0-9/]+ [0-9:]+ (WARN|INFO)"
    r"|Downloading artifacts|Loading weights|.*UserWarning|\s+color_warning\()"
)
LINE_END = re.compile(rb"(?<=[\r\n])")  # progress bars redraw with \r: pass them on as they come


@dataclass(frozen=True)
class Step:
    args: tuple[str, ...]  # the `larr` command line, without --lakehouse
    lakehouse: str = ""  # a sub-folder of the lakehouse ("byo": the bring-your-own-logs example)
    quiet: bool = False  # print only the command's last line (its JSON summary)

    @property
    def key(self) -> str:
        return " ".join(self.args) + (f" @{self.lakehouse}" if self.lakehouse else "")


def _steps(*lines: str | tuple[str, ...]) -> list[Step]:
    return [Step(tuple(line.split()) if isinstance(line, str) else line) for line in lines]


DATA = _steps(
    "generate --set world.semantic_terms=true",  # the semantic logit's terms: the study's gap oracles
    "etl clean",
    "etl corpus",
    "etl pairs",
    "features scene",
    "features stats",
    "etl samples",
)
LLM = _steps(
    "train cpt",
    "train contrastive",
    "embed scenes",
    "embed texts",  # the POI vectors the case study recalls from, and LARR+'s user and POI vectors
)
RECALL = Step(("recall", "--scene", SCENE))
CASESTUDY = Step(("casestudy",))  # the case study scored for the four encoders of the two stages
# The demo's world is half the default one (1,500 users, 360 shops, 120,000 impressions) and its LLM
# stages take 8 steps with smaller held-out pools: sized from the steps' measured seconds
# (docs/commands.md) to finish in about 15 minutes on 2 cores.
DEMO_WORLD = (
    "--set",
    "world.users=1500",
    "--set",
    "world.pois=360",
    "--set",
    "world.impressions_per_day=15000",
)
DEMO = [
    Step(("generate", *DEMO_WORLD)),
    *DATA[1:],
    *_steps(
        "train cpt --set max_steps=8 --set heldout_max_rows=16",
        # the untouched model's figures belong to the study
        "train contrastive --set base_model= --set max_steps=8 --set eval_max_pairs=40 --set probe_max_pois=100",
        "embed scenes --set partitions=1",  # 46 texts: one worker loading the encoder beats two
        "embed texts --set sides=[poi]",  # the POI vectors the case study recalls from
    ),
    *_steps(*(f"train ctr --model {model} --set seeds=[1]" for model in DEMO_MODELS)),
    RECALL,
    # the demo trains one encoder: its case-study precision against random
    Step(("casestudy", "--set", "encoders={full: latest:contrastive}")),
    *_steps("report --set min_seeds=1"),
]
STUDY_ORACLES = (
    "semantic_logit",
    "semantic_scene_x_dish",
    "semantic_rain_x_distance",
    "semantic_taste_x_dish",
    "collaborative_score",
)
SCENE_PAIR_STAGE2 = "--set weight_scene_poi=4 --set max_steps=150 --set base_model="
STUDY = [
    *DATA,
    *LLM,
    *_steps(
        f"train contrastive --set ablation=no_cpt --set backbone={BASE_MODEL}",
        "train contrastive --set ablation=no_ft",
        f"train contrastive --set ablation=base --set backbone={BASE_MODEL}",  # for the case study
        "embed scenes --set encoder=latest:contrastive/no_cpt",
        "embed scenes --set encoder=latest:contrastive/no_ft",
        # every ID model tuned with the same budget on validation; LARR's ablations at its choice
        *(f"tune --model {model}" for model in ID_MODELS if model != LARR),
        "tune --model {} --set final_ablations=[{}]".format(
            LARR, ",".join(a for a in CTR_ABLATIONS if a != FULL_METHOD)
        ),
        f"train ctr --model {P5}",
        "sweep --set seeds=[1]",
        # where the gap to Bayes goes: PLE with the truth's oracles (the semantic logit, the part of it
        # a scene and a shop's text reveal, the rain x distance and taste x dish parts, the latent
        # factors), LARR's semantic capture and its share of each oracle's gain
        f"gap --set oracles=[{','.join(STUDY_ORACLES)}]",
    ),
    Step(("etl", "ingest", "--set", "mapping=tests/data/byo/mapping.yaml"), lakehouse="byo", quiet=True),
    Step(("etl", "clean"), lakehouse="byo", quiet=True),
    # The case study's two stage-2 encoders, trained after every CTR run (Table 2 keeps the paper's
    # encoder): with the scene pairs (beyond the paper) for 150 steps, the recipe that recalls the
    # visited province's speciality where the paper's three pair types stay at random
    # (docs/benchmarks.md); they become latest:contrastive and latest:contrastive/no_cpt
    *_steps(
        f"train contrastive --set ablation=no_cpt --set backbone={BASE_MODEL} {SCENE_PAIR_STAGE2}",
        f"train contrastive {SCENE_PAIR_STAGE2}",
    ),
    RECALL,
    CASESTUDY,
    *_steps("report"),
]
PROFILES = {"demo": DEMO, "study": STUDY}
# measured on this project's 2-core machine (docs/benchmarks.md); said up front, not promised
EXPECTED = {
    "demo": "about 15 minutes on 2 cores after set-up",
    # the same steps as the full demo of 2026-11-29, which took 2,569 s (docs/benchmarks.md)
    "study": "about 2 hours on 2 cores (its own, larger world: the demo's tables are replaced)",
}


@dataclass
class Progress:
    """The steps that finished (either profile), kept in the lakehouse beside the tables they wrote."""

    path: Path
    done: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def load(cls, lakehouse: Path) -> Progress:
        path = lakehouse / "_demo" / "steps.json"
        done = json.loads(path.read_text())["done"] if path.is_file() else {}
        return cls(path, done)

    def finish(self, step: Step, seconds: float) -> None:
        finished = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.done[step.key] = {"seconds": round(seconds, 1), "finished": finished}
        self._save()

    def forget_after(self, steps: Sequence[Step], index: int) -> None:
        """Step `index` is about to run: it rewrites the inputs of every later step, and a step of
        another profile not among this one's earlier steps may have read other inputs."""
        keep = {step.key for step in steps[:index]}
        if self.done.keys() - keep:
            self.done = {key: value for key, value in self.done.items() if key in keep}
            self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"done": self.done}, indent=1) + "\n")
        tmp.replace(self.path)  # atomic: a kill leaves the old or the new record


class StepFailed(RuntimeError):
    pass


def _larr(step: Step, lakehouse: Path) -> list[str]:
    target = lakehouse / step.lakehouse if step.lakehouse else lakehouse
    return [sys.executable, "-m", "jobs.cli", *step.args, "--lakehouse", str(target)]


def run_step(step: Step, lakehouse: Path) -> float:
    """Run one `larr` command, streaming its lines without Spark's chatter; its seconds."""
    started = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    last = ""

    def echo(piece: bytes) -> None:
        nonlocal last
        text = piece.decode(errors="replace")
        ends_a_bar = text == "\n" and last.endswith("\r")  # a finished progress bar keeps its line
        if NOISE.match(text.strip("\r\n")) and not ends_a_bar:
            return
        last = text
        if not step.quiet:
            sys.stdout.write(text)
            sys.stdout.flush()

    with subprocess.Popen(
        _larr(step, lakehouse), cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as process:
        pending = b""
        while chunk := process.stdout.read1(1 << 16):
            *pieces, pending = LINE_END.split(pending + chunk)
            for piece in pieces:
                echo(piece)
        if pending:
            echo(pending)
        rc = process.wait()
    if step.quiet and last:
        print(last.rstrip("\r\n"), flush=True)
    if rc != 0:
        raise StepFailed(f"`larr {step.key}` failed (exit code {rc}); fix it and re-run to continue from it")
    return time.perf_counter() - started


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def timing_table(steps: Sequence[Step], progress: Progress) -> str:
    total = sum(progress.done[s.key]["seconds"] for s in steps if s.key in progress.done)
    lines = [f"{'seconds':>8} {'share':>6}  step"]
    for step in steps:
        if step.key in progress.done:
            seconds = progress.done[step.key]["seconds"]
            lines.append(f"{seconds:>8.1f} {seconds / max(total, 1e-9):>6.1%}  larr {step.key}")
    lines.append(f"{total:>8.1f} {'100%':>6}  all steps")
    return "\n".join(lines)


def models_table(lakehouse: Path) -> str:
    """DeepFM, PLE and LARR against the Bayes ceiling, from the newest `larr report` record."""
    records = sorted((lakehouse / "_runs").glob("report-*.json"))
    if not records:
        return "no `larr report` record yet"
    table2 = json.loads(records[-1].read_text()).get("table2") or {}
    bayes = (table2.get("bayes") or {}).get("bayes_auc_ctr")
    lines = [f"{'model':<10} {'CTR AUC':>8} {'CTR GAUC':>9} {'AUC - Bayes':>12}"]
    for model, cell in table2.items():
        if model == "bayes" or not cell:
            continue
        figures = [cell.get(metric) for metric in ("ctr_auc", "ctr_gauc", "ctr_gap_to_bayes")]
        auc, gauc, gap = ("-" if value is None else f"{value:.4f}" for value in figures)
        lines.append(f"{model:<10} {auc:>8} {gauc:>9} {gap:>12}")
    lines.append(
        f"{'Bayes':<10} {'-' if bayes is None else f'{bayes:.4f}':>8}  (the true click probabilities)"
    )
    return "\n".join(lines)


def where_next(profile: str, lakehouse: Path) -> str:
    return "\n".join(
        [
            "where to look next:",
            f"  make mlflow          MLflow's UI on {lakehouse}/mlflow.db: runs, curves, the report run",
            "  make notebooks       the tables, the experiments across seeds, the case study",
            f"  {lakehouse}/_reports/ctr_report.md   the report's tables and plots",
            *(["  make study           the full protocol: every model and ablation over 3 seeds"]
              if profile == "demo" else []),
        ]
    )  # fmt: skip


def run(profile: str, lakehouse: Path, restart: bool = False) -> int:
    steps = PROFILES[profile]
    progress = Progress.load(lakehouse)
    if restart:
        progress.forget_after(steps, 0)
    done = [s for s in steps if s.key in progress.done]
    print(
        f"larr {profile}: {len(steps)} steps into {lakehouse}, {EXPECTED[profile]}",
        flush=True,
    )
    if done:
        print(
            f"continuing: {len(done)} of {len(steps)} steps finished in an earlier run are skipped "
            f"(recorded in {progress.path}; --restart or `make clean` starts over)",
            flush=True,
        )
    started = time.perf_counter()
    for index, step in enumerate(steps):
        if step.key in progress.done:
            print(f"== larr {step.key}: done earlier, skipped", flush=True)
            continue
        progress.forget_after(steps, index)
        print(f"== larr {step.key}", flush=True)
        try:
            seconds = run_step(step, lakehouse)
        except StepFailed as err:
            print(f"larr {profile}: {err}", file=sys.stderr)
            return 1
        progress.finish(step, seconds)
    elapsed = time.perf_counter() - started
    print(f"\n== time per step (this and earlier runs)\n{timing_table(steps, progress)}")
    if profile == "demo":
        print(f"\n== the CTR models on the test day, one seed\n{models_table(lakehouse)}")
    print(f"\n{where_next(profile, lakehouse)}")
    print(f"\nlarr {profile} finished in {_minutes(elapsed)} ({elapsed:.0f} s) this run")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", choices=sorted(PROFILES))
    parser.add_argument(
        "--lakehouse", default=None, help="default $LARR_LAKEHOUSE or the checkout's lakehouse/"
    )
    parser.add_argument("--restart", action="store_true", help="forget finished steps and run them all")
    args = parser.parse_args(argv)
    lakehouse = Path(args.lakehouse or default_lakehouse()).expanduser().resolve()
    return run(args.profile, lakehouse, args.restart)


if __name__ == "__main__":
    sys.exit(main())
