"""The case study's report (`larr casestudy`): means per scene group with their standard error over
scenes, the last encoder's wins and losses against each other one, `casestudy.md` and the grouped
bar plot. Pure Python over the per-scene results (no Spark)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

RANDOM, IDEAL = "random", "ideal"
ALL = "all"

PER_SCENE_HEADER = "| group |"  # casestudy.md: the summary ends where the per-scene table starts


class Scene(Protocol):
    group: str
    text: str


def summarize(scenes: Sequence[Scene], per_encoder: dict[str, list[dict]]) -> dict:
    """Means per group and over all scenes (with the standard error over scenes), random and
    ideal, and the full (last) encoder's wins and losses against each other encoder."""
    groups = [*dict.fromkeys(s.group for s in scenes), ALL]

    def in_group(values: list[float], group: str) -> list[float]:
        return [v for v, s in zip(values, scenes, strict=True) if group in (ALL, s.group)]

    first = next(iter(per_encoder.values()))
    rows = {
        RANDOM: [r["random"] for r in first],
        IDEAL: [r["ideal"] for r in first],
        **{label: [r["precision"] for r in results] for label, results in per_encoder.items()},
    }
    means = {}
    for label, values in rows.items():
        means[label] = {}
        for group in groups:
            chosen = np.asarray(in_group(values, group), dtype=float)
            stderr = float(chosen.std(ddof=1) / np.sqrt(len(chosen))) if len(chosen) > 1 else None
            means[label][group] = {
                "mean": round(float(chosen.mean()), 4),
                "stderr": None if stderr is None else round(stderr, 4),
            }
    labels = list(per_encoder)
    last = labels[-1]
    against = {}
    for other in labels[:-1]:
        diff = np.asarray(rows[last]) - np.asarray(rows[other])
        against[other] = {
            "mean_difference": round(float(diff.mean()), 4),
            "wins": int((diff > 0).sum()),
            "losses": int((diff < 0).sum()),
            "ties": int((diff == 0).sum()),
        }
    return {"groups": groups, "means": means, "best": max(labels, key=lambda k: means[k][ALL]["mean"]),
            "last_against": {"encoder": last, "others": against}}  # fmt: skip


def write_report(
    folder: Path, scenes: Sequence[Scene], per_encoder: dict, summary: dict, top_k: int
) -> tuple[Path, Path]:
    from training.common.plots import plot_grouped_bars

    labels = [*per_encoder, RANDOM, IDEAL]
    groups = summary["groups"]
    lines = [f"# Case study: precision@{top_k} (share of the recalled shops that fit the scene)", ""]
    lines += ["| encoder | " + " | ".join(groups) + " |", "|---|" + "---|" * len(groups)]
    for label in labels:
        cells = []
        for group in groups:
            value = summary["means"][label][group]
            cells.append(
                f"{value['mean']:.3f}" + (f" ± {value['stderr']:.3f}" if value["stderr"] is not None else "")
            )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    duel = summary["last_against"]
    lines += ["", f"{duel['encoder']} against each other encoder, scene by scene:", ""]
    lines += [
        f"- {other}: {d['mean_difference']:+.3f} on average; better on {d['wins']}, worse on {d['losses']}, "
        f"tied on {d['ties']} of {len(scenes)} scenes"
        for other, d in duel["others"].items()
    ]
    lines += ["", PER_SCENE_HEADER + " scene | fitting shops | random | " + " | ".join(per_encoder) + " |"]
    lines.append("|---|---|---|---|" + "---|" * len(per_encoder))
    first = next(iter(per_encoder.values()))
    for i, scene in enumerate(scenes):
        values = " | ".join(f"{per_encoder[label][i]['precision']:.2f}" for label in per_encoder)
        lines.append(
            f"| {scene.group} | {scene.text} | {first[i]['fitting']} | {first[i]['random']:.3f} | {values} |"
        )
    table = folder / "casestudy.md"
    table.write_text("\n".join(lines) + "\n")
    plot = plot_grouped_bars(
        f"Case study: precision@{top_k} per scene group",
        f"precision@{top_k}",
        groups,
        {label: [summary["means"][label][g]["mean"] for g in groups] for label in per_encoder},
        folder / "casestudy.png",
        reference=[summary["means"][RANDOM][g]["mean"] for g in groups],
        reference_label=RANDOM,
    )
    return table, Path(plot)
