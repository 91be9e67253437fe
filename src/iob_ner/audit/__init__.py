"""`audit`: the places of an export most likely to be annotated wrong, with where to find them.

Two checks. With a model: each train and dev document is predicted by a crossval fold model that never
trained on it (the k models of `crossval`, reused when they were kept for the same corpus and settings,
trained when not); cleanlab scores the annotation of every token against those out-of-fold probabilities
(Wang & Mueller 2022, "Detecting Label Errors in Token Classification Data"), and the disagreements become
entity-level findings: missing, spurious, label, boundary (`findings`). Without a model: the same words
annotated differently in different places (`consistency`). Every finding names the file and line of the
original export (`locate`). Outputs: report.md, audit.jsonl, suggestions.tsv (`write`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional, Sequence

from ..experiments.crossval import crossval, fold_plan, kept_models, models_record
from ..training.config_file import CREATE_CONFIG_FIX, read_config
from ..training.train import check_steps
from ..util.errors import SetupError
from ..util.runtime import cpu_name, select_device
from .consistency import find_inconsistencies
from .findings import KINDS, SCORE_RULE, check_token_score, iob2_classes, model_findings, require_cleanlab
from .locate import Located, check_export, locate_corpus
from .oof import out_of_fold
from .write import OUTPUTS, finding_block, inconsistency_rows, suggestion_documents, write_outputs


def check_token_head(config: Path) -> None:
    """Before k trainings: the config's NER must be token_ner, the head that gives token probabilities."""
    components = read_config(config, fix=CREATE_CONFIG_FIX).get("components", {})
    if not any(c.get("factory") == "token_ner" for c in components.values()):
        raise SetupError(
            f"audit needs token probabilities, which the token_ner head gives and {config}'s NER does not: "
            f"create the config with --vars.ner_head token (the default)"
        )


def fold_models(*, config: Path, corpus: Path, crossval_dir: Path, folds: int, seed: int, **train_options):
    """The pooled train + dev docs, their folds, the k fold models and whether they were reused."""
    train, dev = corpus / "train.spacy", corpus / "dev.spacy"
    docs, _, assigned = fold_plan(train, dev, folds, seed)
    record = models_record(config=config, train=train, dev=dev, assigned=assigned, seed=seed, **train_options)
    models = kept_models(crossval_dir, record)
    if models is not None:
        return docs, assigned, models, True
    crossval(
        config=config,
        train=train,
        dev=dev,
        output=crossval_dir,
        folds=folds,
        seed=seed,
        keep_models=True,
        **train_options,
    )
    models = kept_models(crossval_dir, record)
    if models is None:  # a bug: crossval keeps what models_record describes
        raise ValueError(f"crossval left no models matching its record in {crossval_dir}")
    return docs, assigned, models, False


def audit(
    *,
    config: Path,
    corpus: Path,
    output: Path,
    crossval_dir: Path,
    read_options: dict,
    folds: int = 5,
    seed: int = 0,
    top: int = 20,
    token_score: str = "self_confidence",
    consistency_only: bool = False,
    train: Optional[Path] = None,
    **train_options,
) -> dict:
    """Audit corpus/ (train, dev and test for consistency; train + dev with the model) into output/.
    `train`: the export the user means, which corpus/ must have been converted from."""
    start = time.perf_counter()
    if top < 1:
        raise SetupError(f"top (findings shown in report.md) must be at least 1, not {top}")
    if train is not None:
        check_export(corpus, train)
    if not consistency_only:  # why first: these would otherwise stop the audit after k trainings
        require_cleanlab()
        check_token_score(token_score)
        check_token_head(config)
        check_steps(train_options["max_steps"], train_options["eval_frequency"], train_options.get("warmup_ratio", 0.1))
    located = locate_corpus(corpus, read_options)
    audited = located["train"] + located["dev"]
    inconsistencies = find_inconsistencies(audited + located["test"])
    result = {
        "documents": {split: len(docs) for split, docs in located.items()},
        "inconsistencies": len(inconsistencies),
        "outputs": [str(output / name) for name in OUTPUTS],
    }
    findings: List[dict] = []
    suggested = None
    if not consistency_only:
        findings, model_result = _model_part(
            audited, config, corpus, crossval_dir, folds, seed, token_score, **train_options
        )
        suggested = suggestion_documents(audited, findings[:top])
        result.update(model_result, suggested_documents=len(suggested))
    result["seconds"] = round(time.perf_counter() - start, 1)
    report = report_lines(result, findings, inconsistencies, audited, top)
    write_outputs(output, report, findings, inconsistencies, audited, suggested)
    return {**result, "findings": findings, "inconsistent": inconsistencies}


