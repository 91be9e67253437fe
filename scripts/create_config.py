"""create-config: write configs/config.cfg from configs/base_config.cfg, keeping a config.cfg that the user edited."""

from pathlib import Path

import typer
from wasabi import msg

from iob_ner.training.config_file import HEADS, write_config
from iob_ner.training.trackers import LOGGERS
from iob_ner.util.cli import user_errors


def main(
    base: Path = typer.Argument(..., exists=True, dir_okay=False, help="The short base config"),
    output: Path = typer.Argument(..., dir_okay=False, help="The complete config to write"),
    ner_head: str = typer.Option("token", help=f"NER head: {' or '.join(HEADS)}"),
    logger: str = typer.Option(
        "console", help=f"[training.logger]: {', '.join(LOGGERS)} (trackers: pip install -r requirements-trackers.txt)"
    ),
    lang: str = typer.Option("en", help="The pipeline's language ([nlp] lang: spaCy's tokenizer for raw text)"),
    force: bool = typer.Option(False, "--force", help="Overwrite even an edited config"),
) -> None:
    with user_errors():
        status = write_config(base, output, ner_head, force=force, logger=logger, lang=lang)
    choice = f"ner_head={ner_head}, logger={logger}, lang={lang}"
    if status == "kept":
        msg.warn(f"{output} was edited by hand: kept as it is (delete it to regenerate it with {choice})")
    else:
        msg.good(f"{output}: {status} ({choice})")


if __name__ == "__main__":
    typer.run(main)
