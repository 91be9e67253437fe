"""Checking the corpus before training: NER checks per label and split, then `spacy debug data`; fail on errors.

`spacy debug data` runs its NER checks only for a component made by spaCy's `ner` factory. This project's
default head is `token_ner`, so spaCy is run on a temporary copy of the config in which every token_ner
component is replaced by the transition `ner` of ner_transition.cfg beside the config: the copy is only read, never
trained. The project's own checks add what spaCy does not look at: the test split, and labels of dev or
test that train never shows (the model can never predict them).
"""

import copy
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from spacy.vocab import Vocab
from wasabi import table

from ..training.config_file import config_lang, read_config
from ..util.errors import ConfigFileError, DataError, SetupError
from ..util.outputs import write_text_atomic
from ..util.runtime import resolve_transformer
from .convert import read_docs
from .prepare import read_split_record
from .split_checks import DocumentKey, document_key, find_overlaps, listing, unseen_labels, unseen_sentence
from .tokenizer_fit import fit_lines

try:  # spaCy's own threshold for "Low number of examples for label", so that both reports agree
    from spacy.cli.debug_data import NEW_LABEL_THRESHOLD
except ImportError:
    NEW_LABEL_THRESHOLD = 50

# `spacy debug data` fails small corpora on size alone; that is advice, and the sample is small.
ADVICE = re.compile(r"^Low number of examples")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
SUMMARY = re.compile(r"^\d+ errors?$")
SHOWN = 3  # examples quoted per finding
ICONS = {"good": "✔", "info": "ℹ", "warn": "⚠", "fail": "✘"}
Finding = Tuple[str, str]  # (good | info | warn | fail, text); fail: an error, debug-data stops


@dataclass
class SplitStats:
    """What the NER checks need of one split, gathered in one streaming pass."""

    name: str
    docs: int = 0
    tokens: int = 0
    labels: Counter = field(default_factory=Counter)
    crossing: int = 0  # entities spanning a sentence start
    crossing_examples: List[str] = field(default_factory=list)  # the first few, quoted
    keys: List[DocumentKey] = field(default_factory=list)  # each document's content key (split_checks)


def split_stats(name: str, docs: Iterable) -> SplitStats:
    stats = SplitStats(name)
    for index, doc in enumerate(docs):
        stats.docs += 1
        stats.tokens += len(doc)
        stats.keys.append(document_key(token.text for token in doc))
        if not doc.ents:
            continue
        starts = doc.to_array("SENT_START")
        for ent in doc.ents:
            stats.labels[ent.label_] += 1
            # spaCy's transition ner cannot predict these (no entity may span a sentence start), and the
            # converter never writes them: one means a corpus built elsewhere, or split sentences.
            if (starts[ent.start + 1 : ent.end] == 1).any():
                stats.crossing += 1
                if len(stats.crossing_examples) < SHOWN:
                    stats.crossing_examples.append(f"{ent.text!r} ({ent.label_}, doc {index})")
    return stats


def gather_split_stats(name: str, path: Path) -> SplitStats:
    """The statistics of a .spacy file or folder of shards; anything unreadable is one DataError."""
    if not path.exists():
        raise DataError(f"the {name} corpus {path} does not exist: run `spacy project run convert` first")
    try:
        stats = split_stats(name, read_docs(path, Vocab()))
    except OSError as err:
        raise DataError(f"cannot read the {name} corpus {path}: {err.strerror or err}") from None
    except Exception:  # spaCy's E1014, zlib, msgpack and KeyError alike mean "not a DocBin"
        raise DataError(
            f"the {name} corpus {path} is not a spaCy DocBin (.spacy) file: make it with `spacy project run convert`"
        ) from None
    if stats.docs == 0:
        raise DataError(f"the {name} corpus {path} holds no documents: check its IOB file and rerun convert")
    return stats


