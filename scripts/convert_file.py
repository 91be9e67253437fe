"""convert-file: one IOB .tsv export to STEM.spacy, STEM.json and STEM.report.json, as it is (no splitting)."""

import sys
import time
from pathlib import Path

# spaCy imports torch through thinc when it is installed; converting needs neither it nor its ~250 MB.
sys.modules.setdefault("torch", None)

import typer  # noqa: E402
from wasabi import msg  # noqa: E402

from iob_ner.corpus.convert import convert_iob  # noqa: E402
from iob_ner.iob.documents import MAX_DOCUMENT_TOKENS, MAX_SENTENCE_TOKENS  # noqa: E402
from iob_ner.util.cli import parse_bool, print_read_report, user_errors  # noqa: E402


def main(
    input_path: Path = typer.Argument(..., exists=True, dir_okay=False, help="IOB .tsv file"),
    output_stem: Path = typer.Argument(..., help="Writes STEM.json, STEM.spacy and STEM.report.json"),
    sents_per_doc: int = typer.Option(
        1, "--sents-per-doc", "-n", help="Sentences per document where the file has no -DOCSTART-"
    ),
    strict: str = typer.Option("false", help="true: every repair is an error"),
    write_json: bool = typer.Option(True, "--json/--no-json", help="Also write STEM.json"),
    max_sentence_tokens: int = typer.Option(
        MAX_SENTENCE_TOKENS,
        "--max-sentence-tokens",
        min=0,
        help="Cut longer sentences (a file without blank lines) outside entities; 0: no limit",
    ),
    max_document_tokens: int = typer.Option(
        MAX_DOCUMENT_TOKENS,
        "--max-document-tokens",
        min=0,
        help="Split longer documents at sentence boundaries; 0: no limit",
    ),
    require_entities: bool = typer.Option(
        False, "--require-entities", help="Stop when the file holds no entity (for training files)"
    ),
) -> None:
    start = time.perf_counter()
    with user_errors(interrupted="interrupted: an output is replaced only once complete; run the command again"):
        report = convert_iob(
            input_path,
            output_stem,
            sents_per_doc=sents_per_doc,
            strict=parse_bool(strict),
            write_json=write_json,
            progress=True,
            max_sentence_tokens=max_sentence_tokens,
            max_document_tokens=max_document_tokens,
            require_entities=require_entities,
        )
    seconds = time.perf_counter() - start
    print_read_report(report)
    outputs = f"{output_stem}.json, {output_stem}.spacy" if write_json else f"{output_stem}.spacy"
    msg.good(
        f"{input_path} -> {outputs}: {report.documents} documents, {report.tokens} tokens, "
        f"{sum(report.entities.values())} entities in {seconds:.2f} s"
    )


if __name__ == "__main__":
    typer.run(main)
