"""Knowledge distillation: a small CNN pipeline (the student) learns a trained transformer pipeline (the teacher).

The teacher labels the training texts and any unlabelled in-domain texts once (`labels`: per-token BILUO
distributions at a temperature, stored in shards and reused); the student (configs/student.cfg: spaCy's
MultiHashEmbed + MaxoutWindowEncoder under the same token_ner head) learns from gold documents and those
labels (`student`); its entity scores are calibrated on dev like the teacher's, and both are measured side
by side on the CPU (`compare`). The result is an ordinary pipeline folder that evaluate, report, package,
predict and serve take. spaCy v4's `spacy distill` does the same with a teacher in memory; spaCy 3 has none.
"""

from __future__ import annotations

import gc
import hashlib
import json
import resource
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional

import spacy

from ..corpus.convert import read_docs
from ..evaluation.trained_on import trained_on_record
from ..training.calibration import calibrate
from ..training.checkpoints import checkpoints
from ..training.config_file import CREATE_CONFIG_FIX, read_config
from ..training.train import Checkpointing, finished_promotion, resume_point
from ..util.errors import SetupError
from ..util.outputs import content_sha256, one_run_at_a_time, remove, replace_together, write_text_atomic
from ..util.runtime import select_device
from .compare import compare as compare_models  # as: `iob_ner.distill.compare` stays the module
from .labels import Labels, label_texts
from .student import HEAD_FACTORY, StudentRun, StudentSettings, build_student, gold_examples

OUTPUTS = ("model-best", "model-last", "log.jsonl", "calibration.json", "distillation.json")
RUN = ".run"  # where the student trains, inside the output folder; its files replace the outputs at the end
PROMOTION = ".promotion.json"  # in the output folder while the run's outputs replace the old ones


def peak_memory_mb() -> float:
    """This process's peak resident memory so far (Linux reports kilobytes)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def teacher_head_name(nlp, teacher: Path) -> str:
    """The teacher's token_ner component: distillation needs its per-token distributions."""
    names = [name for name in nlp.pipe_names if nlp.get_pipe_meta(name).factory == HEAD_FACTORY]
    if not names:
        raise SetupError(
            f"{teacher} has no token_ner component (its entities come from {', '.join(nlp.pipe_names) or 'nothing'}): "
            f"distillation learns the token head's per-token distributions; train the teacher with --vars.ner_head token"
        )
    return names[-1]


def gold_labels(train: Path) -> List[str]:
    return sorted({ent.label_ for doc in read_docs(train, spacy.blank("en").vocab) for ent in doc.ents})


def label_sources(train: Path, unlabelled: Optional[Path]) -> List[Path]:
    """What the teacher labels: the gold training corpus, then the unlabelled texts (unless they are the same
    file). Its paths are part of the labels' fingerprint: whoever labels ahead of `distill` must use it."""
    return [train] + ([unlabelled] if unlabelled is not None and unlabelled.resolve() != train.resolve() else [])


def check_unlabelled(unlabelled: Optional[Path], held_out: Dict[str, Optional[Path]]) -> None:
    """Refuse a held-out corpus (dev or test: the same path, or the same bytes under another name, alone or in
    a folder) as the unlabelled texts: the student would learn the teacher's labels of the very documents it
    is then scored on, and its score would leak."""
    if unlabelled is None or not unlabelled.exists():
        return
    candidates = [unlabelled]
    if unlabelled.is_dir():
        candidates += sorted(p for p in unlabelled.rglob("*.spacy") if p.is_file())
    for name, corpus in held_out.items():
        if corpus is None or not corpus.exists():
            continue
        digest = None
        for candidate in candidates:
            itself = candidate.resolve() == corpus.resolve()
            same = itself
            if not same and candidate.is_dir() == corpus.is_dir():
                if corpus.is_dir() or candidate.stat().st_size == corpus.stat().st_size:
                    digest = digest or content_sha256(corpus)
                    same = content_sha256(candidate) == digest
            if same:
                what = "is" if itself else "is a copy of"
                if candidate != unlabelled:
                    what = f"holds {candidate}, which {what}"
                raise SetupError(
                    f"the unlabelled input {unlabelled} {what} the {name} corpus {corpus}: the student would learn "
                    f"the teacher's labels of the documents it is then scored on, and its {name} score would leak; "
                    f"pass texts that are in no dev or test split (--vars.distill_input my/unlabelled.txt), or "
                    f"the training corpus (corpus/train.spacy, the default)"
                )


