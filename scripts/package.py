"""package: an installable Python package (wheel) of a trained pipeline, the token_ner code included."""

from pathlib import Path

import typer
from wasabi import msg

from iob_ner.pipeline.packaging import package_pipeline
from iob_ner.util.cli import parse_bool, user_errors


def main(
    model: Path = typer.Argument(..., exists=True, file_okay=False),
    output_dir: Path = typer.Argument(...),
    name: str = typer.Option("ner_model"),
    version: str = typer.Option("0.1.0"),
    # A value, not a flag: `spacy project run` can only pass it through a var (--vars.package_force true).
    force: str = typer.Option("false", help="true: replace a package of a different model with this name and version"),
) -> None:
    with user_errors(prefix="--force (--vars.package_force): "):
        forced = parse_bool(force)
    with user_errors():
        wheel, status = package_pipeline(model=model, output_dir=output_dir, name=name, version=version, force=forced)
    msg.good(f'{wheel.parent.parent} ({status}): pip install {wheel}, then spacy.load("{wheel.name.split("-")[0]}")')


if __name__ == "__main__":
    typer.run(main)