def _model_part(audited, config, corpus, crossval_dir, folds, seed, token_score, **train_options):
    """Out-of-fold probabilities, then cleanlab's findings; returns them and what the report says of them."""
    import cleanlab  # here: audit's optional package (require_cleanlab says how to install it)

    started = time.perf_counter()
    docs, assigned, models, reused = fold_models(
        config=config, corpus=corpus, crossval_dir=crossval_dir, folds=folds, seed=seed, **train_options
    )
    if len(docs) != len(audited):  # a bug: both are corpus/train.spacy then corpus/dev.spacy
        raise ValueError(f"{len(docs)} crossval documents against {len(audited)} located ones")
    trained = time.perf_counter()
    _, device = select_device(train_options.get("gpu_id"))
    classes = iob2_classes({label for doc in audited for _, _, label in doc.spans})
    predictions = out_of_fold(models, docs, assigned, classes)
    findings, counts = model_findings(audited, predictions, classes, token_score)
    return findings, {
        "folds": folds,
        "seed": seed,
        "max_steps": train_options["max_steps"],
        "models": "reused" if reused else "trained",
        "models_dir": str(crossval_dir / "runs"),
        "model_seconds": round(trained - started, 1),
        "device": device,
        "cpu": cpu_name(),
        "tag_set": "IOB2",
        "token_score": token_score,
        "cleanlab": cleanlab.__version__,
        "model_findings": len(findings),
        "by_kind": {kind: sum(f["kind"] == kind for f in findings) for kind in KINDS},
        "flagged": sum(f["flagged"] for f in findings),
        **counts,
        "score_rule": SCORE_RULE.format(method=token_score),
        "predictions": predictions,
    }


def report_lines(
    result: dict, findings: Sequence[dict], inconsistencies: Sequence[dict], audited: Sequence[Located], top: int
) -> List[str]:
    docs = result["documents"]
    lines = ["# Annotation audit", "", _summary(result, len(audited)), ""]
    if "model_findings" in result:
        lines += [
            f"## The {min(top, len(findings))} findings most likely to be annotation mistakes",
            "",
            "Each shows the file and line of the export, the annotation as given and as the out-of-fold model "
            "suggests it ([words](LABEL) is an entity). `suggestions.tsv` holds these documents with the "
            "suggestions applied (UBIAI's IOB shape): import it into UBIAI, correct what the model got wrong, "
            "export, and put the corrected documents in place of the old ones; or fix the export at each file:line.",
            "",
        ]
        for finding in findings[:top]:
            lines += finding_block(finding, audited[finding["document"]])
    lines += [
        f"## Words annotated in more than one way ({len(inconsistencies)})",
        "",
        f"No model: every token sequence annotated as an entity somewhere, against each place where the same "
        f"tokens stand outside every entity or as another entity, in train, dev and test "
        f"({docs['train'] + docs['dev'] + docs['test']} documents). Most places against the majority first; "
        f"audit.jsonl lists every place.",
        "",
    ]
    lines += inconsistency_rows(inconsistencies, top) if inconsistencies else ["None found."]
    if "model_findings" in result:
        lines += ["", "## How findings are scored", "", result["score_rule"] + ".", ""]
    return lines


def _summary(result: dict, audited: int) -> str:
    docs = result["documents"]
    if "model_findings" not in result:
        return (
            f"The consistency check alone (--consistency-only), over {docs['train'] + docs['dev'] + docs['test']} "
            f"documents: no model findings. {result['seconds']:.0f} s."
        )
    kinds = ", ".join(f"{kind} {n}" for kind, n in result["by_kind"].items())
    return (
        f"{audited} train + dev documents ({result['tokens']} tokens), each predicted by the one of "
        f"{result['folds']} crossval models that never trained on it ({result['models']}: {result['models_dir']}, "
        f"{result['max_steps']} steps each), on {result['device']}; cleanlab {result['cleanlab']}, token score "
        f"{result['token_score']} over IOB2 tags. **{result['model_findings']} findings** ({kinds}), "
        f"{result['flagged']} of them flagged by cleanlab's confident learning; "
        f"{result['inconsistencies']} word sequences annotated in more than one way. {result['seconds']:.0f} s in all."
    )


def audit_summary(result: dict) -> str:
    """One line for the command to print."""
    model = (
        f"{result['model_findings']} findings ({result['flagged']} flagged by cleanlab), {result['models']} "
        f"{result['folds']} fold models, "
        if "model_findings" in result
        else ""
    )
    return (
        f"{model}{result['inconsistencies']} word sequences annotated in more than one way, in "
        f"{result['seconds']:.0f} s -> {', '.join(result['outputs'][: 3 if 'model_findings' in result else 2])}"
    )
