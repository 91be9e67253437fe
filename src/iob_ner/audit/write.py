"""The audit's outputs: report.md (the top findings, readable), audit.jsonl (every finding) and
suggestions.tsv (the documents of the top findings with the suggestions applied, to import into UBIAI)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..iob.tags import Span
from ..iob.writer import write_iob
from ..util.outputs import atomic_outputs, remove
from .locate import Located

CONTEXT = 12  # tokens shown on each side of a finding, within its sentence
PLACES_SHOWN = 6  # places listed per inconsistency in report.md (audit.jsonl has all)
OUTPUTS = ("report.md", "audit.jsonl", "suggestions.tsv")


def applied(doc: Located, findings: Sequence[dict]) -> List[Span]:
    """The document's entities with the findings' suggestions in place of what was given."""
    dropped = {(s["start"], s["end"], s["label"]) for f in findings for s in f["given"]}
    added = [(s["start"], s["end"], s["label"]) for f in findings for s in f["suggested"]]
    return sorted([span for span in doc.spans if span not in dropped] + added)


def suggestion_documents(documents: Sequence[Located], top: Sequence[dict]) -> List[Tuple[int, List[Span]]]:
    """(document index, entities with the suggestions applied) of each document of the `top` findings, in the
    order of its best-ranked finding."""
    by_doc: Dict[int, List[dict]] = {}
    for finding in top:
        by_doc.setdefault(finding["document"], []).append(finding)
    return [(i, applied(documents[i], found)) for i, found in by_doc.items()]


def marked(words: Sequence[str], spans: Sequence[Span], lo: int, hi: int) -> str:
    """words[lo:hi] with each entity written [its words](LABEL); "..." where the sentence goes on."""
    out = ["..."] if lo > 0 else []
    opening = {s: (e, label) for s, e, label in spans if lo <= s < hi}
    i = lo
    while i < hi:
        if i in opening:
            end, label = opening[i]
            out.append(f"[{' '.join(words[i:end])}]({label})")
            i = end
        else:
            out.append(words[i])
            i += 1
    return " ".join(out + (["..."] if hi < len(words) else []))


def window(doc: Located, start: int, end: int) -> Tuple[int, int]:
    """The tokens to show around [start, end): its sentence(s), at most CONTEXT tokens either side."""
    bounds = list(doc.sent_starts) + [len(doc.words)]
    first = max(s for s in bounds[:-1] if s <= start)
    last = min(b for b in bounds[1:] if b >= end)
    return max(first, start - CONTEXT), min(last, end + CONTEXT)


def finding_block(finding: dict, doc: Located) -> List[str]:
    labels = sorted({s["label"] for s in finding["given"] + finding["suggested"]})
    flagged = ", flagged by cleanlab" if finding["flagged"] else ""
    lo, hi = window(doc, finding["start"], finding["end"])
    lo, hi = min(lo, finding["start"]), max(hi, finding["end"])
    return [
        f"**{finding['rank']}. {finding['kind']}** {'/'.join(labels)} · score {finding['score']:.3f}{flagged} · "
        f"`{finding['file']}:{finding['line']}`",
        "",
        "```text",
        f"given      {marked(doc.words, doc.spans, lo, hi)}",
        f"suggested  {marked(doc.words, applied(doc, [finding]), lo, hi)}",
        "```",
        "",
    ]


def inconsistency_rows(records: Sequence[dict], top: int) -> List[str]:
    rows = ["| words | annotations | places not annotated as the majority |", "| --- | --- | --- |"]
    for record in records[:top]:
        counts = ", ".join(f"{annotation} ×{n}" for annotation, n in record["counts"].items())
        others = [p for p in record["places"] if p["annotation"] != record["majority"]]
        shown = ", ".join(f"`{p['file']}:{p['line']}` ({p['annotation']})" for p in others[:PLACES_SHOWN])
        more = f" and {len(others) - PLACES_SHOWN} more" if len(others) > PLACES_SHOWN else ""
        words = record["tokens"].replace("|", "\\|")
        rows.append(f"| `{words}` | {counts} (majority: {record['majority']}) | {shown}{more} |")
    return rows


def write_outputs(
    output: Path,
    report: List[str],
    findings: Sequence[dict],
    inconsistencies: Sequence[dict],
    documents: Sequence[Located],
    suggested: Optional[Sequence[Tuple[int, List[Span]]]],
) -> None:
    """report.md, audit.jsonl and suggestions.tsv, all or none; `suggested` None (the consistency check alone):
    an earlier suggestions.tsv is removed, so that none is left beside a report it does not belong to."""
    paths = [output / name for name in OUTPUTS]
    with atomic_outputs(*paths) as (report_tmp, jsonl_tmp, tsv_tmp):
        report_tmp.write_text("\n".join(report) + "\n", encoding="utf8")
        with jsonl_tmp.open("w", encoding="utf8") as out:
            for record in list(findings) + list(inconsistencies):
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
        if suggested is not None:
            with tsv_tmp.open("w", encoding="utf8", newline="") as out:
                write_iob(out, ((documents[i].words, spans, documents[i].sent_starts) for i, spans in suggested))
    if suggested is None:
        remove(paths[2])
