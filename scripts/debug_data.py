"""debug-data: check the corpus before training (entities per label and split, labels that train lacks), then
`spacy debug data` with its NER checks; saves the report and stops on errors."""

from pathlib import Path
from typing import Optional

import typer
from wasabi import msg

from iob_ner.corpus.debug_data import counts_table, project_checks, spacy_checks
from iob_ner.util.cli import parse_bool, user_errors

# spaCy's transition ner, swapped in for token_ner so that spacy debug data runs its NER checks
TRANSITION_BLOCK = Path(__file__).resolve().parents[1] / "configs" / "ner_transition.cfg"


def main(
    config: Path = typer.Argument(..., dir_okay=False, help="Training config (configs/config.cfg)"),
    train: Path = typer.Argument(..., help="Training corpus (.spacy file or folder of shards)"),
    dev: Path = typer.Argument(..., help="Development corpus"),
    output: Path = typer.Argument(..., dir_okay=False, help="Where the report goes"),
    test: Optional[Path] = typer.Option(None, help="Test corpus: its labels are checked against train too"),
    transformer: str = typer.Option("embedded"),
    dev_is_test: str = typer.Option("false", help="true: dev is the test set on purpose (convert's setting)"),
) -> None:
    with user_errors():
        checks = project_checks(
            config=config,
            train=train,
            dev=dev,
            test=test,
            transition_block=TRANSITION_BLOCK,
            dev_is_test=parse_bool(dev_is_test),
        )
        header, rows = counts_table(checks.splits)
        msg.table(rows, header=header, divider=True, aligns=["l"] + ["r"] * (len(header) - 1))
        for level, text in checks.findings:
            getattr(msg, level)(text)
        msg.info("Running spacy debug data on train and dev (it loads the transformer) ...")
        errors, advice = spacy_checks(
            checks, config=config, train=train, dev=dev, output=output, transformer=transformer
        )
    for line in advice:
        msg.warn(f"spacy debug data: {line} (a size advice, not an error in the data)")
    own = [text for level, text in checks.findings if level == "fail"]
    if own:
        msg.fail(f"the corpus has {len(own)} error(s): {'; '.join(own)} (see {output})", exits=1)
    if errors:
        msg.fail(f"spacy debug data found {len(errors)} error(s): {'; '.join(errors)} (see {output})", exits=1)
    msg.good(f"spacy debug data: no errors in the data (report: {output})")


if __name__ == "__main__":
    typer.run(main)