def ner_findings(splits: Dict[str, SplitStats], dev_is_test: bool = False) -> List[Finding]:
    """Documents in two splits, labels unseen in train, labels too rare to learn, labels missing from an
    evaluation split, crossings. `dev_is_test`: dev and test are the same on purpose (convert's setting)."""
    train = splits["train"]
    findings: List[Finding] = _overlap_findings(splits, dev_is_test)
    for stats in splits.values():
        if not stats.labels:
            findings.append(("warn", f"{stats.name}: no entities at all in {stats.docs} documents"))
    for stats in (s for name, s in splits.items() if name != "train"):
        unseen = unseen_labels(train.labels, stats.labels)
        if unseen:
            findings.append(("warn", unseen_sentence(stats.name, unseen)))
        absent = {label: n for label, n in train.labels.items() if label not in stats.labels}
        if absent and stats.labels:
            findings.append(
                (
                    "info",
                    f"{stats.name}: no entity of label(s) {', '.join(sorted(absent))}: "
                    f"{stats.name} scores say nothing about them",
                )
            )
    rare = {label: n for label, n in train.labels.items() if n <= NEW_LABEL_THRESHOLD}
    if rare:
        findings.append(
            (
                "warn",
                f"train: few examples for {len(rare)} label(s), spaCy advises more than "
                f"{NEW_LABEL_THRESHOLD} each: {listing(rare)}",
            )
        )
    for stats in splits.values():
        if stats.crossing:
            findings.append(
                (
                    "warn",
                    f"{stats.name}: {stats.crossing} entities cross a sentence boundary, "
                    f"e.g. {'; '.join(stats.crossing_examples)}",
                )
            )
    if not any(level in ("warn", "fail") for level, _ in findings):
        findings.append(
            ("good", "no document in two splits; every dev/test label occurs in train, none is rare, none crosses")
        )
    return findings


def _overlap_findings(splits: Dict[str, SplitStats], dev_is_test: bool) -> List[Finding]:
    """Documents that two splits share: an error when one split is mostly another, else a warning."""
    overlaps = find_overlaps({name: stats.keys for name, stats in splits.items()}, dev_is_test=dev_is_test)
    return [("fail" if o.same_data else "warn", f"{o.split}: {o.sentence()}") for o in overlaps]


def counts_table(splits: Dict[str, SplitStats]) -> Tuple[List[str], List[List[object]]]:
    """(header, rows): entities per label and split, then the totals."""
    labels = sorted(set().union(*(s.labels for s in splits.values())))
    header = ["label", *splits]
    rows: List[List[object]] = [[label, *(s.labels.get(label, 0) for s in splits.values())] for label in labels]
    rows.append(["(all entities)", *(sum(s.labels.values()) for s in splits.values())])
    rows.append(["(documents)", *(s.docs for s in splits.values())])
    rows.append(["(tokens)", *(s.tokens for s in splits.values())])
    return header, rows


def data_check_config(config: Path, transition_block: Optional[Path] = None) -> Tuple[str, List[str]]:
    """The config's text with token_ner components swapped for the transition ner (the [components.ner] block
    of `transition_block`, default: ner_transition.cfg beside the config, as create-config finds it), and
    their names."""
    cfg = read_config(config)
    block = transition_block or config.with_name("ner_transition.cfg")
    transition = read_config(block, interpolate_check=False)["components"]["ner"]
    swapped = []
    for name, block in cfg.get("components", {}).items():
        if block.get("factory") == "token_ner":
            new = copy.deepcopy(transition)
            if "tok2vec" in block.get("model", {}):  # keep the user's listener (width, upstream, pooling)
                new["model"]["tok2vec"] = block["model"]["tok2vec"]
            cfg["components"][name] = new
            swapped.append(name)
    return cfg.to_str(), swapped


def classify(report: str) -> Tuple[List[str], List[str]]:
    """(errors, advice) among the ✘ lines of a `spacy debug data` report."""
    failures = [line.strip("✘ ").strip() for line in ANSI.sub("", report).splitlines() if line.startswith("✘")]
    errors = [f for f in failures if not ADVICE.match(f) and not SUMMARY.match(f)]
    return errors, [f for f in failures if ADVICE.match(f)]


