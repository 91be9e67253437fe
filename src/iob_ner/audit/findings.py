"""Entity-level findings: where the out-of-fold model and the annotation disagree, scored by cleanlab.

Tags. The token_ner head gives each token a distribution over BILUO tags; the audit folds it into IOB2
classes (O, then B-label and I-label for each label: B = B + U, I = I + L), and the annotation into the
same classes, so that cleanlab compares like with like. IOB2 keeps "an entity starts here" apart from "an
entity goes on here", which a one-token boundary error changes.

Findings. In each document, the entities the model predicts (its Viterbi path, out of fold) that are not
exactly an annotated entity, and the annotated entities that are not exactly a predicted one, are
grouped where they overlap. Each group is one finding:

- `missing`: the model predicts an entity where the annotation has none (nothing annotated overlaps it);
- `spurious`: an annotated entity that the model predicts nothing over;
- `label`: the same tokens, another label;
- `boundary`: overlapping entities that start or end elsewhere (their labels may differ too).

Score (`SCORE_RULE`). The disputed tokens of a finding are those whose given IOB2 tag differs from the
suggested one. cleanlab's token label-quality score (`token_classification.rank.get_label_quality_scores`,
self-confidence by default: the probability of the given tag) is looked up for each, and the finding's
score is 1 - their mean: the expected share of the finding's disputed tags that are wrong. (The mean is
cleanlab's `softmin` aggregation at an infinite temperature; 1 - the lowest one, cleanlab's `min`, ranked
the errors injected into NCBI-disease lower: docs/audit.md.) A finding is `flagged` when cleanlab's confident learning
(`token_classification.filter.find_label_issues`, per-class thresholds) marks one of its disputed tokens
as a label issue. Ranking: flagged findings first, then by score. The `baseline_score` ranks the same
findings without cleanlab: the highest probability the model gives its own tag at a disputed token.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy

from ..iob.tags import Span, spans_to_tags
from ..util.errors import SetupError
from .locate import Located

TOKEN_SCORES = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")
KINDS = ("missing", "spurious", "label", "boundary")
SCORE_RULE = (
    "score = 1 - the mean cleanlab token label-quality score ({method}) of the finding's disputed tokens "
    "(those whose given IOB2 tag differs from the suggested one); flagged = cleanlab's find_label_issues marks one "
    "of them; ranked flagged first, then by score"
)
INSTALL = "pip install -r requirements-audit.txt"


@dataclass
class OutOfFoldPrediction:
    """The out-of-fold model's view of one document."""

    probabilities: numpy.ndarray  # tokens x IOB2 classes
    entities: List[Span]  # its predicted entities (the suggestion)


def require_cleanlab() -> None:
    try:
        import cleanlab  # noqa: F401
    except ImportError:
        raise SetupError(f"audit scores the annotation with cleanlab, which is not installed: {INSTALL}") from None


def check_token_score(method: str) -> None:
    if method not in TOKEN_SCORES:
        raise SetupError(f"token_score must be one of {', '.join(TOKEN_SCORES)}, not {method!r}")


def iob2_classes(labels) -> List[str]:
    return ["O"] + [f"{prefix}-{label}" for label in sorted(labels) for prefix in "BI"]


def biluo_to_iob2(tag_names: Sequence[str], classes: Sequence[str]) -> numpy.ndarray:
    """A 0/1 matrix (BILUO tags x IOB2 classes): probabilities @ it sums B+U into B and I+L into I."""
    index = {name: i for i, name in enumerate(classes)}
    matrix = numpy.zeros((len(tag_names), len(classes)), dtype="float64")
    for row, name in enumerate(tag_names):
        target = "O" if name == "O" else f"{'B' if name[0] in 'BU' else 'I'}-{name[2:]}"
        if target in index:  # why the check: a label the audited documents lack has no class to go to
            matrix[row, index[target]] = 1.0
    return matrix


def iob2_ids(spans: Sequence[Span], length: int, index: Dict[str, int]) -> numpy.ndarray:
    return numpy.array([index[tag] for tag in spans_to_tags(spans, length, "IOB2")], dtype="int64")


def disagreements(given: Sequence[Span], suggested: Sequence[Span]) -> List[Tuple[int, int, List[Span], List[Span]]]:
    """(start, end, given spans, suggested spans) of each group of overlapping entities that do not match exactly."""
    exact = set(given) & set(suggested)
    pending = sorted(
        [(s, e, l, 0) for s, e, l in given if (s, e, l) not in exact]
        + [(s, e, l, 1) for s, e, l in suggested if (s, e, l) not in exact]
    )
    groups: List[Tuple[int, int, List[Span], List[Span]]] = []
    for start, end, label, side in pending:
        if groups and start < groups[-1][1]:
            group = groups[-1]
            groups[-1] = (group[0], max(group[1], end), group[2], group[3])
        else:
            groups.append((start, end, [], []))
        groups[-1][2 + side].append((start, end, label))
    return groups


