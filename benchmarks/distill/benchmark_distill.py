"""Distillation ablation: what the student gains from the teacher's labels, and what distilling costs.

    python benchmarks/distill/benchmark_distill.py --teacher training/model-best --train corpus/train.spacy \
        --dev corpus/dev.spacy --test corpus/test.spacy --unlabelled ../shared/data/biomed-unlabeled/sentences.txt \
        --output runs/distill.json

Five students from one teacher, each a real `distill` run (scripts/distill.py, a process of its own, so that
each peak memory is its own), with the same student config, steps and seed:

- `gold`: gold training documents only (no teacher);
- `hard`: gold + the teacher's Viterbi tags on the training texts and every unlabelled sentence;
- `soft-N`: gold + the teacher's distributions on the training texts and the first N unlabelled sentences,
  for each N of `--sizes` ("all": every one).

The teacher labels the training texts and all unlabelled sentences once, in a process of its own (its time
and peak memory are recorded; `--label-threads`); every run that learns from the teacher reuses those
shards, each taking its share. `--jobs N` trains N students at a time (the gold-only one while the teacher
labels): on a 2-core machine, two one-thread students side by side halve the benchmark's hours.

Every run measures teacher and student on the test corpus in one process, at the same batch size and
threads (`--threads`, OMP_NUM_THREADS and torch's), on this CPU; with `--jobs` above 1 another job may be
running meanwhile, so the last step measures the last student (the most unlabelled text) and the teacher
again with nothing else running: `quiet_comparison`, the speed figure to quote. Written to `--output`
(JSON) and printed.
"""

import json
import os
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date
from functools import partial
from pathlib import Path
from typing import List, Optional

import typer
from wasabi import msg

from iob_ner.distill import label_sources
from iob_ner.distill.compare import speedup_text
from iob_ner.training.config_file import write_config
from iob_ner.util.outputs import write_text_atomic
from iob_ner.util.runtime import cpu_name, library_versions

ROOT = Path(__file__).resolve().parents[2]
DISTILL = ROOT / "scripts" / "distill.py"
SHARD_SIZE = 10_000  # documents per shard of the teacher's labels (distill's default)
BATCH_SIZE = 128  # of the speed comparisons (distill's default)


def conditions(sizes: str) -> List[dict]:
    """The runs: gold, hard (all sentences), soft at each size."""
    runs = [{"name": "gold", "mode": "gold", "unlabelled": 0}, {"name": "hard", "mode": "hard", "unlabelled": None}]
    for size in [s.strip() for s in sizes.split(",") if s.strip()]:
        count = None if size == "all" else int(size)
        runs.append({"name": f"soft-{size}", "mode": "soft", "unlabelled": count})
    return runs


# Run by a process of its own (`python -c`), so that its threads and peak memory are its own.
LABEL = """
import json, sys
from pathlib import Path
from iob_ner.distill import label_with_teacher, peak_memory_mb
from iob_ner.util.runtime import select_device
from iob_ner.util.cli import parse_gpu_id
a = json.loads(sys.argv[1])
select_device(parse_gpu_id(a["gpu_id"], ""))
labels = label_with_teacher(Path(a["teacher"]), [Path(p) for p in a["sources"]], Path(a["labels_dir"]),
                            temperature=a["temperature"], shard_size=a["shard_size"])
print(json.dumps({"docs": labels.docs, "labelled_docs": labels.labelled_docs, "seconds": round(labels.seconds, 1),
                  "all_seconds": labels.all_seconds, "peak_memory_mb": peak_memory_mb()}))
"""

# The teacher and a student side by side, alone on the machine (the figure to quote when --jobs > 1).
COMPARE = """
import json, sys
from pathlib import Path
import spacy
from iob_ner.corpus.convert import read_docs
from iob_ner.distill.compare import compare
a = json.loads(sys.argv[1])
gold = list(read_docs(Path(a["test"]), spacy.blank("en").vocab))
print(json.dumps(compare(Path(a["teacher"]), Path(a["student"]), gold, a["batch_size"])))
"""