def run_spacy_debug_data(*, config_text: str, train: Path, dev: Path, model: str) -> Tuple[str, int]:
    """`spacy debug data` on a temporary config file: (its report without colours, its exit status)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.cfg"
        path.write_text(config_text, encoding="utf8")
        command = [
            sys.executable,
            "-m",
            "spacy",
            "debug",
            "data",
            str(path),
            "--paths.train",
            str(train),
            "--paths.dev",
            str(dev),
            "--paths.transformer",
            model,
        ]
        # Log-friendly wasabi: no spinner frames in the saved report; no tokenizers fork warnings either.
        env = {**os.environ, "WASABI_LOG_FRIENDLY": "1", "TOKENIZERS_PARALLELISM": "false"}
        result = subprocess.run(command, capture_output=True, text=True, env=env)
    return ANSI.sub("", result.stdout + result.stderr), result.returncode


def project_section(splits: Dict[str, SplitStats], findings: List[Finding]) -> str:
    header, rows = counts_table(splits)
    lines = [
        "NER data checks (scripts/debug_data.py): entities per label and split",
        "",
        table(rows, header=header, divider=True, aligns=["l"] + ["r"] * (len(header) - 1)).strip("\n"),
        "",
    ]
    lines += [f"{ICONS[level]} {text}" for level, text in findings]
    return "\n".join(lines) + "\n"


@dataclass
class ProjectChecks:
    """The project's own checks of the corpus, made before spaCy's: what `debug-data` prints first."""

    config_text: str  # the config as spaCy's debug data reads it (token_ner swapped for the transition ner)
    swapped: List[str]
    splits: Dict[str, SplitStats]
    findings: List[Finding]


def project_checks(
    *,
    config: Path,
    train: Path,
    dev: Path,
    test: Optional[Path],
    transition_block: Optional[Path] = None,
    dev_is_test: bool = False,
) -> ProjectChecks:
    """Read every split once and check it; one DataError for anything that cannot be read."""
    if not config.is_file():
        raise DataError(f"the config {config} does not exist: run `spacy project run create-config` first")
    try:
        config_text, swapped = data_check_config(config, transition_block)
    except ConfigFileError as err:
        raise DataError(str(err)) from None
    paths = {"train": train, "dev": dev, **({"test": test} if test is not None else {})}
    splits = {name: gather_split_stats(name, path) for name, path in paths.items()}
    lang = config_lang(config)
    findings = ner_findings(splits, dev_is_test) + tokenizer_fit_findings(train.parent, lang)
    return ProjectChecks(config_text, swapped, splits, findings)


def tokenizer_fit_findings(corpus: Path, lang: Optional[str] = None) -> List[Finding]:
    """convert's tokenizer fit check (corpus/split.json), as findings: whether spaCy's tokenizer can find
    the export's entities in raw text; and a warning where it checked another language's tokenizer than the
    config's `lang` (the pipeline's). Nothing where the corpus was converted before the check existed."""
    fit = (read_split_record(corpus) or {}).get("tokenizer_fit")
    if not fit:
        return []
    line, warnings = fit_lines(fit)
    findings = [("warn", warning) for warning in warnings] or [("good", line)]
    if lang is not None and fit["lang"] != lang:
        findings.insert(
            0,
            (
                "warn",
                f"convert checked the tokenizer fit with spaCy's '{fit['lang']}' tokenizer, but the config's "
                f"pipeline is '{lang}' ([nlp] lang): convert again with --vars.lang {lang}, or create the config "
                f"with --vars.lang {fit['lang']}",
            ),
        )
    return findings


def spacy_checks(
    checks: ProjectChecks, *, config: Path, train: Path, dev: Path, output: Path, transformer: str
) -> Tuple[List[str], List[str]]:
    """Run `spacy debug data` on train and dev, save the report with the project's checks; returns spaCy's
    (errors, advice)."""
    try:
        model = resolve_transformer(transformer)
    except SetupError as err:
        raise DataError(str(err)) from None
    report, returncode = run_spacy_debug_data(config_text=checks.config_text, train=train, dev=dev, model=model)
    note = (
        f"spacy debug data, on a copy of {config} in which {', '.join(checks.swapped)} (token_ner) is spaCy's "
        f"transition ner, for its NER checks only:\n"
        if checks.swapped
        else f"spacy debug data on {config}:\n"
    )
    write_text_atomic(output, project_section(checks.splits, checks.findings) + "\n" + note + report)
    errors, advice = classify(report)
    if returncode != 0 and not errors and not advice:
        tail = [line for line in report.splitlines() if line.strip()][-1:] or ["no output"]
        errors = [f"it stopped with exit status {returncode}: {tail[0].strip()} (the end of its output is in {output})"]
    return errors, advice
