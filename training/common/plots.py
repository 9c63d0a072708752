"""Plots shared by the report, the gap study and the case study: AUC per model (mean over seeds,
error bar = std) against the Bayes-optimal ceiling, sweeps like the paper's Figure 4 (AUC against
the alignment temperature or the alignment negative sampling ratio), curves against the data size
(`larr gap`) and grouped bars (`larr casestudy`: a score per encoder and scene group)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def _save(fig, title: str, path: str | Path) -> str:
    """Title, layout and PNG of a finished figure; the figure is closed. Returns the path."""
    import matplotlib.pyplot as plt

    fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def plot_sweep(
    title: str,
    x_label: str,
    xs: Sequence[float],
    means: Sequence[float] | Mapping[str, Sequence[float]],
    stds: Sequence[float] | Mapping[str, Sequence[float]],
    path: str | Path,
    log_x: bool = False,
) -> str:
    """A PNG with one panel per series (e.g. {"CTR AUC": [...], "CTCVR AUC": [...]}: the two AUCs
    live on different scales), error bars from `stds` (nan = one seed, no bar). Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    series_means = dict(means) if isinstance(means, Mapping) else {"AUC": means}
    series_stds = dict(stds) if isinstance(stds, Mapping) else {"AUC": stds}
    if set(series_means) != set(series_stds):
        raise ValueError(f"plot_sweep: means {sorted(series_means)} and stds {sorted(series_stds)} differ")
    x = np.asarray(xs, dtype=float)
    order = np.argsort(x)
    fig, axes = plt.subplots(1, len(series_means), figsize=(4.5 * len(series_means), 3.5), squeeze=False)
    for ax, (label, mean) in zip(axes[0], series_means.items(), strict=True):
        m, s = np.asarray(mean, dtype=float), np.asarray(series_stds[label], dtype=float)
        if not len(m) == len(s) == len(x):
            raise ValueError(f"plot_sweep: {label}: {len(x)} xs, {len(m)} means, {len(s)} stds")
        ax.errorbar(x[order], m[order], yerr=np.nan_to_num(s[order]), marker="o", capsize=4)
        if log_x:
            ax.set_xscale("log")
            ax.minorticks_off()
        ax.set_xticks(x[order], [f"{v:g}" for v in x[order]])
        ax.set(xlabel=x_label, ylabel=label)
        ax.grid(alpha=0.3)
    return _save(fig, title, path)


def plot_auc_bars(
    title: str,
    labels: Sequence[str],
    means: Mapping[str, Sequence[float]],
    stds: Mapping[str, Sequence[float]],
    ceilings: Mapping[str, float | None],
    path: str | Path,
) -> str:
    """A PNG with one panel per series (e.g. {"CTR AUC": [...], "CTCVR AUC": [...]}): a bar per
    label (model) at its mean, error bar = std (nan = one seed, no bar), and the series' ceiling
    (the Bayes-optimal AUC; None = none) as a dashed line. The y axis starts just below the lowest
    bar or ceiling (AUCs differ in the second decimal). Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if set(means) != set(stds):
        raise ValueError(f"plot_auc_bars: means {sorted(means)} and stds {sorted(stds)} differ")
    x = np.arange(len(labels))
    fig, axes = plt.subplots(
        1, len(means), figsize=(max(4.5, 1.1 * len(labels) + 1.5) * len(means), 3.8), squeeze=False
    )
    for ax, (series, mean) in zip(axes[0], means.items(), strict=True):
        m, s = np.asarray(mean, dtype=float), np.nan_to_num(np.asarray(stds[series], dtype=float))
        if not len(m) == len(s) == len(labels):
            raise ValueError(f"plot_auc_bars: {series}: {len(labels)} labels, {len(m)} means, {len(s)} stds")
        ax.bar(x, m, yerr=s, capsize=4, color="tab:blue", alpha=0.8)
        ceiling = ceilings.get(series)
        shown = [*(m - s)[np.isfinite(m)], *(m + s)[np.isfinite(m)]]
        if ceiling is not None and np.isfinite(ceiling):
            ax.axhline(ceiling, color="tab:red", linestyle="--", label=f"Bayes-optimal {ceiling:.4f}")
            ax.legend(loc="lower right", fontsize=8)
            shown.append(ceiling)
        if shown:
            ax.set_ylim(max(0.0, min(shown) - 0.02), max(shown) + 0.02)
        ax.set_xticks(x, list(labels), rotation=20)
        ax.set(ylabel=series)
        ax.grid(axis="y", alpha=0.3)
    return _save(fig, title, path)


def plot_curves(
    title: str,
    x_label: str,
    y_label: str,
    curves: Mapping[str, Sequence[tuple[float, float, float]]],
    ceiling: Sequence[tuple[float, float]],
    path: str | Path,
    dotted=lambda label: False,
) -> str:
    """A PNG with every curve on one log-x axis: (x, mean, std) points per label (error bar = std),
    `dotted(label)` ones dotted, and the ceiling's (x, value) points as a dashed black line (the
    Bayes AUC of each data size). Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    if ceiling:
        xs, ys = zip(*sorted(ceiling), strict=True)
        ax.plot(xs, ys, "k--", marker="o", label="Bayes")
    for label, points in curves.items():
        xs, ys, errors = zip(*sorted(points), strict=True)
        style = ":" if dotted(label) else "-"
        ax.errorbar(xs, ys, yerr=errors, linestyle=style, marker="o", capsize=3, label=label)
    ax.set_xscale("log")
    ax.set(xlabel=x_label, ylabel=y_label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, title, path)


def plot_grouped_bars(
    title: str,
    y_label: str,
    groups: Sequence[str],
    values: Mapping[str, Sequence[float]],
    path: str | Path,
    reference: Sequence[float] | None = None,
    reference_label: str = "",
) -> str:
    """A PNG with one cluster of bars per group (x axis) and one bar per series of `values` in each
    (e.g. an encoder's precision per scene group); `reference` (one value per group, e.g. what a
    random pick scores) is a black tick across each cluster. Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.arange(len(groups))
    width = 0.8 / max(1, len(values))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(groups) * max(1, len(values)) ** 0.5 + 2), 3.8))
    for i, (series, ys) in enumerate(values.items()):
        if len(ys) != len(groups):
            raise ValueError(f"plot_grouped_bars: {series}: {len(groups)} groups, {len(ys)} values")
        ax.bar(x - 0.4 + width * (i + 0.5), np.asarray(ys, dtype=float), width, label=series)
    if reference is not None:
        if len(reference) != len(groups):
            raise ValueError(f"plot_grouped_bars: {len(groups)} groups, {len(reference)} reference values")
        ax.hlines(
            reference, x - 0.42, x + 0.42, colors="black", linestyles="--", label=reference_label or None
        )
    ax.set_xticks(x, list(groups))
    ax.set(ylabel=y_label)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, title, path)