def run_python(args: List[str], threads: int, what: str) -> str:
    """`python ARGS` with `threads` CPU threads; its stdout. A failure stops the benchmark with its output's tail."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "WASABI_LOG_FRIENDLY": "1"}
    result = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-3000:]
        raise SystemExit(f"{what} failed:\n{tail}")
    return result.stdout


def run_one(args: List[str], threads: int) -> None:
    run_python([str(DISTILL), *args], threads, f"distill {' '.join(args[:3])} ...")


def last_json_line(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def summary(name: str, record: dict) -> dict:
    side = record["comparison"]
    return {
        "name": name,
        "mode": record["settings"]["mode"],
        "silver_docs": record["silver_docs"],
        "teacher_test_f": side["teacher"]["typed"]["f"],
        "student_test_f": side["student"]["typed"]["f"],
        "f_difference_points": round(100 * side["f_difference"], 2),
        "student_per_label_f": side["student"]["per_label_f"],
        "teacher_per_label_f": side["teacher"]["per_label_f"],
        "teacher_words_per_second": side["teacher"]["words_per_second"],
        "student_words_per_second": side["student"]["words_per_second"],
        "speedup": side["speedup"],  # median of alternate rounds (distill.compare), with their spread
        "speedup_min": side.get("speedup_min"),
        "speedup_max": side.get("speedup_max"),
        "best_dev_f": record["training"]["best_dev_f"],
        "labelling_seconds": record["timing"]["labelling_seconds"],
        "labels_made_in_seconds": record["timing"].get("labels_made_in_seconds"),
        "labelled_docs": record["timing"]["labelled_docs"],
        "training_seconds": record["timing"]["training_seconds"],
        "peak_memory_mb": record["peak_memory_mb"],
        "peak_memory_mb_labelling": record["peak_memory_mb_labelling"],
    }


def result_file(results: List[dict], labelling: Optional[dict], quiet: Optional[dict], **about) -> dict:
    """The JSON written: where and with what, the labelling (done once, before the runs that use it), each
    run, and the quiet comparison."""
    return {
        "date": date.today().isoformat(),
        "cpu": cpu_name(),
        "versions": library_versions(),
        **about,
        "labelling": labelling,
        "runs": results,
        "quiet_comparison": quiet,
    }


def print_table(results: List[dict]) -> None:
    msg.table(
        [
            (
                r["name"],
                r["silver_docs"],
                f"{r['student_test_f']:.3f}",
                f"{r['f_difference_points']:+.1f}",
                f"{r['student_words_per_second']:,.0f}",
                f"{r['speedup']:.1f}x",
                f"{r['training_seconds']:.0f}",
                f"{r['peak_memory_mb']:,.0f}",
            )
            for r in results
        ],
        header=("run", "teacher-labelled docs", "student F", "vs teacher", "words/s", "speed-up", "train s", "peak MB"),
        divider=True,
    )


def label_step(teacher: Path, sources: List[Path], labels_dir: Path, temperature: float, threads: int, gpu_id: str):
    """The teacher labels every source once (a rerun with the same teacher and texts reuses the shards)."""
    msg.info(f"teacher: labelling {', '.join(map(str, sources))} ({threads} thread(s))")
    payload = {"teacher": str(teacher), "sources": [str(p) for p in sources], "labels_dir": str(labels_dir)}
    payload.update(temperature=temperature, shard_size=SHARD_SIZE, gpu_id=gpu_id)
    done = last_json_line(run_python(["-c", LABEL, json.dumps(payload)], threads, "labelling"))
    msg.text(f"teacher: {done['labelled_docs']:,} of {done['docs']:,} documents labelled in {done['seconds']:.0f} s")
    return {**done, "threads": threads}


def run_student(run: dict, after: Optional[Future], *, run_args, threads: int, work: Path) -> dict:
    """One `distill` run (after the labelling, when it learns from the teacher); its summary."""
    if after is not None:
        after.result()
    msg.info(f"{run['name']}: distilling")
    run_one(run_args(run), threads)
    record = json.loads((work / run["name"] / "distillation.json").read_text(encoding="utf8"))
    row = summary(run["name"], record)
    msg.text(
        f"{run['name']}: student test F {row['student_test_f']:.3f} (teacher {row['teacher_test_f']:.3f}), "
        f"{row['speedup']:.1f}x words/s, trained in {row['training_seconds']:.0f} s"
    )
    return row


def quiet_step(teacher: Path, student: Path, test: Path, threads: int) -> dict:
    """Teacher and student side by side again, with nothing else running."""
    msg.info(f"teacher and {student} side by side, alone ({threads} thread(s))")
    payload = {"teacher": str(teacher), "student": str(student), "test": str(test), "batch_size": BATCH_SIZE}
    side = last_json_line(run_python(["-c", COMPARE, json.dumps(payload)], threads, "comparison"))
    speedup = speedup_text(side, "the teacher's words/s")
    msg.text(f"student {speedup}, {100 * side['f_difference']:+.1f} F points")
    return {"student": str(student), **side}


def run_all(runs: List[dict], student, label, label_threads: int, jobs: int, threads: int):
    """`label()` and `student(run, labelling)` for each run, `jobs` at a time: a run that learns from the teacher
    waits for the labelling's future; the labelling runs beside a student only when the cores hold both, else
    first, alone. Returns the labelling's result (None without one) and the runs' results, in order."""
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        labelling: Optional[Future] = None
        if any(run["mode"] != "gold" for run in runs):
            if jobs > 1 and label_threads + threads <= (os.cpu_count() or 1):
                labelling = pool.submit(label)  # why first: the runs that wait on it come after
            else:  # why: more threads than cores, and torch's spin-waiting threads slow both several times over
                labelling = Future()
                labelling.set_result(label())
        futures = [pool.submit(student, run, labelling if run["mode"] != "gold" else None) for run in runs]
        results = [future.result() for future in futures]
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
    return (None if labelling is None else labelling.result()), results


def main(
    teacher: Path = typer.Option(..., exists=True, file_okay=False, help="The trained transformer pipeline"),
    train: Path = typer.Option(..., exists=True),
    dev: Path = typer.Option(..., exists=True),
    test: Path = typer.Option(..., exists=True),
    unlabelled: Optional[Path] = typer.Option(None, exists=True, help="Unlabelled texts (a text a line, ...)"),
    base_config: Path = typer.Option(ROOT / "configs" / "base_student.cfg", exists=True),
    sizes: str = typer.Option("0,25000,all", help="Unlabelled sentences of the soft runs ('all': every one)"),
    steps: int = typer.Option(5000, help="Student training steps of every run"),
    eval_frequency: int = typer.Option(500),
    temperature: float = typer.Option(2.0),
    threads: int = typer.Option(1, help="CPU threads of every run (teacher and student alike)"),
    label_threads: int = typer.Option(0, help="CPU threads of the teacher's labelling (0: --threads)"),
    jobs: int = typer.Option(1, min=1, help="Students trained at a time, each with --threads"),
    gpu_id: str = typer.Option("cpu", help="Where the teacher labels and the student trains ('cpu', or a GPU id)"),
    work: Path = typer.Option(Path("runs/distill"), help="Students, and the teacher's labels (reused by a rerun)"),
    output: Path = typer.Option(Path("runs/distill.json")),
) -> None:
    config = work / "student.cfg"
    write_config(base_config, config, "token")
    labels_dir = work / "labels"
    sources = label_sources(train, unlabelled)

    def run_args(run: dict) -> List[str]:
        args = [teacher, config, work / run["name"], "--train", train, "--dev", dev, "--test", test]
        args += ["--labels-dir", labels_dir, "--mode", run["mode"], "--temperature", temperature]
        args += ["--max-steps", steps, "--eval-frequency", eval_frequency, "--gpu-id", gpu_id]
        args += ["--shard-size", SHARD_SIZE, "--batch-size", BATCH_SIZE]
        if unlabelled is not None:
            args += ["--input", unlabelled]
        if run["unlabelled"] is not None:
            args += ["--max-unlabelled", run["unlabelled"]]
        return [str(a) for a in args]

    runs = conditions(sizes)
    label_threads = label_threads or threads
    label = partial(label_step, teacher, sources, labels_dir, temperature, label_threads, gpu_id)
    student = partial(run_student, run_args=run_args, threads=threads, work=work)
    labelling, results = run_all(runs, student, label, label_threads, jobs, threads)
    quiet = quiet_step(teacher, work / runs[-1]["name"] / "model-best", test, threads)
    settings = {"steps": steps, "eval_frequency": eval_frequency, "temperature": temperature, "gpu_id": gpu_id}
    settings.update(jobs=jobs, batch_size=BATCH_SIZE, shard_size=SHARD_SIZE)
    corpus = {"train": str(train), "dev": str(dev), "test": str(test), "unlabelled": str(unlabelled)}
    about = {"threads": threads, "teacher": str(teacher), "corpus": corpus, "settings": settings}
    report = result_file(results, labelling, quiet, **about)
    write_text_atomic(output, json.dumps(report, indent=2) + "\n")
    print_table(results)
    msg.good(f"{output}")


if __name__ == "__main__":
    typer.run(main)
