"""audit against known mistakes: noise of our own injected into a clean export, then found or not.

A share of the entities of the train file (5 % by default) is corrupted, seeded, in three equal parts:
an entity removed, a boundary moved by one token (start or end, one token in or out), a spurious entity
added (on tokens outside every entity and not next to one, as long as a real entity, 1 to 3 tokens).
The corrupted places never touch each other. The noisy file is written in the export shape, converted
(dev carved from it, so every noisy document is audited; test is the corpus's own) and audited end to
end: crossval's k fold models, out-of-fold probabilities, cleanlab. Each ranking of the findings is then
scored against the injected errors:

- a finding hits an error when they share a document line (a finding's lines: its first to its last
  token; an error's: the tokens of its original and corrupted spans); each error is hit once at most;
- precision@N and recall@N at N = the number of errors injected (the same number: hits among the top N,
  over N), and the hits among the top N by kind of error;
- AUPRC: average precision over the whole ranking, (1/N) * sum of precision@k over the ranks k of hits
  (errors never found count as missed, so a short list cannot score high).

Rankings: `cleanlab` (the audit's: flagged by confident learning first, then the score, 1 - the mean of
cleanlab's self-confidence over the disputed tokens), `cleanlab-min` (the same with 1 - the lowest
instead of the mean), `cleanlab-score` (the score without the flags), cleanlab's two other token scores
(normalized margin, confidence-weighted entropy) with the flags, and `baseline` (the model's
disagreement alone: the same findings ranked by the highest probability the model gives its own tag).
The injected errors are written beside the result (`--errors`), with their lines in the noisy file.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import typer
from wasabi import msg

from iob_ner.audit import audit
from iob_ner.audit.findings import TOKEN_SCORES, iob2_classes, model_findings, ranked
from iob_ner.audit.locate import locate_corpus
from iob_ner.corpus.prepare import prepare_corpus
from iob_ner.experiments.common import write_json
from iob_ner.iob.documents import IobDocument
from iob_ner.iob.reader import located_documents, read_iob
from iob_ner.iob.writer import write_iob
from iob_ner.util.cli import parse_gpu_id
from iob_ner.util.errors import UserError
from iob_ner.util.runtime import cpu_name, library_versions

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("removed", "boundary", "spurious")


def _free(doc: IobDocument, used: set, start: int, end: int) -> bool:
    """Tokens [start, end) and one either side are outside every entity and every injected error."""
    taken = {i for s, e, _ in doc.spans for i in range(s - 1, e + 1)} | used
    return 0 <= start < end <= len(doc.words) and not any(i in taken for i in range(start, end))


def _moves(doc: IobDocument, span, used: set) -> List[Tuple[int, int]]:
    """The spans one token longer or shorter at either end that touch no other entity or error."""
    start, end, _ = span
    others = {i for s, e, _ in doc.spans if (s, e) != (start, end) for i in range(s - 1, e + 1)} | used
    moves = []
    if end - start > 1:
        moves += [(start + 1, end), (start, end - 1)]
    if start > 0 and start - 1 not in others and any(c.isalnum() for c in doc.words[start - 1]):
        moves.append((start - 1, end))
    if end < len(doc.words) and end not in others and any(c.isalnum() for c in doc.words[end]):
        moves.append((start, end + 1))
    return moves


def inject(docs: List[IobDocument], share: float, seed: int) -> List[dict]:
    """Corrupt `docs` in place; returns each error: kind, document, original and noisy span (None: absent)."""
    rng = random.Random(seed)
    entities = [(d, span) for d, doc in enumerate(docs) for span in doc.spans]
    n = round(share * len(entities))
    counts = {kind: n // 3 + (i < n % 3) for i, kind in enumerate(KINDS)}
    lengths = [min(e - s, 3) for _, (s, e, _) in entities]
    labels = [label for _, (_, _, label) in entities]
    used: Dict[int, set] = {}
    errors: List[dict] = []
    candidates = iter(rng.sample(entities, len(entities)))
    for kind in ("removed", "boundary"):
        while sum(e["kind"] == kind for e in errors) < counts[kind]:
            d, span = next(candidates)
            if used.get(d, set()) & set(range(span[0] - 1, span[1] + 1)):
                continue
            moves = _moves(docs[d], span, used.get(d, set())) if kind == "boundary" else [None]
            if not moves:
                continue
            move = rng.choice(moves)
            noisy = None if move is None else (move[0], move[1], span[2])
            errors.append(_apply(docs[d], d, kind, span, noisy, used))
    while sum(e["kind"] == "spurious" for e in errors) < counts["spurious"]:
        d = rng.randrange(len(docs))
        length = rng.choice(lengths)
        start = rng.randrange(max(1, len(docs[d].words) - length + 1))
        words = docs[d].words[start : start + length]
        if _free(docs[d], used.get(d, set()), start, start + length) and all(w[:1].isalpha() for w in words):
            errors.append(_apply(docs[d], d, "spurious", None, (start, start + length, rng.choice(labels)), used))
    return errors


def _apply(doc: IobDocument, d: int, kind: str, original, noisy, used: Dict[int, set]) -> dict:
    doc.spans = sorted([s for s in doc.spans if s != original] + ([noisy] if noisy else []))
    region = [i for span in (original, noisy) if span for i in range(span[0], span[1])]
    used.setdefault(d, set()).update(range(min(region) - 1, max(region) + 2))
    return {"kind": kind, "document": d, "original": original, "noisy": noisy, "tokens": sorted(set(region))}


def write_noisy(docs: Sequence[IobDocument], errors: List[dict], path: Path) -> None:
    """The noisy export (one sentence a document, as NCBI-disease), and each error's lines in it."""
    with path.open("w", encoding="utf8", newline="") as out:
        write_iob(out, ((d.words, d.spans, d.sent_starts) for d in docs), docstart=False, newline="\n")
    lines = [token_lines for _, token_lines in located_documents(path)]
    for error in errors:
        error["lines"] = [lines[error["document"]][t] for t in error["tokens"]]


