"""Input and output files of the commands: JSONL documents, and a UBIAI-shaped export with its splits."""

import json
from pathlib import Path

import spacy

from iob_ner.corpus.convert import read_docs


def write_jsonl(path: Path, texts) -> Path:
    path.write_text(
        "".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)), encoding="utf8"
    )
    return path


def records(path: Path) -> list:
    return [json.loads(line) for line in path.read_text(encoding="utf8").splitlines()]


EXPORT_LABELS = ["SKILL", "DEGREE", "TOOL"]


def write_export(path, n_docs, start=0):
    """A UBIAI-shaped export: -DOCSTART- before each document, whose first token names it."""
    lines = []
    for i in range(start, start + n_docs):
        label = EXPORT_LABELS[i % len(EXPORT_LABELS)]
        lines += ["-DOCSTART- -X- O O", f"doc{i}\tO", "needs\tO", f"Python{i}\tB-{label}", "skills\tI-" + label]
        if i % 4 == 0:
            lines += ["and\tO", f"Docker{i}\tB-TOOL"]
    path.write_text("\r\n".join(lines), encoding="utf8")
    return path


def first_line(i):
    """The line of document i's first token in write_export's file: 5 lines a document, 2 more every 4th."""
    return 5 * i + 2 * ((i + 3) // 4) + 2


def names(path):
    """The documents of a .spacy corpus by name (write_export's first token)."""
    return [doc[0].text for doc in read_docs(path, spacy.blank("en").vocab)]


def splits(output):
    """The document names of convert's train, dev and test in `output`."""
    return {split: names(output / f"{split}.spacy") for split in ("train", "dev", "test")}
