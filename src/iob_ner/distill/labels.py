"""The teacher's labels of the distillation texts: computed once, stored in shards on disk, streamed.

Each shard holds `shard_size` documents: their tokens (a DocBin, `shard-NNNNNN.spacy`) and, per token, the
teacher's distribution over its BILUO tags at the distillation temperature (float16) and its Viterbi tag
(`shard-NNNNNN.npz`). `manifest.json` records what the labels were made from (a fingerprint of the teacher
pipeline's files, of each input, the temperature and the shard size) and the shards written so far. A
rerun with the same teacher and inputs reads the shards and labels nothing; an interrupted labelling goes
on after its last whole shard; another teacher, input or temperature starts over. Memory stays bounded: one
shard is built or read at a time, whatever the number of texts.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import numpy
from spacy.language import Language
from spacy.tokens import Doc, DocBin

from ..corpus.convert import read_docs
from ..evaluation.metrics import drop_transformer_output
from ..inference.inputs import InputProblems, input_files, read_texts
from ..util.errors import SetupError
from ..util.outputs import atomic_outputs, content_sha256, remove, write_text_atomic

MANIFEST = "manifest.json"
FORMAT = 1  # the layout of the shards; a new layout relabels
PIPE_BATCH = 64  # documents per pass of the teacher
SORT_BATCHES = 16  # passes whose documents are sorted by length together


@dataclass
class SilverDoc:
    """A teacher-labelled document: its tokens, the teacher's tag distributions (tokens x tags, at the
    distillation temperature) and Viterbi tag ids. `len()` is its length in tokens, as spaCy's batchers ask."""

    doc: Doc
    probs: numpy.ndarray
    tags: numpy.ndarray

    def __len__(self) -> int:
        return len(self.doc)


@dataclass
class Labels:
    """The shards of one labelling (`manifest.json`'s content) and where they are."""

    folder: Path
    manifest: dict
    reused: bool  # every shard came from an earlier run: nothing was labelled
    labelled_docs: int  # documents the teacher labelled in this run
    seconds: float  # the time this run spent labelling

    @property
    def docs(self) -> int:
        return sum(shard["docs"] for shard in self.manifest["shards"])

    @property
    def all_seconds(self) -> Optional[float]:
        """The labelling's whole time, over every run that wrote a shard (None for shards of an older format)."""
        seconds = [shard.get("seconds") for shard in self.manifest["shards"]]
        return None if None in seconds else round(sum(seconds), 1)

    @property
    def tag_names(self) -> List[str]:
        return list(self.manifest["tag_names"])


def labels_made_from(teacher: Path, sources: Sequence[Path], temperature: float, shard_size: int) -> dict:
    """What the labels depend on: the teacher's files (weights, calibration and all), each input's bytes, the
    temperature and the shard size (which decides what a shard holds, so what a resumed run skips)."""
    return {
        "format": FORMAT,
        "teacher": content_sha256(teacher),
        "inputs": [{"path": str(path), "sha256": content_sha256(path)} for path in sources],
        "temperature": float(temperature),
        "shard_size": int(shard_size),
    }


def read_manifest(folder: Path) -> Optional[dict]:
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf8"))
    except (OSError, ValueError):
        return None


def source_docs(nlp: Language, source: Path, problems: InputProblems) -> Iterator[Doc]:
    """The documents of one input, tokenized by the teacher's tokenizer, in a fixed order.

    A .spacy corpus (the training texts): its tokens as they are, annotations dropped. A .txt file: a text
    per line. A folder of .txt files: a text per file. JSONL and Parquet: a text per record (`predict`'s
    readers: unreadable records are named, skipped and counted).
    """
    if source.suffix == ".spacy" or (source.is_dir() and any(source.glob("*.spacy"))):
        for doc in read_docs(source, nlp.vocab):
            yield Doc(nlp.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc])
        return
    files = input_files(source)
    lines = not source.is_dir()  # one file of text: a document per line (a folder: a document per file)
    for text in read_texts(files, problems, lines=lines, root=source if source.is_dir() else None):
        yield nlp.make_doc(text.text)