def score(ranking: Sequence[dict], errors: Sequence[dict], file: Path) -> dict:
    """precision@N, recall@N (N = errors injected), AUPRC and hits by kind of the ranking."""
    by_line: Dict[int, List[int]] = {}
    for k, error in enumerate(errors):
        for line in error["lines"]:
            by_line.setdefault(line, []).append(k)
    found, hits, precision_sum, at_n = set(), [], 0.0, Counter()
    for rank, finding in enumerate(ranking, 1):
        lines = range(finding["line"], finding["end_line"] + 1) if Path(finding["file"]).resolve() == file else ()
        hit = next((k for line in lines for k in by_line.get(line, ()) if k not in found), None)
        if hit is not None:
            found.add(hit)
            precision_sum += len(found) / rank
            at_n[errors[hit]["kind"]] += rank <= len(errors)
        hits.append(hit is not None)
    n = len(errors)
    kinds = Counter(errors[k]["kind"] for k in found)
    return {
        "precision_at_n": round(sum(hits[:n]) / n, 4),
        "recall_at_n": round(sum(hits[:n]) / n, 4),
        "auprc": round(precision_sum / n, 4),
        "recall_all_findings": round(len(found) / n, 4),
        "found_at_n_by_kind": {kind: at_n[kind] for kind in KINDS},
        "found_by_kind": {kind: kinds[kind] for kind in KINDS},
        "findings": len(ranking),
    }


def rankings(result: dict, corpus: Path) -> Dict[str, List[dict]]:
    findings = result["findings"]
    located = locate_corpus(corpus, {})
    audited = located["train"] + located["dev"]
    classes = iob2_classes({label for doc in audited for _, _, label in doc.spans})
    lowest = [{**f, "min_score": 1 - min(t["quality"] for t in f["disputed"])} for f in findings]
    found = {
        "cleanlab": findings,
        "cleanlab-min": ranked(lowest, key="min_score"),
        "cleanlab-score": ranked(findings, flagged_first=False),
    }
    for method in TOKEN_SCORES[1:]:
        found[f"cleanlab-{method}"] = model_findings(audited, result["predictions"], classes, method)[0]
    found["baseline"] = ranked(findings, key="baseline_score", flagged_first=False)
    return found


