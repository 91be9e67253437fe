"""The colour of each entity label: one mapping for every view that highlights entities, so a label looks
the same in training/errors.html (displaCy) and on the page of `serve` (which reads it from /info)."""

from typing import Dict, Iterable

# displaCy's light backgrounds, on which its black text and label tags stay readable
PALETTE = ["#7aecec", "#bfeeb7", "#feca74", "#ff9561", "#aa9cfc", "#c887fb", "#9cc9cc", "#ffeb80", "#ff8197", "#f0d0ff"]


def label_colors(labels: Iterable[str]) -> Dict[str, str]:
    """label -> background colour: the palette in the labels' sorted order (repeating after ten), so that
    the same set of labels gets the same colours wherever it is shown, whatever order it came in."""
    return {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(sorted(set(labels)))}
