"""Plot helpers: each takes data and returns a matplotlib Figure; none shows or saves."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

STYLE = {"figure.dpi": 100, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
         "axes.spines.right": False, "font.size": 10}


def _figure(ncols: int = 1, width: float = 5.0, height: float = 3.6) -> tuple[Figure, list]:
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
    plt.close(fig)  # hand the figure to the caller; Jupyter displays it when returned
    return fig, list(axes[0])


def _mark_steps(ax, marks: dict[str, int | None]) -> None:
    for (label, step), color in zip(marks.items(), ("tab:blue", "tab:orange", "tab:green")):
        if step:
            ax.axvline(step, ls="--", lw=1, color=color, label=f"{label} = {step}")


def plot_training_curves(metrics: pd.DataFrame, marks: dict[str, int | None] | None = None,
                         title: str = "") -> Figure:
    """Return loss (log-log) and accuracy (log x) curves for train and test, with optional step marks."""
    fig, (ax_loss, ax_acc) = _figure(2)
    m = metrics[metrics.step > 0]
    for split, color in (("train", "tab:blue"), ("test", "tab:orange")):
        ax_loss.plot(m.step, m[f"{split}_loss"], color=color, label=split)
        ax_acc.plot(m.step, m[f"{split}_acc"], color=color, label=split)
    ax_loss.set(xscale="log", yscale="log", xlabel="step", ylabel="cross-entropy loss", title="loss")
    ax_acc.set(xscale="log", xlabel="step", ylabel="accuracy", ylim=(-0.02, 1.02), title="accuracy")
    _mark_steps(ax_acc, marks or {})
    ax_loss.legend(), ax_acc.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_metric(metrics: pd.DataFrame, column: str, marks: dict[str, int | None] | None = None,
                logx: bool = True) -> Figure:
    """Return one metric (e.g. weight_norm) against step, with optional step marks."""
    fig, (ax,) = _figure(1)
    m = metrics[metrics.step > 0] if logx else metrics
    ax.plot(m.step, m[column], color="tab:purple")
    ax.set(xscale="log" if logx else "linear", xlabel="step", ylabel=column, title=column)
    _mark_steps(ax, marks or {})
    if marks:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
