"""Run `spacy debug data` on the config and corpus, save its report, and fail on the errors it finds."""
import re
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import typer
from wasabi import msg

from iob_ner.runtime import SetupError, resolve_transformer

# `spacy debug data` fails small corpora on size alone; that is advice, and the sample is small.
ADVICE = re.compile(r"^Low number of examples")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
SUMMARY = re.compile(r"^\d+ errors?$")


def classify(report: str) -> Tuple[List[str], List[str]]:
    """(errors, advice) among the ✘ lines of a `spacy debug data` report."""
    failures = [line.strip("✘ ").strip() for line in ANSI.sub("", report).splitlines() if line.startswith("✘")]
    errors = [f for f in failures if not ADVICE.match(f) and not SUMMARY.match(f)]
    return errors, [f for f in failures if ADVICE.match(f)]


def main(
    config: Path = typer.Argument(..., exists=True, dir_okay=False),
    train: Path = typer.Argument(..., exists=True),
    dev: Path = typer.Argument(..., exists=True),
    output: Path = typer.Argument(..., dir_okay=False, help="Where the report goes"),
    transformer: str = typer.Option("embedded"),
) -> None:
    try:
        model = resolve_transformer(transformer)
    except SetupError as err:
        msg.fail(str(err), exits=1)
    command = [sys.executable, "-m", "spacy", "debug", "data", str(config), "--paths.train", str(train),
               "--paths.dev", str(dev), "--paths.transformer", model]
    result = subprocess.run(command, capture_output=True, text=True)
    report = result.stdout + result.stderr
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(ANSI.sub("", report), encoding="utf8")
    errors, advice = classify(report)
    for line in advice:
        msg.warn(f"spacy debug data: {line} (a size advice, not an error in the data)")
    if errors or (result.returncode != 0 and not advice):
        print(report[-3000:])
        msg.fail(f"spacy debug data found {len(errors) or 'unexpected'} error(s): {'; '.join(errors)} (see {output})", exits=1)
    msg.good(f"spacy debug data: no errors in the data (report: {output})")


if __name__ == "__main__":
    typer.run(main)
