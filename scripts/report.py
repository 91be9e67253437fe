"""report: training/report.md with plots, and training/errors.html (gold beside predicted)."""

from pathlib import Path

import typer
from wasabi import msg

from iob_ner.evaluation.report.write import CONFIDENCE_PLOTS, write_report
from iob_ner.util.cli import user_errors


def main(
    # No `exists=True`: a missing folder is reported as its missing metrics file, with the command to run.
    training_dir: Path = typer.Argument(..., file_okay=False),
    test_corpus: Path = typer.Argument(..., help="Gold test corpus (.spacy) for errors.html"),
) -> None:
    with user_errors():
        with_errors, n_docs = write_report(training_dir=training_dir, test_corpus=test_corpus)
    plots = "".join(f", {name}" for name in CONFIDENCE_PLOTS if (training_dir / name).exists())
    msg.good(
        f"{training_dir / 'report.md'}, learning-curve.png, per-label-f.png{plots}, errors.html "
        f"({with_errors} of {n_docs} test documents with errors)"
    )


if __name__ == "__main__":
    typer.run(main)
