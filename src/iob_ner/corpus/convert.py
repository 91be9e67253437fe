"""IOB file -> spaCy JSON training file + DocBin (.spacy) + conversion report, written together."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, Union

import numpy
import srsly
from spacy.attrs import ENT_IOB, ENT_TYPE, ORTH, SENT_START
from spacy.strings import get_string_id
from spacy.tokens import Doc, DocBin
from spacy.vocab import Vocab
from tqdm import tqdm

from ..iob.documents import MAX_DOCUMENT_TOKENS, MAX_SENTENCE_TOKENS, IobDocument
from ..iob.reader import read_iob
from ..iob.report import ReadReport
from ..iob.tags import spans_to_tags
from ..util.errors import CorpusError
from ..util.outputs import atomic_outputs, check_outputs, remove

DOCBIN_ATTRS = ["ORTH", "ENT_IOB", "ENT_TYPE", "SENT_START"]
SHARD_TOKENS = 1_000_000  # a DocBin holds ~50 bytes a token in memory: shard big corpora


def to_doc(vocab: Vocab, document: IobDocument) -> Doc:
    sent_starts = [False] * len(document.words)
    for start in document.sent_starts:
        sent_starts[start] = True
    return Doc(
        vocab, words=document.words, sent_starts=sent_starts, ents=spans_to_tags(document.spans, len(document.words))
    )


_IOB_B, _IOB_I, _IOB_O = 3, 1, 2  # spaCy's ENT_IOB codes
_NOT_SENT_START = numpy.uint64(-1 % 2**64)  # SENT_START -1, as DocBin stores it
_EMPTY_SPAN_GROUPS: Optional[bytes] = None


def add_to_docbin(docbin: DocBin, document: IobDocument) -> None:
    """`docbin.add(to_doc(...))` without building a Doc: the same arrays, 3x faster.

    DocBin.add walks every token in Python for nine strings; here only words and labels exist.
    tests/corpus/test_corpus.py checks that both paths serialise the same bytes.
    """
    global _EMPTY_SPAN_GROUPS
    if _EMPTY_SPAN_GROUPS is None:
        _EMPTY_SPAN_GROUPS = Doc(Vocab(), words=["x"]).spans.to_bytes()
    n = len(document.words)
    array = numpy.zeros((n, len(docbin.attrs)), dtype="uint64")
    columns = {attr: i for i, attr in enumerate(docbin.attrs)}
    array[:, columns[ORTH]] = [get_string_id(word) for word in document.words]
    iob = numpy.full(n, _IOB_O, dtype="uint64")
    types = numpy.zeros(n, dtype="uint64")
    for start, end, label in document.spans:
        iob[start] = _IOB_B
        iob[start + 1 : end] = _IOB_I
        types[start:end] = get_string_id(label)
        docbin.strings.add(label)
    array[:, columns[ENT_IOB]] = iob
    array[:, columns[ENT_TYPE]] = types
    sent = numpy.full(n, _NOT_SENT_START, dtype="uint64")
    sent[document.sent_starts] = 1
    array[:, columns[SENT_START]] = sent
    docbin.tokens.append(array)
    docbin.spaces.append(numpy.ones((n, 1), dtype=bool))
    docbin.flags.append({"has_unknown_spaces": True})
    docbin.strings.update(document.words)
    docbin.strings.add("")
    docbin.cats.append({})
    docbin.span_groups.append(_EMPTY_SPAN_GROUPS)


def to_json_doc(index: int, document: IobDocument) -> dict:
    """One document in spaCy's JSON training format (what `spacy convert` reads), BILUO tags."""
    tags = spans_to_tags(document.spans, len(document.words), "BILUO")
    bounds = list(document.sent_starts) + [len(document.words)]
    sentences = [
        {"tokens": [{"id": i, "orth": document.words[i], "ner": tags[i]} for i in range(start, end)], "brackets": []}
        for start, end in zip(bounds, bounds[1:])
    ]
    return {"id": index, "paragraphs": [{"sentences": sentences}]}


class _ShardedDocBin:
    """Writes one .spacy file, or a folder of .spacy shards once the corpus outgrows one shard.

    spaCy's corpus reader takes either, so memory stays bounded on any input size.
    """

    def __init__(self, path: Path, shard_tokens: int) -> None:
        self.path, self.shard_tokens = path, shard_tokens
        self.docbin = DocBin(attrs=DOCBIN_ATTRS)
        self.tokens = 0
        self.shards = 0

    def add(self, document: IobDocument) -> None:
        add_to_docbin(self.docbin, document)
        self.tokens += len(document.words)
        if self.tokens >= self.shard_tokens:
            self._flush()

    def _flush(self) -> None:
        if self.shards == 0:
            self.path.mkdir()
        self.docbin.to_disk(self.path / f"{self.shards:05d}.spacy")
        self.shards += 1
        self.docbin, self.tokens = DocBin(attrs=DOCBIN_ATTRS), 0

    def close(self) -> None:
        if self.shards == 0:
            self.docbin.to_disk(self.path)
        elif len(self.docbin):
            self._flush()