def logits_and_tags(head: Any, docs: Sequence[Doc]) -> List[Tuple[numpy.ndarray, numpy.ndarray]]:
    """For each (already processed) doc: the token_ner `head`'s logits (tokens x `tag_names`, float32;
    whitespace tokens barred from entity edges as in prediction) and its Viterbi tag ids. What a teacher gives
    a student: no forward-backward pass, so cheaper than `predict`. Needs the docs as the upstream pipes left
    them."""
    docs = list(docs)
    lengths = [len(doc) for doc in docs]
    if not any(lengths):
        return [(numpy.zeros((n, len(head.tag_names)), dtype="float32"), numpy.zeros((n,), "i")) for n in lengths]
    flat, probabilities = head.model_scores(docs), head.outputs_probabilities()
    paths = head.decoder.decode(flat, lengths, probabilities=probabilities)
    logits = head.decoder.log_potentials(flat, lengths, probabilities=probabilities)
    return [(x.astype("float32"), path) for x, path in zip(logits, paths)]


def teacher_batches(nlp: Language, docs: Iterator[Doc], name: str) -> Iterator[List[SilverDoc]]:
    """The docs through the teacher's pipes up to its `name` head, then that head's logits and Viterbi tags
    (no entity scores: they are not needed here), a buffer of docs at a time, in the order given.

    Within a buffer the docs go through the transformer shortest first: a batch pads its texts to its longest,
    and sentences of 5 and 100 words batched together waste most of the work."""
    head = nlp.get_pipe(name)
    upstream = nlp.pipe_names[: nlp.pipe_names.index(name)]

    def run(buffer: List[Doc]) -> List[SilverDoc]:
        order = sorted(range(len(buffer)), key=lambda i: len(buffer[i]))
        found: List[Optional[SilverDoc]] = [None] * len(buffer)
        with nlp.select_pipes(enable=upstream):
            done = nlp.pipe((buffer[i] for i in order), batch_size=PIPE_BATCH)
            for start in range(0, len(order), PIPE_BATCH):
                batch = [next(done) for _ in order[start : start + PIPE_BATCH]]
                for i, doc, (logits, tags) in zip(order[start:], batch, logits_and_tags(head, batch)):
                    found[i] = SilverDoc(drop_transformer_output(doc), logits, tags)
        return found  # type: ignore[return-value]

    buffer: List[Doc] = []
    for doc in docs:
        buffer.append(doc)
        if len(buffer) == PIPE_BATCH * SORT_BATCHES:
            yield run(buffer)
            buffer = []
    if buffer:
        yield run(buffer)


def softmax(logits: numpy.ndarray, temperature: float) -> numpy.ndarray:
    scaled = logits.astype("float64") / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = numpy.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def write_shard(folder: Path, index: int, items: Sequence[SilverDoc], temperature: float) -> dict:
    """One shard (tokens and labels), both files whole or neither; returns its manifest entry."""
    stem = f"shard-{index:06d}"
    lengths = numpy.array([len(item.doc) for item in items], dtype="int64")
    width = items[0].probs.shape[1]
    probs = numpy.concatenate([softmax(item.probs, temperature) for item in items]) if lengths.sum() else None
    with atomic_outputs(folder / f"{stem}.spacy", folder / f"{stem}.npz") as (docs_tmp, arrays_tmp):
        DocBin(attrs=["ORTH"], docs=[item.doc for item in items]).to_disk(docs_tmp)
        with arrays_tmp.open("wb") as handle:  # a file handle: numpy would append .npz to a bare name
            numpy.savez(
                handle,
                lengths=lengths,
                probs=(probs if probs is not None else numpy.zeros((0, width))).astype("float16"),
                tags=numpy.concatenate([item.tags for item in items]).astype("int16"),
            )
    return {"name": stem, "docs": len(items), "tokens": int(lengths.sum())}


