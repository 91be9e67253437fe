"""Where each document and token of the corpus is in the original export: file and line.

`convert` keeps no line numbers in corpus/*.spacy, so the audit reads the exports again, as convert read
them: the files that corpus/split.json names, with the same reading options (sents_per_doc,
max_sentence_tokens), each document in the split that split.json gives it, in file order. Every document
found is then compared with the corpus, word for word and entity for entity: an export edited since
`convert`, or other reading options, stop the audit with one sentence instead of pointing at wrong lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple

from spacy.vocab import Vocab

from ..corpus.convert import read_docs
from ..corpus.prepare import SPLIT_RECORD, SPLITS, read_split_record
from ..iob.documents import IobDocument
from ..iob.reader import located_documents
from ..iob.tags import Span
from ..util.errors import CorpusError


@dataclass
class Located:
    """A corpus document with its place in the export."""

    split: str
    file: str
    lines: List[int]  # the line of each token
    words: List[str]
    spans: List[Span]
    sent_starts: List[int]

    def where(self, token: int) -> str:
        """file:line of a token."""
        return f"{self.file}:{self.lines[token]}"


def _shown(path: str) -> str:
    """A path as the report shows it: relative to the working directory (the project) when inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path


def _read_split_record(corpus: Path) -> dict:
    record = read_split_record(corpus)
    if record is None:
        raise CorpusError(f"cannot read {corpus / SPLIT_RECORD}: run `spacy project run convert` first")
    return record


def check_export(corpus: Path, train: Path) -> None:
    """Refuse to audit a corpus converted from another export than `train` (the --vars.train the user
    gave audit), which would report findings in a file the user did not ask about."""
    record = _read_split_record(corpus)
    converted = Path(record["sources"]["train"])
    if converted.resolve() != Path(train).resolve():
        raise CorpusError(
            f"{corpus} was converted from {converted}, not {train}: run `spacy project run convert . "
            f"--vars.train {train}` first (with the same --vars.dev and --vars.test), then audit"
        )


def _source_documents(record: dict, split: str, read_options: dict) -> Iterator[Tuple[IobDocument, List[int]]]:
    """The documents of `split` in its export, in file order, each with the line of each token."""
    carved = record.get("carved", [])
    path = Path(record["sources"][split])
    if not path.is_file():
        raise CorpusError(f"{path}, the {split} file that corpus/split.json names, is gone: run convert again")
    # the train file's documents went to train or to a split carved from it, as split.json lists them
    places = [(d["split"], d["first_line"]) for d in record["carved_documents"]] if carved else None
    from_train_file = split == "train" or split in carved
    for index, (document, lines) in enumerate(located_documents(path, **read_options)):
        if from_train_file and places is not None:
            if index >= len(places) or places[index][1] != document.first_line:
                raise _stale(split, path, document.first_line, read_options)
            if places[index][0] != split:
                continue
        yield document, lines


def _stale(split: str, path: Path, line: int, read_options: dict) -> CorpusError:
    options = ", ".join(f"{key} {value}" for key, value in sorted(read_options.items()))
    where = f" (the document at line {line} differs)" if line else ""
    return CorpusError(
        f"corpus/{split}.spacy was not converted from {path} as it is now, read with {options}{where}: run "
        f"`spacy project run convert` again, with the same --vars as audit"
    )


def locate_corpus(corpus: Path, read_options: dict, splits: Sequence[str] = SPLITS) -> Dict[str, List[Located]]:
    """The documents of corpus/<split>.spacy for each split, each with its file and token lines.

    Raises CorpusError when the exports, read with `read_options`, do not give back the corpus exactly.
    """
    record = _read_split_record(corpus)
    vocab = Vocab()
    found: Dict[str, List[Located]] = {split: [] for split in splits}
    for split in splits:
        docs = read_docs(corpus / f"{split}.spacy", vocab)
        file = _shown(record["sources"][split])
        for document, lines in _source_documents(record, split, read_options):
            doc = next(docs, None)
            words = [t.text for t in doc] if doc is not None else None
            ents = [(e.start, e.end, e.label_) for e in doc.ents] if doc is not None else None
            if words != document.words or ents != sorted(document.spans):
                raise _stale(split, Path(file), document.first_line, read_options)
            found[split].append(Located(split, file, lines, document.words, document.spans, document.sent_starts))
        if next(docs, None) is not None:  # the corpus holds more documents than the export gives
            raise _stale(split, Path(file), 0, read_options)
    return found