def convert_iob(
    input_path: Union[str, Path],
    output_stem: Union[str, Path],
    *,
    sents_per_doc: int = 1,
    strict: bool = False,
    shard_tokens: int = SHARD_TOKENS,
    write_json: bool = True,
    progress: bool = False,
    max_sentence_tokens: int = MAX_SENTENCE_TOKENS,
    max_document_tokens: int = MAX_DOCUMENT_TOKENS,
    require_entities: bool = False,
    select: Optional[Callable[[int], bool]] = None,
    seen: Optional[Callable[[IobDocument], None]] = None,
) -> ReadReport:
    """Convert one IOB file to `<stem>.json`, `<stem>.spacy` and `<stem>.report.json`.

    The outputs are written under temporary names and renamed only when the whole file has been read,
    so an error leaves no half-written corpus behind. Both outputs hold the same documents. Sentences
    and documents over the limits are cut outside entities (see `read_iob`). `require_entities`: a
    file without a single entity is a CorpusError (a training file whose tag column was not read).
    `select`: keep only the documents whose index in the file it accepts (a split carved from the
    file); the report then counts those documents, and its repairs and notes are the whole file's.
    `seen`: called with each document written (convert's overlap check).
    """
    input_path, stem = Path(input_path), Path(output_stem)
    finals = [stem.with_suffix(".spacy"), stem.with_suffix(".json"), stem.with_suffix(".report.json")]
    check_outputs(
        input_path, finals, [f"the output {final.suffix}" for final in finals[:2]] + ["the report"], folders=True
    )
    report = ReadReport(path=str(input_path))
    documents = read_iob(
        input_path,
        sents_per_doc=sents_per_doc,
        strict=strict,
        report=report,
        max_sentence_tokens=max_sentence_tokens,
        max_document_tokens=max_document_tokens,
    )
    with atomic_outputs(*finals) as (spacy_tmp, json_tmp, report_tmp):
        docbin = _ShardedDocBin(spacy_tmp, shard_tokens)
        with _progress(input_path, progress) as bar:
            json_out = json_tmp.open("w", encoding="utf8") if write_json else None
            try:
                if json_out:
                    json_out.write("[")
                kept = _Selection(report) if select is not None else None
                for index, document in enumerate(documents if kept is None else kept.filter(documents, select)):
                    docbin.add(document)
                    if seen is not None:
                        seen(document)
                    if json_out:
                        json_out.write(("," if index else "") + "\n" + srsly.json_dumps(to_json_doc(index, document)))
                    if bar is not None:
                        bar.update(len(document.words))
                if json_out:
                    json_out.write("\n]\n")
            finally:
                if json_out:
                    json_out.close()
        if kept is not None:
            kept.settle()
        if require_entities and not report.entities:
            # why: raised inside atomic_outputs, so the temporaries go and earlier outputs stay
            raise CorpusError(
                f"{input_path} holds no entities: a training file needs annotated entities "
                f"(check that the tag column is the last one)"
            )
        docbin.close()
        report.write(report_tmp)
    if not write_json:
        remove(finals[1])  # a JSON file of an earlier run would no longer match the DocBin
    return report


class _Selection:
    """Counts of the documents that `select` keeps, put into the report once the file is read."""

    def __init__(self, report: ReadReport) -> None:
        self.report = report
        self.documents = self.sentences = self.tokens = self.longest = 0
        self.entities: Counter = Counter()

    def filter(self, documents: Iterable[IobDocument], select: Callable[[int], bool]) -> Iterator[IobDocument]:
        for index, document in enumerate(documents):
            if select(index):
                self.documents += 1
                self.sentences += len(document.sent_starts)
                self.tokens += len(document.words)
                self.longest = max(self.longest, len(document.words))
                self.entities.update(label for _, _, label in document.spans)
                yield document

    def settle(self) -> None:
        report = self.report
        report.notes.append(f"{self.documents} of the file's {report.documents} documents selected for this split")
        report.documents, report.sentences, report.tokens = self.documents, self.sentences, self.tokens
        report.longest_document, report.entities = self.longest, self.entities


class _NoBar:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _progress(path: Path, enabled: bool):
    """A token progress bar for long files (> 50 MB), estimated from the file size."""
    size = path.stat().st_size
    if not enabled or size < 50_000_000:
        return _NoBar()
    return tqdm(total=size // 10, unit="tok", unit_scale=True, desc=path.name, leave=False)


def docbin_paths(path: Union[str, Path]) -> List[Path]:
    """The .spacy files behind a corpus path: the file itself or a folder's shards, in order."""
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix == ".spacy")
    if not path.exists():
        raise FileNotFoundError(f"no corpus at {path}: run `spacy project run convert` first")
    return [path]


def read_docs(path: Union[str, Path], vocab: Vocab, limit: Optional[int] = None) -> Iterator[Doc]:
    """Stream the Docs of a .spacy file or folder of shards."""
    count = 0
    for shard in docbin_paths(path):
        for doc in DocBin().from_disk(shard).get_docs(vocab):
            if limit is not None and count >= limit:
                return
            count += 1
            yield doc
