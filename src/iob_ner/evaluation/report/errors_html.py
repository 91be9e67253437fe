"""training/errors.html: gold and predicted entities of the test documents side by side, most errors first."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import List, Sequence

from spacy import displacy

from ...util.colors import label_colors

MAX_ERROR_DOCS = 300  # errors.html shows the documents with the most errors first, up to this many


def write_errors_html(gold_docs: List, pred_docs: List, path: Path, model_labels: Sequence[str] = ()) -> int:
    """Gold and predicted entities side by side, the documents with the most errors first. Colours come from
    every label the model knows (`model_labels`) and the documents hold, as on the page of `serve`."""

    def errors(gold, pred) -> int:
        g = {(e.start, e.end, e.label_) for e in gold.ents}
        p = {(e.start, e.end, e.label_) for e in pred.ents}
        return len(g ^ p)

    ranked = sorted(range(len(gold_docs)), key=lambda i: -errors(gold_docs[i], pred_docs[i]))
    with_errors = sum(1 for i in ranked if errors(gold_docs[i], pred_docs[i]))
    labels = sorted({e.label_ for d in gold_docs + pred_docs for e in d.ents} | set(model_labels))
    options = {"ents": labels, "colors": label_colors(labels)}  # the colours of the page of `serve` too
    rows = []
    for i in ranked[:MAX_ERROR_DOCS]:
        count = errors(gold_docs[i], pred_docs[i])
        with warnings.catch_warnings():  # W006 "no entities to visualize": normal for a document here
            warnings.filterwarnings("ignore", message=r"\[W006\]")
            cells = [displacy.render(d, style="ent", page=False, options=options) for d in (gold_docs[i], pred_docs[i])]
        rows.append(
            f'<tr class="{"bad" if count else "ok"}"><td>#{i}<br>{count} error(s)</td>'
            f"<td>{cells[0]}</td><td>{cells[1]}</td></tr>"
        )
    page = f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>NER errors</title>
<style>body{{font-family:sans-serif}} table{{border-collapse:collapse}} td{{border-top:1px solid #ccc;vertical-align:top;padding:6px;width:45%}}
td:first-child{{width:8%;color:#555}} tr.bad td:first-child{{color:#b00}}</style></head><body>
<h1>Test documents: gold and predicted entities</h1>
<p>{with_errors} of {len(gold_docs)} documents have errors; shown first.
Showing {min(len(gold_docs), MAX_ERROR_DOCS)} documents.</p>
<table><tr><th></th><th>gold</th><th>predicted</th></tr>{"".join(rows)}</table></body></html>"""
    path.write_text(page, encoding="utf8")
    return with_errors
