"""Turning the project's inputs into corpus/{train,dev,test}: convert what is given, carve what is missing.

Any of these works: a train file alone (dev and test carved from it), train and test (dev carved from
train), or train, dev and test. Carving takes whole documents, seeded and stratified by label, and
corpus/split.json lists where each source document went. The shipped sample is the one train file
that comes with its own dev and test files (assets/sample.json): a user's file is never paired with them.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..iob.documents import MAX_DOCUMENT_TOKENS, MAX_SENTENCE_TOKENS
from ..iob.reader import read_iob
from ..iob.report import ReadReport
from ..util.errors import SetupError, SplitError
from ..util.outputs import content_sha256, outputs_together, write_text_atomic
from .convert import convert_iob
from .split_checks import DocumentKey, document_key, find_overlaps, unseen_labels
from .splits import stratified_parts
from .tokenizer_fit import check_export

AUTO = "auto"
SPLITS = ("train", "dev", "test")
SAMPLE_MANIFEST = Path("assets") / "sample.json"  # the shipped sample's own dev and test, relative to the project


@dataclass
class Plan:
    """Where each split comes from: a file of its own, or carved from the train file."""

    files: Dict[str, Path]  # split -> the file it is converted from (carved splits: the train file)
    carved: List[str]  # splits carved from the train file
    note: str  # one sentence: what was decided and why


def sample_pair(train: Path, manifest: Path = SAMPLE_MANIFEST) -> Optional[Dict[str, Path]]:
    """The shipped sample's dev and test files, when `train` is the shipped sample's train file, byte for byte."""
    if not manifest.exists():
        return None
    sample = json.loads(manifest.read_text(encoding="utf8"))
    if content_sha256(train) != sample["train"]["sha256"]:
        return None
    pair = {split: manifest.resolve().parent / sample[split]["file"] for split in ("dev", "test")}
    return pair if all(path.exists() for path in pair.values()) else None


def plan_splits(
    train: Path, dev: str, test: str, *, dev_is_test: bool = False, manifest: Path = SAMPLE_MANIFEST
) -> Plan:
    """Decide where train, dev and test come from; refuses a dev set that is the test set unless asked."""
    given = {"dev": dev, "test": test}
    for split, value in given.items():
        if value != AUTO and not Path(value).is_file():
            raise SetupError(
                f"the {split} file {value} does not exist: pass an IOB file, or {AUTO!r} to carve "
                f"{split} documents from the train file"
            )
    note = ""
    if dev == AUTO and test == AUTO:
        pair = sample_pair(train, manifest)
        if pair is not None:
            return Plan(
                {"train": train, **pair}, [], f"{train} is the shipped sample: its own dev and test files are used"
            )
    files = {"train": train}
    carved = [split for split, value in given.items() if value == AUTO]
    for split, value in given.items():
        files[split] = train if value == AUTO else Path(value)
    if carved:
        note = f"{' and '.join(carved)} carved from {train} (whole documents, stratified by label)"
    else:
        note = "train, dev and test from their own files"
    _check_distinct_files(files, carved, dev_is_test)
    return Plan(files, carved, note)


def _check_distinct_files(files: Dict[str, Path], carved: Sequence[str], dev_is_test: bool) -> None:
    """A file given for two splits (the same path, or the same bytes) is refused before anything is read;
    dev = test only with dev_is_test. Files that differ but share documents are found later, by content."""
    given = [split for split in SPLITS if split not in carved]
    for i, first in enumerate(given):
        for second in given[i + 1 :]:
            a, b = files[first], files[second]
            same = a.resolve() == b.resolve() or (
                a.stat().st_size == b.stat().st_size and content_sha256(a) == content_sha256(b)
            )
            if (first, second) == ("dev", "test"):
                _check_dev_is_test(same, a, dev_is_test)
            elif same:
                raise SetupError(
                    f"the {second} file {b} is the {first} file{'' if a == b else f' {a}'} (the same data): the "
                    f"{second} score would measure what the model memorised. Pass a file of other documents, "
                    f"or --vars.{second} auto to carve {second} documents from the train file"
                )


def _check_dev_is_test(same: bool, dev: Path, dev_is_test: bool) -> None:
    """Selecting the best checkpoint on the test set must not happen by accident."""
    if same and not dev_is_test:
        raise SetupError(
            f"the dev file and the test file hold the same data ({dev}): the best "
            f"checkpoint would be chosen on the test set. Pass --vars.dev auto to carve dev from "
            f"train, or --vars.dev_is_test true to accept an optimistic test score"
        )
    if not same and dev_is_test:
        raise SetupError("dev_is_test is true, but the dev and test files differ: drop the setting")


def document_labels(path: Path, **read_options) -> Tuple[List[Counter], List[int], List[DocumentKey]]:
    """Entity labels, first line and content key of every document of an IOB file (one streaming pass)."""
    labels, first_lines, keys = [], [], []
    for document in read_iob(path, **read_options):
        labels.append(Counter(label for _, _, label in document.spans))
        first_lines.append(document.first_line)
        keys.append(document_key(document.words))
    return labels, first_lines, keys


def carve(
    plan: Plan, labels: List[Counter], *, dev_share: float, test_share: float, seed: int, keys: Sequence = ()
) -> List[str]:
    """The split of each train-file document; documents with the same `keys` (the same words) go together."""
    parts = ["train"] + plan.carved
    shares = {
        "train": 1.0 - dev_share * ("dev" in plan.carved) - test_share * ("test" in plan.carved),
        "dev": dev_share,
        "test": test_share,
    }
    for part in plan.carved:
        if shares[part] <= 0:
            raise SplitError(f"{part}_share must be above 0 to carve {part} from the train file, not {shares[part]:g}")
    if shares["train"] <= 0:
        raise SplitError(f"dev_share {dev_share:g} and test_share {test_share:g} leave nothing to train on: lower them")
    if len(labels) < len(parts):
        raise SplitError(
            f"{plan.files['train']} holds {len(labels)} document(s): too few to carve "
            f"{' and '.join(plan.carved)} from; annotate more documents, or pass dev and test files"
        )
    index = stratified_parts(labels, [shares[p] for p in parts], seed, keys=keys or None)
    assigned = [parts[i] for i in index]
    trained = set().union(*(labels[i] for i, split in enumerate(assigned) if split == "train"))
    for split in plan.carved:
        missing = sorted(set().union(*(labels[i] for i, s in enumerate(assigned) if s == split)) - trained)
        # rare: a label with fewer documents than splits goes to train first, but a later repair move of the
        # stratification may take its last train document
        if missing:
            raise SplitError(
                f"the {split} split would hold label(s) {', '.join(missing)} that train lacks: "
                f"change --vars.seed or annotate more documents with them"
            )
    return assigned


def write_corpus(plan: Plan, assigned: List[str], output: Path, **read_options) -> Tuple[Dict[str, ReadReport], dict]:
    """Convert each split to output/<split>.{spacy,json,report.json}; returns the reports, and each split's
    documents as (content key, file:line) lists for the overlap check.

    The train split must hold entities: checked while it is written, so nothing of it is replaced otherwise.
    """
    reports, documents = {}, {}
    for split in SPLITS:
        select = None
        if plan.carved and (split == "train" or split in plan.carved):
            keep = {i for i, s in enumerate(assigned) if s == split}
            select = keep.__contains__
        path = plan.files[split]
        seen: List[Tuple[DocumentKey, str]] = []
        reports[split] = convert_iob(
            path,
            output / split,
            select=select,
            require_entities=split == "train",
            seen=lambda document: seen.append((document_key(document.words), f"{path}:{document.first_line}")),
            **read_options,
        )
        documents[split] = seen
    return reports, documents


def check_overlaps(documents: Dict[str, List[Tuple[DocumentKey, str]]], dev_is_test: bool) -> List[str]:
    """Documents in two splits: SplitError when an evaluation split is mostly another split's documents (the
    corpus stays as it was), else the warnings to print."""
    keys = {split: [key for key, _ in docs] for split, docs in documents.items()}
    places = {split: [where for _, where in docs] for split, docs in documents.items()}
    overlaps = find_overlaps(keys, places, dev_is_test)
    for overlap in overlaps:
        if overlap.same_data:
            raise SplitError(
                f"{overlap.sentence()}. Pass a {overlap.split} file of other documents, or --vars.{overlap.split} "
                f"auto to carve it from the train file"
            )
    return [f"{overlap.sentence()}: remove them from one of the files" for overlap in overlaps]


SPLIT_RECORD = "split.json"


def read_split_record(corpus: Path) -> Optional[dict]:
    """The corpus folder's split.json (written by convert beside the corpus: where each split's documents
    came from); None where it is missing or unreadable."""
    try:
        return json.loads((Path(corpus) / SPLIT_RECORD).read_text(encoding="utf8"))
    except (OSError, ValueError):
        return None


def split_record(
    plan: Plan, assigned: List[str], first_lines: List[int], reports: Dict[str, ReadReport], seed: int
) -> dict:
    """corpus/split.json: which source documents went where, with entities per label and split."""
    documents = (
        [
            {"file": str(plan.files["train"]), "first_line": line, "split": split}
            for line, split in zip(first_lines, assigned)
        ]
        if plan.carved
        else []
    )
    return {
        "note": plan.note,
        "seed": seed,
        "sources": {split: str(path) for split, path in plan.files.items()},
        "carved": plan.carved,
        "documents_per_split": {split: reports[split].documents for split in SPLITS},
        "entities": {split: dict(sorted(reports[split].entities.items())) for split in SPLITS},
        "carved_documents": documents,
    }


def prepare_corpus(
    *,
    train: Path,
    dev: str,
    test: str,
    output: Path,
    seed: int = 0,
    dev_share: float = 0.1,
    test_share: float = 0.1,
    dev_is_test: bool = False,
    sents_per_doc: int = 1,
    strict: bool = False,
    max_sentence_tokens: int = MAX_SENTENCE_TOKENS,
    max_document_tokens: int = MAX_DOCUMENT_TOKENS,
    manifest: Path = SAMPLE_MANIFEST,
    lang: str = "en",
) -> Tuple[dict, Dict[str, ReadReport]]:
    """Convert and split; `lang`: the language whose tokenizer the tokenizer fit check uses (tokenizer_fit)."""
    plan = plan_splits(train, dev, test, dev_is_test=dev_is_test, manifest=manifest)
    # the label pass and the conversion must cut documents alike, so that their indices match
    read_options = {
        "sents_per_doc": sents_per_doc,
        "strict": strict,
        "max_sentence_tokens": max_sentence_tokens,
        "max_document_tokens": max_document_tokens,
    }
    labels, first_lines, keys = document_labels(train, **read_options) if plan.carved else ([], [], [])
    assigned = (
        carve(plan, labels, dev_share=dev_share, test_share=test_share, seed=seed, keys=keys) if plan.carved else []
    )
    # why together: a failure on the test file must not leave this run's train beside the last run's test
    with outputs_together():
        reports, documents = write_corpus(plan, assigned, output, **read_options)
        record = split_record(plan, assigned, first_lines, reports, seed)
        record["dev_is_test"] = dev_is_test
        record["labels_missing_from_a_split"] = [{"label": label, "split": split} for label, split in _gaps(reports)]
        record["labels_unseen_in_train"] = {
            split: unseen_labels(reports["train"].entities, reports[split].entities) for split in ("dev", "test")
        }
        record["documents_in_two_splits"] = check_overlaps(documents, dev_is_test)
        record["tokenizer_fit"] = check_export(train, lang, **read_options).to_dict()
        write_text_atomic(output / SPLIT_RECORD, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return record, reports


def _gaps(reports: Dict[str, ReadReport]) -> List[Tuple[str, str]]:
    """Train labels that dev or test lacks: their score there is unmeasured."""
    return [
        (label, split)
        for label in sorted(reports["train"].entities)
        for split in ("dev", "test")
        if not reports[split].entities.get(label)
    ]
