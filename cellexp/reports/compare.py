"""The figure of `cellexp.commands.compare`: a metric's mean and spread per configuration."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def plot_comparison(table: pd.DataFrame, metrics: list[str], keys: list[str], path: Path) -> Path:
    """One horizontal bar chart per metric, configurations in the table's order, error bars one std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [" ".join(str(row[k]) for k in keys) for _, row in table.iterrows()]
    height = 0.8 + 0.35 * len(labels)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), height), sharey=True, squeeze=False)
    positions = list(range(len(labels)))[::-1]
    for ax, metric in zip(axes[0], metrics, strict=True):
        ax.barh(positions, table[f"{metric} mean"], xerr=table[f"{metric} std"], color="#4c78a8", capsize=3)
        ax.set_title(metric)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(positions, labels)
    fig.suptitle(f"mean ± std over runs, by {', '.join(keys)}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