def kind_of(given: Sequence[Span], suggested: Sequence[Span]) -> str:
    if not given:
        return "missing"
    if not suggested:
        return "spurious"
    if len(given) == len(suggested) == 1 and given[0][:2] == suggested[0][:2]:
        return "label"
    return "boundary"


def cleanlab_scores(
    labels: List[numpy.ndarray], probabilities: List[numpy.ndarray], method: str
) -> Tuple[List[numpy.ndarray], set]:
    """cleanlab's label-quality score of every token, and the (document, token) pairs it flags as issues."""
    # here: cleanlab is audit's optional package (require_cleanlab says how to install it)
    from cleanlab.token_classification.filter import find_label_issues
    from cleanlab.token_classification.rank import get_label_quality_scores

    with warnings.catch_warnings():  # why: cleanlab warns for classes with few tokens; the report counts them
        warnings.simplefilter("ignore")
        _, token_scores = get_label_quality_scores(labels, probabilities, token_score_method=method)
        issues = find_label_issues(labels, probabilities, return_indices_ranked_by=method, n_jobs=1)
    return [numpy.asarray(s, dtype="float64") for s in token_scores], set(issues)


def model_findings(
    documents: Sequence[Located],
    predictions: Sequence[OutOfFoldPrediction],
    classes: Sequence[str],
    token_score: str = "self_confidence",
) -> Tuple[List[dict], dict]:
    """Every finding (ranked: flagged first, then by score), and counts of what cleanlab flagged."""
    check_token_score(token_score)
    index = {name: i for i, name in enumerate(classes)}
    labels = [iob2_ids(doc.spans, len(doc.words), index) for doc in documents]
    probabilities = [p.probabilities for p in predictions]
    quality, issues = cleanlab_scores(labels, probabilities, token_score)
    findings, explained = [], set()
    for i, (doc, prediction) in enumerate(zip(documents, predictions)):
        suggested_ids = iob2_ids(prediction.entities, len(doc.words), index)
        for start, end, given, suggested in disagreements(doc.spans, prediction.entities):
            disputed = [t for t in range(start, end) if labels[i][t] != suggested_ids[t]]
            explained.update((i, t) for t in disputed)
            tokens = [
                {
                    "token": t,
                    "word": doc.words[t],
                    "line": doc.lines[t],
                    "given": classes[labels[i][t]],
                    "suggested": classes[suggested_ids[t]],
                    "quality": round(float(quality[i][t]), 6),
                    "flagged": (i, t) in issues,
                }
                for t in disputed
            ]
            findings.append(
                {
                    "kind": kind_of(given, suggested),
                    "score": round(1.0 - sum(tok["quality"] for tok in tokens) / len(tokens), 6),
                    "flagged": any(tok["flagged"] for tok in tokens),
                    "baseline_score": round(max(float(probabilities[i][t, suggested_ids[t]]) for t in disputed), 6),
                    **_place(doc, i, start, end, given, suggested),
                    "disputed": tokens,
                }
            )
    counts = {"tokens": sum(len(d.words) for d in documents), "flagged_tokens": len(issues)}
    counts["flagged_tokens_outside_findings"] = len(issues - explained)
    ordered = ranked(findings)
    for number, finding in enumerate(ordered, 1):
        finding["rank"] = number
    return ordered, counts


def _place(doc: Located, index: int, start: int, end: int, given: List[Span], suggested: List[Span]) -> dict:
    def spans(group: List[Span]) -> List[dict]:
        return [{"start": s, "end": e, "label": l, "text": " ".join(doc.words[s:e])} for s, e, l in group]

    return {
        "file": doc.file,
        "line": doc.lines[start],
        "end_line": doc.lines[end - 1],
        "split": doc.split,
        "document": index,
        "start": start,
        "end": end,
        "text": " ".join(doc.words[start:end]),
        "given": spans(given),
        "suggested": spans(suggested),
    }


def ranked(findings: Sequence[dict], key: str = "score", flagged_first: bool = True) -> List[dict]:
    """`findings` in rank order: flagged first (with `flagged_first`), then by `key`, highest first; ties in
    document order."""
    return sorted(findings, key=lambda f: (-(f["flagged"] and flagged_first), -f[key], f["document"], f["start"]))
