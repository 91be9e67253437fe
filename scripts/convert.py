"""convert: the IOB file(s) to corpus/{train,dev,test}.spacy (and spaCy JSON, with reports); dev and test carved
from train where they are "auto"; corpus/split.json says what went where."""

import sys
from pathlib import Path

# spaCy imports torch through thinc when it is installed; converting needs neither it nor its ~250 MB.
sys.modules.setdefault("torch", None)

import typer  # noqa: E402
from wasabi import msg  # noqa: E402

from iob_ner.corpus.prepare import AUTO, SPLITS, prepare_corpus  # noqa: E402
from iob_ner.corpus.split_checks import unseen_sentence  # noqa: E402
from iob_ner.corpus.tokenizer_fit import fit_lines  # noqa: E402
from iob_ner.iob.documents import MAX_DOCUMENT_TOKENS, MAX_SENTENCE_TOKENS  # noqa: E402
from iob_ner.util.cli import parse_bool, print_read_report, user_errors  # noqa: E402

SAMPLE_MANIFEST = Path(__file__).resolve().parents[1] / "assets" / "sample.json"


def print_record(record: dict, reports: dict) -> None:
    for split in SPLITS:
        msg.divider(f"{split}: {record['sources'][split]}")
        print_read_report(reports[split])
    labels = sorted({label for split in SPLITS for label in record["entities"][split]})
    rows = [(label, *(record["entities"][split].get(label, 0) for split in SPLITS)) for label in labels]
    rows.append(("documents", *(record["documents_per_split"][split] for split in SPLITS)))
    msg.table(rows, header=("label", *SPLITS), divider=True)
    if record["dev_is_test"]:
        msg.warn("dev is the test set (dev_is_test): the test score is optimistic")
    for split, unseen in record["labels_unseen_in_train"].items():
        if unseen:
            msg.warn(unseen_sentence(split, unseen))
    for overlap in record["documents_in_two_splits"]:
        msg.warn(overlap)
    for gap in record["labels_missing_from_a_split"]:
        msg.warn(f"label {gap['label']} is in train but not in {gap['split']}: its {gap['split']} score is unmeasured")
    line, warnings = fit_lines(record["tokenizer_fit"])
    msg.info(line)
    for warning in warnings:
        msg.warn(warning)


def main(
    train: Path = typer.Option(..., exists=True, dir_okay=False, help="IOB file with the training documents"),
    dev: str = typer.Option(AUTO, help="IOB file, or 'auto': carved from train (the sample: its own dev file)"),
    test: str = typer.Option(AUTO, help="IOB file, or 'auto': carved from train (the sample: its own test file)"),
    output: Path = typer.Option(Path("corpus"), help="Folder for train/dev/test .spacy, .json and split.json"),
    seed: int = typer.Option(0),
    dev_share: float = typer.Option(0.1, help="Share of the train file's documents carved for dev"),
    test_share: float = typer.Option(0.1, help="Share of the train file's documents carved for test"),
    dev_is_test: str = typer.Option("false", help="true: accept a dev file that is the test file"),
    sents_per_doc: int = typer.Option(1, help="Sentences per document where a file has no -DOCSTART-"),
    strict: str = typer.Option("false", help="true: every repair is an error"),
    max_sentence_tokens: int = typer.Option(MAX_SENTENCE_TOKENS, help="Longer sentences are split (reported)"),
    max_document_tokens: int = typer.Option(MAX_DOCUMENT_TOKENS, help="Longer documents are split (reported)"),
    lang: str = typer.Option("en", help="Language of spaCy's tokenizer for the tokenizer fit check"),
) -> None:
    with user_errors(interrupted="interrupted: an output is replaced only once complete; run the command again"):
        record, reports = prepare_corpus(
            train=train,
            dev=dev,
            test=test,
            output=output,
            seed=seed,
            dev_share=dev_share,
            test_share=test_share,
            dev_is_test=parse_bool(dev_is_test),
            sents_per_doc=sents_per_doc,
            strict=parse_bool(strict),
            max_sentence_tokens=max_sentence_tokens,
            max_document_tokens=max_document_tokens,
            manifest=SAMPLE_MANIFEST,
            lang=lang,
        )
    print_record(record, reports)
    counts = ", ".join(f"{record['documents_per_split'][s]} {s}" for s in SPLITS)
    msg.good(f"{record['note']}: {counts} documents -> {output}/{{train,dev,test}}.spacy, {output}/split.json")


if __name__ == "__main__":
    typer.run(main)
