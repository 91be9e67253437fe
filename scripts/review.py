"""review: the N documents the model is least sure of, pre-annotated, for an annotator to correct in UBIAI."""

from pathlib import Path

import typer
from wasabi import msg

from iob_ner.inference.review import RULE, review, review_summary
from iob_ner.inference.stream import BATCH_CHARS
from iob_ner.util.cli import parse_gpu_id, user_errors


def main(
    model: Path = typer.Argument(..., help="Pipeline folder (training/model-best) or installed package name"),
    source: Path = typer.Argument(..., help=".txt, .jsonl or .json file, or a folder of them (unlabelled)"),
    output_jsonl: Path = typer.Argument(..., help="JSONL output: the documents to review, least sure first"),
    output_iob: Path = typer.Argument(..., help="IOB .tsv output (UBIAI export shape) of the same documents"),
    n: int = typer.Option(50, "--n", help="How many documents to write"),
    gpu_id: str = typer.Option("cpu", help="GPU id, 'cpu' or 'auto'"),
    gpu_id_env: str = typer.Option("", help="Used where --gpu-id is 'auto' (project.yml passes $GPU_ID)"),
    batch_size: int = typer.Option(64),
    lines: bool = typer.Option(False, "--lines", help="Each line of a .txt file is one document"),
    max_length: int = typer.Option(0, help="Split texts longer than this (characters; 0: the pipeline's max_length)"),
    batch_chars: int = typer.Option(
        BATCH_CHARS,
        help="Characters in one pass of the pipeline (bounds memory; longer texts stream through in pieces)",
    ),
) -> None:
    with user_errors(OSError, interrupted="interrupted: the previous outputs are left as they were"):
        result = review(
            model=model,
            source=source,
            output_jsonl=output_jsonl,
            output_iob=output_iob,
            n=n,
            gpu_id=parse_gpu_id(gpu_id, gpu_id_env),
            batch_size=batch_size,
            lines=lines,
            max_length=max_length or None,
            batch_chars=batch_chars,
        )
    msg.info(f"rule: {RULE}")
    (msg.warn if result["skipped"] or not result["written"] else msg.good)(
        review_summary(result, [output_jsonl, output_iob])
    )


if __name__ == "__main__":
    typer.run(main)