def main(
    train: Path = typer.Option(..., exists=True, help="A clean IOB export (NCBI-disease train.tsv)"),
    test: Path = typer.Option(..., exists=True, help="Its test file (not audited: the corpus needs one)"),
    work: Path = typer.Option(Path("runs/audit"), help="Folder for the noisy file, corpus, models and audit"),
    output: Path = typer.Option(Path("runs/audit.json")),
    errors_output: Path = typer.Option(Path("runs/audit-errors.json"), "--errors"),
    limit: int = typer.Option(0, help="Only the first LIMIT documents of the train file (0: all)"),
    share: float = typer.Option(0.05, help="Share of the entities corrupted"),
    seed: int = typer.Option(0),
    folds: int = typer.Option(4),
    max_steps: int = typer.Option(300),
    eval_frequency: int = typer.Option(100),
    transformer: str = typer.Option("embedded"),
    gpu_id: str = typer.Option("auto"),
    threads: int = typer.Option(0, help="torch CPU threads (0: torch's default); 1 is faster on a shared CPU"),
) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)
    began, load_before = time.perf_counter(), os.getloadavg()
    docs = list(read_iob(train))[: limit or None]
    errors = inject(docs, share, seed)
    work.mkdir(parents=True, exist_ok=True)
    noisy = work / "noisy-train.tsv"
    write_noisy(docs, errors, noisy)
    try:
        prepare_corpus(train=noisy, dev="auto", test=str(test), output=work / "corpus", seed=seed)
        result = audit(
            config=ROOT / "configs" / "config.cfg",
            corpus=work / "corpus",
            output=work / "audit",
            crossval_dir=work / "crossval",
            read_options={},
            folds=folds,
            seed=seed,
            top=len(errors),
            transformer=transformer,
            gpu_id=parse_gpu_id(gpu_id),
            max_steps=max_steps,
            eval_frequency=eval_frequency,
        )
    except UserError as err:
        msg.fail(str(err), exits=1)
    scores = {name: score(r, errors, noisy.resolve()) for name, r in rankings(result, work / "corpus").items()}
    crossval = json.loads((work / "crossval" / "crossval.json").read_text(encoding="utf8"))
    record = {
        "corpus": {
            "train": str(train),
            "limit": limit,
            "documents": len(docs),
            "entities": sum(len(d.spans) for d in docs),
        },
        "noise": {"share": share, "seed": seed, "injected": len(errors), "by_kind": Counter(e["kind"] for e in errors)},
        "settings": {
            "folds": folds,
            "max_steps": max_steps,
            "eval_frequency": eval_frequency,
            "transformer": transformer,
        },
        "crossval_typed_f": crossval["summary"]["typed_f"],
        "device": result["device"],
        "cpu": cpu_name(),
        "torch_threads": torch.get_num_threads(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "versions": library_versions("cleanlab", "numpy"),
        "audit_seconds": result["seconds"],
        "model_seconds": result["model_seconds"],
        "seconds": round(time.perf_counter() - began, 1),
        "audit": {k: result[k] for k in ("model_findings", "by_kind", "flagged", "flagged_tokens", "inconsistencies")},
        "scores": scores,
    }
    write_json(output, record)
    write_json(errors_output, {"noisy_file": str(noisy), "errors": errors})
    msg.table(
        [(name, s["precision_at_n"], s["recall_at_n"], s["auprc"], s["findings"]) for name, s in scores.items()],
        header=("ranking", f"P@{len(errors)}", f"R@{len(errors)}", "AUPRC", "findings"),
        divider=True,
    )


if __name__ == "__main__":
    typer.run(main)
