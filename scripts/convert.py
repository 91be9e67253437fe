"""Convert an IOB .tsv export (UBIAI, CoNLL, ...) to spaCy's JSON training format and a DocBin."""
import sys
import time
from pathlib import Path

# spaCy imports torch through thinc when it is installed; converting needs neither it nor its ~250 MB.
sys.modules.setdefault("torch", None)

import typer
from wasabi import msg

from iob_ner.corpus import CorpusError, convert_iob
from iob_ner.iob import MAX_DOCUMENT_TOKENS, MAX_SENTENCE_TOKENS, IobError, ReadReport
from iob_ner.runtime import SetupError, parse_bool


def print_report(report: ReadReport) -> None:
    msg.table(
        [("documents", report.documents), ("sentences", report.sentences), ("tokens", report.tokens),
         ("longest document (tokens)", report.longest_document),
         ("scheme", report.scheme), ("separator", f"{report.separator}, {report.columns} columns"),
         ("encoding", "UTF-8 with BOM" if report.bom else "UTF-8"), ("line endings", report.line_endings)],
        header=("", Path(report.path).name), divider=True)
    entities = sorted(report.entities.items(), key=lambda item: -item[1])
    msg.table(entities + [("total", sum(report.entities.values()))], header=("label", "entities"), divider=True)
    for kind, repair in report.repairs.items():
        lines = ", ".join(map(str, repair["lines"]))
        msg.warn(f"repaired {repair['count']}x: {repair['what']} (first lines: {lines})")
    for note in report.notes:
        msg.info(note)


def main(
    input_path: Path = typer.Argument(..., exists=True, dir_okay=False, help="IOB .tsv file"),
    output_stem: Path = typer.Argument(..., help="Writes STEM.json, STEM.spacy and STEM.report.json"),
    sents_per_doc: int = typer.Option(1, "--sents-per-doc", "-n", help="Sentences per document where the file has no -DOCSTART-"),
    strict: str = typer.Option("false", help="true: every repair is an error"),
    write_json: bool = typer.Option(True, "--json/--no-json", help="Also write STEM.json"),
    max_sentence_tokens: int = typer.Option(
        MAX_SENTENCE_TOKENS, "--max-sentence-tokens", min=0,
        help="Cut longer sentences (a file without blank lines) outside entities; 0: no limit"),
    max_document_tokens: int = typer.Option(
        MAX_DOCUMENT_TOKENS, "--max-document-tokens", min=0,
        help="Split longer documents at sentence boundaries; 0: no limit"),
    require_entities: bool = typer.Option(
        False, "--require-entities", help="Stop when the file holds no entity (for training files)"),
) -> None:
    start = time.perf_counter()
    try:
        report = convert_iob(input_path, output_stem, sents_per_doc=sents_per_doc, strict=parse_bool(strict),
                             write_json=write_json, progress=True, max_sentence_tokens=max_sentence_tokens,
                             max_document_tokens=max_document_tokens, require_entities=require_entities)
    except (IobError, CorpusError, SetupError) as err:
        msg.fail(str(err), exits=1)
    seconds = time.perf_counter() - start
    print_report(report)
    outputs = f"{output_stem}.json, {output_stem}.spacy" if write_json else f"{output_stem}.spacy"
    msg.good(f"{input_path} -> {outputs}: {report.documents} documents, {report.tokens} tokens, "
             f"{sum(report.entities.values())} entities in {seconds:.2f} s")


if __name__ == "__main__":
    typer.run(main)
