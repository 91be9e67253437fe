"""report.md's plots: the learning curve, F per label, the reliability diagram and precision/recall against
the score threshold (PNG, written to the paths given). matplotlib is imported where a plot is drawn."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import pandas as pd

from .tables import number_text


def pyplot():
    """matplotlib's pyplot on the Agg backend (files only, no display); matplotlib is imported here, when a plot
    is drawn, so that the commands that draw none never load it. The one setup of every plot in the package."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curve(log: pd.DataFrame, path: Path) -> None:
    plt = pyplot()
    fig, loss_axis = plt.subplots(figsize=(7, 4))
    loss_axis.plot(log["step"], log["loss"], color="tab:gray", marker=".", label="training loss per step")
    loss_axis.set_xlabel("step")
    loss_axis.set_ylabel("loss per step")
    f_axis = loss_axis.twinx()
    f_axis.plot(log["step"], log["dev_f"], color="tab:blue", marker="o", label="dev F")
    f_axis.set_ylabel("dev entity F")
    f_axis.set_ylim(0, 1)
    fig.legend(loc="lower center", ncol=2, fontsize="small")
    fig.suptitle("Learning curve")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=100, format="png")  # `path` may be a temporary name without .png
    plt.close(fig)


def plot_per_label(per_label: Dict[str, pd.DataFrame], path: Path) -> None:
    plt = pyplot()
    frame = pd.DataFrame({split: table["f"] for split, table in per_label.items()})
    ax = frame.plot.barh(figsize=(7, 0.5 * len(frame) + 1.5), xlim=(0, 1))
    ax.set_xlabel("entity F")
    ax.set_title("F per label")
    ax.figure.tight_layout()
    ax.figure.savefig(path, dpi=100, format="png")
    plt.close(ax.figure)


def plot_reliability(confidence: dict, path: Path) -> None:
    """Accuracy against mean score per bin, before (T = 1) and after the temperature, over the diagonal;
    the light bars are each bin's share of the entities (after), with its count."""
    plt = pyplot()
    bins = confidence["reliability_after"]
    total = max(1, sum(row["count"] for row in bins))
    width = bins[0]["hi"] - bins[0]["lo"]
    fig, ax = plt.subplots(figsize=(6, 5.5))
    ax.bar(
        [row["lo"] for row in bins],
        [row["count"] / total for row in bins],
        width=width,
        align="edge",
        color="tab:blue",
        alpha=0.15,
        edgecolor="white",
        label="share of entities per bin (after)",
    )
    for row in bins:
        if row["count"]:
            ax.text(
                row["lo"] + width / 2,
                row["count"] / total + 0.01,
                str(row["count"]),
                ha="center",
                va="bottom",
                fontsize=7,
                color="tab:blue",
            )
    ax.plot([0, 1], [0, 1], linestyle="--", color="tab:gray", label="perfect calibration")
    temperature = confidence["temperature"]
    for key, label, color, style in (
        ("reliability_before", "before (T = 1)", "tab:orange", "s--"),
        ("reliability_after", f"after (T = {temperature:.3g})", "tab:blue", "o-"),
    ):
        rows = [row for row in confidence[key] if row["count"]]
        ax.plot(
            [row["confidence"] for row in rows],
            [row["accuracy"] for row in rows],
            style,
            color=color,
            label=label,
            markersize=5,
        )
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("entity score (mean in bin)")
    ax.set_ylabel("share of the bin's entities that are correct")
    ax.set_title(
        f"Reliability (test): ECE {number_text(confidence['ece_before'])} at T = 1, "
        f"{number_text(confidence['ece_after'])} at T = {temperature:.3g}",
        fontsize="medium",
    )
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def plot_thresholds(confidence: dict, path: Path) -> None:
    """Precision, recall and F of the entities kept at each min_score."""
    plt = pyplot()
    rows = confidence["thresholds"]
    x = [row["min_score"] for row in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    # different markers and dashes: where two lines coincide, both stay visible
    for key, label, color, style in (
        ("p", "precision", "tab:green", "o-"),
        ("r", "recall", "tab:red", "s--"),
        ("f", "F", "tab:blue", "^:"),
    ):
        # nothing kept: no precision to draw (the table's 0.0 with "kept 0")
        values = [float("nan") if key == "p" and not row["kept"] else row[key] for row in rows]
        ax.plot(x, values, style, color=color, label=label, markersize=5)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(0, 1.08)
    ax.set_xlabel("min_score: keep the entities scoring at least this")
    ax.set_ylabel("entity P / R / F (test)")
    ax.set_title("Precision and recall against the score threshold (test)", fontsize="medium")
    ax.legend(loc="lower left", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
