"""report.md's tables: Markdown from pandas frames, and the frames of per-label scores, label confusion and
score thresholds."""

from __future__ import annotations

from typing import Dict, Optional

import pandas as pd

from ..metrics import confusion_labels

COUNT_COLUMNS = frozenset({"support", "gold entities", "predicted entities", "kept", "correct"})


def md_table(frame: pd.DataFrame, counts: bool = False) -> str:
    """A Markdown table (pandas' to_markdown needs the tabulate package); `counts`: all cells are counts."""
    count_columns = set(frame.columns) if counts else COUNT_COLUMNS
    header = "| " + " | ".join(str(c) for c in [frame.index.name or ""] + list(frame.columns)) + " |"
    rule = "|" + "---|" * (len(frame.columns) + 1)
    rows = [
        "| " + " | ".join([str(i)] + [_cell(c, v, c in count_columns) for c, v in zip(frame.columns, row)]) + " |"
        for i, row in zip(frame.index, frame.values)
    ]
    return "\n".join([header, rule] + rows)


def _cell(column: str, value: object, count: bool) -> str:
    if column == "words/s":
        return f"{value:,.0f}"
    if isinstance(value, float) and not count:
        return f"{value:.3f}"
    return str(int(value)) if isinstance(value, (int, float)) else str(value)


def number_text(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def threshold_frame(confidence: dict) -> pd.DataFrame:
    frame = pd.DataFrame(
        [
            {"kept": row["kept"], "correct": row["correct"], "P": row["p"], "R": row["r"], "F": row["f"]}
            for row in confidence["thresholds"]
        ],
        index=[f"{row['min_score']:g}" for row in confidence["thresholds"]],
    )
    frame.index.name = "min score"
    return frame


def per_label_table(metrics: dict) -> pd.DataFrame:
    frame = pd.DataFrame(metrics["per_label"]).T[["p", "r", "f", "support"]]
    frame["support"] = frame["support"].astype(int)
    frame.index.name = "label"
    return frame


def confusion_table(confusion: Dict[str, Dict[str, int]]) -> pd.DataFrame:
    rows, cols = confusion_labels(confusion)
    frame = pd.DataFrame([[confusion.get(r, {}).get(c, 0) for c in cols] for r in rows], index=rows, columns=cols)
    frame.index.name = "gold \\ predicted"
    return frame
