"""audit: the annotations most likely to be wrong, from out-of-fold crossval models and cleanlab, and the same
words annotated differently; report.md, audit.jsonl and suggestions.tsv (to correct in UBIAI)."""

from pathlib import Path
from typing import Optional

import typer
from wasabi import msg

from iob_ner.audit import audit, audit_summary
from iob_ner.iob.documents import MAX_SENTENCE_TOKENS
from iob_ner.util.cli import parse_gpu_id, user_errors


def main(
    config: Path = typer.Argument(..., exists=True, dir_okay=False),
    output: Path = typer.Argument(..., help="Folder for report.md, audit.jsonl and suggestions.tsv"),
    corpus: Path = typer.Option(Path("corpus"), help="convert's folder: train/dev/test.spacy and split.json"),
    train: Optional[Path] = typer.Option(None, help="The export to audit: corpus/ must be converted from it"),
    crossval_dir: Path = typer.Option(Path("training/crossval"), help="crossval's folder: its kept fold models"),
    folds: int = typer.Option(5),
    seed: int = typer.Option(0),
    transformer: str = typer.Option("embedded"),
    gpu_id: str = typer.Option("auto"),
    gpu_id_env: str = typer.Option(""),
    max_steps: int = typer.Option(2000),
    eval_frequency: int = typer.Option(200),
    warmup_ratio: float = typer.Option(0.1),
    sents_per_doc: int = typer.Option(1, help="As convert was given it: how the export is read again"),
    max_sentence_tokens: int = typer.Option(MAX_SENTENCE_TOKENS, help="As convert was given it"),
    top: int = typer.Option(20, help="Findings shown in report.md and written to suggestions.tsv"),
    token_score: str = typer.Option("self_confidence", help="cleanlab's token score method"),
    consistency_only: bool = typer.Option(False, "--consistency-only", help="Only the check that needs no model"),
) -> None:
    with user_errors(OSError, interrupted="interrupted: the previous outputs are left as they were"):
        result = audit(
            config=config,
            corpus=corpus,
            output=output,
            crossval_dir=crossval_dir,
            read_options={"sents_per_doc": sents_per_doc, "max_sentence_tokens": max_sentence_tokens},
            folds=folds,
            seed=seed,
            top=top,
            token_score=token_score,
            consistency_only=consistency_only,
            train=train,
            transformer=transformer,
            gpu_id=parse_gpu_id(gpu_id, gpu_id_env),
            max_steps=max_steps,
            eval_frequency=eval_frequency,
            warmup_ratio=warmup_ratio,
        )
    msg.good(audit_summary(result))


if __name__ == "__main__":
    typer.run(main)
