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

The teacher labels the training texts and all unlabelled sentences once (the first run that needs them:
its labelling time and peak memory are recorded); the other runs reuse those shards, each taking its share.
Every run measures teacher and student on the test corpus in one process, at the same batch size and
threads (`--threads`, OMP_NUM_THREADS and torch's), on this CPU. Written to `--output` (JSON) and printed.
"""

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import List, Optional

import typer
from wasabi import msg

from iob_ner.config_file import write_config
from iob_ner.outputs import write_text_atomic
from iob_ner.runtime import cpu_name, library_versions

ROOT = Path(__file__).resolve().parents[2]
DISTILL = ROOT / "scripts" / "distill.py"


def conditions(sizes: str) -> List[dict]:
    """The runs: gold, hard (all sentences), soft at each size."""
    runs = [{"name": "gold", "mode": "gold", "unlabelled": 0}, {"name": "hard", "mode": "hard", "unlabelled": None}]
    for size in [s.strip() for s in sizes.split(",") if s.strip()]:
        count = None if size == "all" else int(size)
        runs.append({"name": f"soft-{size}", "mode": "soft", "unlabelled": count})
    return runs


def run_one(args: List[str], threads: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "WASABI_LOG_FRIENDLY": "1"}
    result = subprocess.run([sys.executable, str(DISTILL), *args], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-3000:]
        raise SystemExit(f"distill failed ({' '.join(args[:3])} ...):\n{tail}")


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
        "speedup": side["speedup"],
        "best_dev_f": record["training"]["best_dev_f"],
        "labelling_seconds": record["timing"]["labelling_seconds"],
        "labels_made_in_seconds": record["timing"].get("labels_made_in_seconds"),
        "labelled_docs": record["timing"]["labelled_docs"],
        "training_seconds": record["timing"]["training_seconds"],
        "peak_memory_mb": record["peak_memory_mb"],
        "peak_memory_mb_labelling": record["peak_memory_mb_labelling"],
    }


def result_file(results: List[dict], teacher: Path, corpus: dict, settings: dict, threads: int) -> dict:
    """The JSON written: where and with what, the labelling (done once, by the first run that labels), each run."""
    labelled = next((r for r in results if r["labelled_docs"]), None)
    return {
        "date": date.today().isoformat(),
        "cpu": cpu_name(),
        "threads": threads,
        "versions": library_versions(),
        "teacher": str(teacher),
        "corpus": corpus,
        "settings": settings,
        "labelling": None
        if labelled is None
        else {
            "docs": labelled["labelled_docs"],
            "seconds": labelled["labelling_seconds"],
            "peak_memory_mb": labelled["peak_memory_mb_labelling"],
        },
        "runs": results,
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


def main(
    teacher: Path = typer.Option(..., exists=True, file_okay=False, help="The trained transformer pipeline"),
    train: Path = typer.Option(..., exists=True),
    dev: Path = typer.Option(..., exists=True),
    test: Path = typer.Option(..., exists=True),
    unlabelled: Optional[Path] = typer.Option(None, exists=True, help="Unlabelled texts (a text a line, ...)"),
    base_config: Path = typer.Option(ROOT / "configs" / "base_student.cfg", exists=True),
    sizes: str = typer.Option("0,25000,all", help="Unlabelled sentences of the soft runs ('all': every one)"),
    steps: int = typer.Option(20000, help="Student training steps of every run"),
    eval_frequency: int = typer.Option(1000),
    temperature: float = typer.Option(2.0),
    threads: int = typer.Option(1, help="CPU threads of every run (teacher and student alike)"),
    gpu_id: str = typer.Option("cpu", help="Where the teacher labels and the student trains ('cpu', or a GPU id)"),
    work: Path = typer.Option(Path("runs/distill"), help="Students, and the teacher's labels (reused by a rerun)"),
    output: Path = typer.Option(Path("runs/distill.json")),
) -> None:
    config = work / "student.cfg"
    write_config(base_config, config, "token")
    results = []
    for run in conditions(sizes):
        args = [teacher, config, work / run["name"], "--train", train, "--dev", dev, "--test", test]
        args += ["--labels-dir", work / "labels", "--mode", run["mode"], "--temperature", temperature]
        args += ["--max-steps", steps, "--eval-frequency", eval_frequency, "--gpu-id", gpu_id]
        if unlabelled is not None:
            args += ["--input", unlabelled]
        if run["unlabelled"] is not None:
            args += ["--max-unlabelled", run["unlabelled"]]
        msg.info(f"{run['name']}: distilling")
        run_one([str(a) for a in args], threads)
        record = json.loads((work / run["name"] / "distillation.json").read_text(encoding="utf8"))
        results.append(summary(run["name"], record))
        row = results[-1]
        msg.text(
            f"{run['name']}: student test F {row['student_test_f']:.3f} (teacher {row['teacher_test_f']:.3f}), "
            f"{row['speedup']:.1f}x words/s, trained in {row['training_seconds']:.0f} s"
        )
    settings = {"steps": steps, "eval_frequency": eval_frequency, "temperature": temperature, "gpu_id": gpu_id}
    corpus = {"train": str(train), "dev": str(dev), "test": str(test), "unlabelled": str(unlabelled)}
    report = result_file(results, teacher, corpus, settings, threads)
    write_text_atomic(output, json.dumps(report, indent=2) + "\n")
    print_table(results)
    msg.good(f"{output}")


if __name__ == "__main__":
    typer.run(main)
