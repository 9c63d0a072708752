"""Sweep plots like the paper's Figure 4: AUC (mean over seeds, error bar = std) against the
alignment temperature or the alignment negative sampling ratio."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


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
    fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)
