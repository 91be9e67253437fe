"""distill: train a small CNN pipeline (the student) on the trained transformer's (the teacher's) outputs, then
score it on dev and test and write its report (teacher and student side by side), as evaluate and report do."""

from pathlib import Path
from typing import Optional

import typer
from wasabi import msg

from iob_ner.distill import distill_pipeline
from iob_ner.distill.compare import speedup_text
from iob_ner.distill.student import MODES, StudentSettings
from iob_ner.evaluation.evaluate import evaluate_pipeline
from iob_ner.evaluation.report.write import write_report
from iob_ner.training.config_file import pipeline_lang, write_config
from iob_ner.training.train import Checkpointing
from iob_ner.util.cli import parse_bool, parse_gpu_id, user_errors


def print_summary(record: dict, output: Path) -> None:
    timing = record["timing"]
    labelled = (
        "reused from an earlier run (same teacher and texts)"
        if record["labels_reused"]
        else f"{timing['labelled_docs']:,} documents labelled in {timing['labelling_seconds']:.0f} s"
    )
    msg.info(f"Teacher labels: {labelled}; student trained in {timing['training_seconds']:.0f} s on {record['device']}")
    side = record["comparison"]
    teacher, student = side["teacher"], side["student"]
    labels = sorted(set(teacher["per_label_f"]) | set(student["per_label_f"]))
    rows = [
        (label, f"{teacher['per_label_f'].get(label, 0):.3f}", f"{student['per_label_f'].get(label, 0):.3f}")
        for label in labels
    ]
    rows.insert(0, ("typed F", f"{teacher['typed']['f']:.3f}", f"{student['typed']['f']:.3f}"))
    rows.append(("words/s (median)", f"{teacher['words_per_second']:,.0f}", f"{student['words_per_second']:,.0f}"))
    msg.table(rows, header=(record["comparison_corpus"], "teacher", "student"), divider=True)
    speedup = speedup_text(side, "the teacher's words/s")
    msg.good(
        f"{output / 'model-best'}: {speedup} on {side['cpu']} "
        f"({side['threads']} thread(s), batch {side['batch_size']}), {100 * side['f_difference']:+.1f} F points; "
        f"peak memory {record['peak_memory_mb']:,.0f} MB -> {output / 'distillation.json'}"
    )


def main(
    teacher: Path = typer.Argument(..., help="The trained transformer pipeline (training/model-best)"),
    config: Path = typer.Argument(..., dir_okay=False, help="The student's config"),
    output: Path = typer.Argument(..., help="Folder for the student's model-best, model-last and distillation.json"),
    base_config: Optional[Path] = typer.Option(
        None, exists=True, dir_okay=False, help="Write CONFIG from this base first, unless CONFIG was edited by hand"
    ),
    train: Path = typer.Option(..., exists=True, help="Gold training corpus (.spacy)"),
    dev: Path = typer.Option(..., exists=True, help="Dev corpus (.spacy): best step and calibration"),
    test: Optional[Path] = typer.Option(None, help="Test corpus (.spacy): teacher and student side by side"),
    input: Optional[Path] = typer.Option(
        None,
        help="Unlabelled texts for the teacher to label (a .txt file a text a line, a folder, JSONL, JSON, Parquet)",
    ),
    labels_dir: Path = typer.Option(Path("training/distill-labels"), help="Where the teacher's labels are kept"),
    mode: str = typer.Option("soft", help=f"Targets: {', '.join(MODES)}"),
    temperature: float = typer.Option(2.0, help="Distillation temperature of the soft targets"),
    max_steps: Optional[int] = typer.Option(None, help="Training steps (default: the config's; 0 is refused)"),
    eval_frequency: Optional[int] = typer.Option(None, help="Steps between dev evaluations (default: the config's)"),
    max_unlabelled: int = typer.Option(-1, help="Use at most this many of the unlabelled texts (-1: all)"),
    shard_size: int = typer.Option(10000, help="Documents per shard of teacher labels"),
    seed: int = typer.Option(0),
    batch_size: int = typer.Option(128, help="Batch size of the teacher-student speed comparison"),
    gpu_id: str = typer.Option("auto", help="GPU id, 'cpu', or 'auto' (a GPU if present)"),
    gpu_id_env: str = typer.Option("", help="Used where --gpu-id is 'auto' (project.yml passes $GPU_ID)"),
    checkpoint_every: int = typer.Option(0, help="Steps between resumable checkpoints (0: at each evaluation)"),
    checkpoints_kept: int = typer.Option(1, help="How many of the newest checkpoints to keep"),
    resume: str = typer.Option("true", help="Go on from an interrupted run's last checkpoint (false: start over)"),
) -> None:
    settings = StudentSettings(
        temperature=temperature,
        mode=mode,
        max_steps=max_steps,  # why not `or None`: 0 would silently become the config's 20000 steps
        eval_frequency=eval_frequency,
        max_unlabelled=None if max_unlabelled < 0 else max_unlabelled,
        seed=seed,
    )

    def on_shard(shards: int, docs: int) -> None:
        msg.text(f"teacher labels: shard {shards} written ({docs:,} documents so far)")

    def on_evaluation(step: int, f: float, losses: dict) -> None:
        shown = ", ".join(f"{name} {value:.1f}" for name, value in losses.items())
        msg.text(f"student step {step}: dev F {f:.3f} (losses since the last: {shown})")

    with user_errors(OSError):
        if base_config is not None:
            # the student cuts raw text as its teacher does: the teacher's language
            status = write_config(base_config, config, "token", lang=pipeline_lang(teacher))
            msg.info(f"{config}: {'kept (edited by hand)' if status == 'kept' else status}")
        record = distill_pipeline(
            teacher=teacher,
            config=config,
            output=output,
            train=train,
            dev=dev,
            test=test,
            unlabelled=input,
            labels_dir=labels_dir,
            settings=settings,
            shard_size=shard_size,
            gpu_id=parse_gpu_id(gpu_id, gpu_id_env),
            batch_size=batch_size,
            checkpointing=Checkpointing(every=checkpoint_every, kept=checkpoints_kept, resume=parse_bool(resume)),
            on_shard=on_shard,
            on_evaluation=on_evaluation,
        )
    print_summary(record, output)
    if test is not None:
        with user_errors(OSError):
            score_and_report(output, dev, test)
        msg.good(f"{output / 'metrics-dev.json'}, metrics-test.json, report.md (teacher and student side by side)")


def score_and_report(output: Path, dev: Path, test: Path) -> None:
    """The student's own metrics and report, on the CPU it is made for, as evaluate and report write them."""
    for split, corpus in (("dev", dev), ("test", test)):
        evaluate_pipeline(
            model=output / "model-best",
            corpus=corpus,
            output=output / f"metrics-{split}.json",
            predictions=output / f"predictions-{split}.spacy",
            gpu_id=-1,
        )
    write_report(training_dir=output, test_corpus=test)


if __name__ == "__main__":
    typer.run(main)