def label_with_teacher(
    teacher: Path, sources, labels_dir: Path, *, temperature: float, shard_size: int, on_shard=None
) -> Labels:
    """Load the teacher, label (or reuse the labels of) `sources` (the first: the gold training corpus), and let
    the teacher go."""

    nlp = spacy.load(teacher)
    head = teacher_head_name(nlp, teacher)
    known = nlp.get_pipe(head).labels
    unknown = sorted(set(gold_labels(sources[0])) - set(known))
    if unknown:  # why here: before hours of labelling, not after
        raise SetupError(
            f"{sources[0]} has label(s) {', '.join(unknown)} that the teacher {teacher} does not predict (it knows "
            f"{', '.join(known)}): distil a teacher trained on this corpus"
        )
    labels = label_texts(
        nlp, teacher, sources, labels_dir, head=head, temperature=temperature, shard_size=shard_size, on_shard=on_shard
    )
    del nlp
    gc.collect()  # why: the teacher's weights are not needed while the student trains
    return labels


def distill_pipeline(
    *,
    teacher: Path,
    config: Path,
    output: Path,
    train: Path,
    dev: Path,
    test: Optional[Path] = None,
    unlabelled: Optional[Path] = None,
    labels_dir: Path,
    settings: StudentSettings = StudentSettings(),
    shard_size: int = 10_000,
    gpu_id: Optional[int] = -1,
    batch_size: int = 128,
    checkpointing: Checkpointing = Checkpointing(),
    on_shard=None,
    on_evaluation=None,
) -> Dict[str, Any]:
    """Distil `teacher` into the student of `config`; writes `output`/model-best (calibrated on dev),
    model-last, log.jsonl, calibration.json and distillation.json (settings, timings, peak memory, and teacher
    and student side by side on `test`, else dev). Returns distillation.json's content. `on_shard(shards, docs)`
    and `on_evaluation(step, dev F, losses)` are told of each shard of labels and each evaluation.

    The student trains in `output`/.run with checkpoints (`checkpointing`), as `train` does: after Ctrl-C,
    kill -9 or a crash the same call goes on from the last checkpoint, exactly; its outputs replace the old
    ones together at the end (a kill meanwhile is finished by the next call). One run at a time per output."""
    settings.check()
    checkpointing.check()
    for path, what in ((teacher, "teacher pipeline"), (train, "training corpus"), (dev, "dev corpus")):
        if not path.exists():
            raise SetupError(f"the {what} {path} does not exist (run `spacy project run all` first)")
    check_unlabelled(unlabelled, {"dev": dev, "test": test})
    # one run per output folder: two would train the same steps into the same checkpoints and pipelines
    with one_run_at_a_time(output, "distill"):
        _, device = select_device(gpu_id)
        sources = label_sources(train, unlabelled)
        labels = None
        if settings.use_silver:
            labels = label_with_teacher(
                teacher, sources, labels_dir, temperature=settings.temperature, shard_size=shard_size, on_shard=on_shard
            )
        labelling_peak = peak_memory_mb()
        fingerprints = training_input_digests(config, train, dev, labels, settings)
        if finished_promotion(output, fingerprints, checkpointing.resume):
            return json.loads((output / "distillation.json").read_text(encoding="utf8"))
        resume_from = resume_point(output / RUN, fingerprints, checkpointing.resume)
        try:
            run = _student_run(
                config, output / RUN, train, dev, labels, settings, fingerprints, checkpointing, on_evaluation
            )
            run.run(resume_from)
            record = _finish(run, teacher, train, dev, test, labels, settings, batch_size)
            record.update(device=device, peak_memory_mb_labelling=labelling_peak, peak_memory_mb=peak_memory_mb())
            write_text_atomic(run.output / "distillation.json", json.dumps(record, indent=2) + "\n")
        except BaseException:
            # the previous student stays as it was, and the teacher's labels for a rerun; the run's
            # checkpoints stay for that rerun to go on from
            if not checkpoints(output / RUN):
                remove(output / RUN)
            raise
        # together, even across a kill -9: a rerun that finds the record finishes it (finished_promotion)
        pairs = [(run.output / name, output / name) for name in OUTPUTS]
        replace_together(pairs, output / PROMOTION, removed=[run.output], note={"fingerprints": fingerprints})
    return record