def label_texts(
    teacher: Language,
    teacher_path: Path,
    sources: Sequence[Path],
    folder: Path,
    *,
    head: str,
    temperature: float,
    shard_size: int,
    on_shard: Optional[Callable[[int, int], None]] = None,
) -> Labels:
    """The teacher's labels of every document of `sources`, in shards under `folder`: reused when they were
    made from the same teacher, inputs, temperature and shard size; else (re)made, going on after the last
    whole shard of an interrupted run. `on_shard(shards, docs)` is told of each shard written."""
    if shard_size < 1:
        raise SetupError(f"the distillation shard size must be at least 1 document, not {shard_size}")
    manifest = _current_manifest(folder, labels_made_from(teacher_path, sources, temperature, shard_size))
    manifest.setdefault("tag_names", teacher.get_pipe(head).tag_names)
    if manifest["complete"]:
        return Labels(folder, manifest, reused=True, labelled_docs=0, seconds=0.0)
    folder.mkdir(parents=True, exist_ok=True)
    start, done = time.perf_counter(), sum(shard["docs"] for shard in manifest["shards"])
    problems = InputProblems()
    counts = [0] * len(sources)

    def every_doc() -> Iterator[Doc]:
        for i, source in enumerate(sources):
            for doc in source_docs(teacher, source, problems):
                counts[i] += 1
                yield doc

    def skip_done(docs: Iterator[Doc]) -> Iterator[Doc]:
        # why count rather than seek: every reader streams in a fixed order, so the first `done` documents are
        # exactly those of the shards already written (their tokenization is cheap next to the teacher)
        for i, doc in enumerate(docs):
            if i >= done:
                yield doc

    pending: List[SilverDoc] = []
    labelled, last = 0, start
    for batch in teacher_batches(teacher, skip_done(every_doc()), head):
        pending.extend(batch)
        labelled += len(batch)
        while len(pending) >= shard_size:
            _add_shard(folder, manifest, pending[:shard_size], temperature, on_shard, last)
            pending, last = pending[shard_size:], time.perf_counter()
    if pending:
        _add_shard(folder, manifest, pending, temperature, on_shard, last)
    if not manifest["shards"]:
        raise SetupError(f"no text to label in {', '.join(map(str, sources))}: give --input texts to distil on")
    empty = [path for path, n in zip(sources[1:], counts[1:]) if n == 0]
    if empty:  # why refuse: going on would distil on the training texts alone, and look like it used the input
        raise SetupError(
            f"{empty[0]} holds no text to label ({problems.count} input(s) skipped, as said above): the unlabelled "
            f"input is a .txt file (a text a line), a folder of .txt files, JSONL or Parquet"
        )
    manifest["sources"] = [{"path": str(path), "docs": n} for path, n in zip(sources, counts)]
    manifest["skipped"] = problems.count
    manifest["complete"] = True
    write_text_atomic(folder / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return Labels(folder, manifest, reused=False, labelled_docs=labelled, seconds=time.perf_counter() - start)


def _current_manifest(folder: Path, wanted: dict) -> dict:
    """The manifest of the labels in `folder` when they were made as `wanted` says (whole, or interrupted);
    else a fresh one, the folder emptied: another teacher, input or temperature reuses nothing."""
    manifest = read_manifest(folder)
    if manifest is not None and manifest.get("fingerprint") == wanted:
        return manifest
    remove(folder)
    return {"fingerprint": wanted, "shards": [], "sources": [], "complete": False}


def _add_shard(folder: Path, manifest: dict, items, temperature: float, on_shard, started: float) -> None:
    """Write a shard, then the manifest that names it (a kill between the two only costs that shard), with
    the seconds since `started` (the previous shard, or the run's start): a labelling done over several runs
    still adds up to its whole time."""
    entry = write_shard(folder, len(manifest["shards"]), items, temperature)
    entry["seconds"] = round(time.perf_counter() - started, 3)
    manifest["shards"].append(entry)
    write_text_atomic(folder / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    if on_shard is not None:
        on_shard(len(manifest["shards"]), sum(shard["docs"] for shard in manifest["shards"]))


def read_shard(labels: Labels, entry: dict, vocab) -> List[SilverDoc]:
    """One shard's documents with their labels."""
    docs = list(DocBin().from_disk(labels.folder / f"{entry['name']}.spacy").get_docs(vocab))
    with numpy.load(labels.folder / f"{entry['name']}.npz") as arrays:
        bounds = numpy.cumsum(arrays["lengths"])[:-1]
        probs = numpy.split(arrays["probs"], bounds)
        tags = numpy.split(arrays["tags"], bounds)
    return [SilverDoc(doc, p, t) for doc, p, t in zip(docs, probs, tags)]


def stream_silver(labels: Labels, vocab, *, limit: Optional[int], seed: int) -> Iterator[SilverDoc]:
    """The labelled documents forever, a shard at a time: shards in a new random order each epoch, documents
    shuffled within a shard. `limit`: only the first `limit` documents of the labelling (None: all)."""
    rng = random.Random(seed)
    entries, start = [], 0
    for entry in labels.manifest["shards"]:
        keep = entry["docs"] if limit is None else max(0, min(entry["docs"], limit - start))
        if keep:
            entries.append((entry, keep))
        start += entry["docs"]
    if not entries:
        return
    while True:
        rng.shuffle(entries)
        for entry, keep in entries:
            items = read_shard(labels, entry, vocab)[:keep]
            rng.shuffle(items)
            yield from items