def training_input_digests(
    config: Path, train: Path, dev: Path, labels: Optional[Labels], settings: StudentSettings
) -> Dict[str, str]:
    """What a checkpoint must match to be resumed: the student's config, the gold corpora, the teacher's labels
    (what they were made from: the teacher's files, the texts, the temperature) and the distillation
    settings."""
    labelling = "none" if labels is None else json.dumps(labels.manifest["fingerprint"], sort_keys=True)
    return {
        "config": content_sha256(config),
        "training corpus": content_sha256(train),
        "dev corpus": content_sha256(dev),
        "teacher labelling": hashlib.sha256(labelling.encode("utf8")).hexdigest(),
        "distillation setting": hashlib.sha256(json.dumps(asdict(settings), sort_keys=True).encode()).hexdigest(),
    }


def _student_run(
    config: Path,
    folder: Path,
    train: Path,
    dev: Path,
    labels: Optional[Labels],
    settings: StudentSettings,
    fingerprints: Dict[str, str],
    checkpointing: Checkpointing,
    on_evaluation,
) -> StudentRun:
    """The student built with the teacher's labels, ready to train in `folder`."""
    read_config(config, fix=CREATE_CONFIG_FIX)  # one sentence naming the file when it does not parse
    tag_labels = gold_labels(train)
    if labels is not None:  # the teacher's, in its order: the student's tag columns line up with its labels
        tag_labels = list(dict.fromkeys(name[2:] for name in labels.tag_names if name != "O"))
    overrides = {"paths.train": str(train), "paths.dev": str(dev), "system.seed": settings.seed}

    def read_gold(nlp):
        return gold_examples(nlp, list(read_docs(train, nlp.vocab)))

    nlp, head, training, gold = build_student(config, overrides, tag_labels, read_gold)
    dev_examples = gold_examples(nlp, list(read_docs(dev, nlp.vocab)))
    # what evaluate compares a corpus with: the gold corpora (the teacher's labels are of other texts too)
    record = trained_on_record(
        train, dev, {"training corpus": content_sha256(train), "dev corpus": content_sha256(dev)}
    )
    folder.mkdir(parents=True, exist_ok=True)
    return StudentRun(
        nlp,
        head,
        training,
        folder,
        dev_examples,
        gold,
        labels,
        settings,
        fingerprints=fingerprints,
        checkpoint_every=checkpointing.every,
        checkpoints_kept=checkpointing.kept,
        on_evaluation=on_evaluation,
        trained_on=record,
    )


def _finish(run, teacher, train, dev, test, labels, settings, batch_size) -> Dict[str, Any]:
    """Calibrate the best student on dev, compare it with the teacher, and say what was done."""
    calibration = calibrate(run.output / "model-best", dev, run.output / "calibration.json")
    corpus = test if test is not None and test.exists() else dev
    gold = list(read_docs(corpus, spacy.blank("en").vocab))
    comparison = compare_models(teacher, run.output / "model-best", gold, batch_size)
    summary = run.summary()
    silver = 0
    if labels is not None:
        train_docs = labels.manifest["sources"][0]["docs"]
        extra = labels.docs - train_docs
        silver = train_docs + (extra if settings.max_unlabelled is None else min(extra, settings.max_unlabelled))
    return {
        "teacher": str(teacher),
        "settings": asdict(settings),
        "labels": None if labels is None else str(labels.folder),
        "labels_reused": bool(labels is not None and labels.reused),
        "silver_docs": silver,
        "sources": [] if labels is None else labels.manifest["sources"],
        "timing": {
            "labelling_seconds": 0.0 if labels is None else round(labels.seconds, 1),
            "labels_made_in_seconds": None if labels is None else labels.all_seconds,  # over every run
            "labelled_docs": 0 if labels is None else labels.labelled_docs,
            "training_seconds": summary["seconds"],
        },
        "training": summary,
        "calibration": calibration,
        "comparison_corpus": str(corpus),
        "comparison": comparison,
    }
