"""Host time and training speed of this checkout beside another one ("before"), measured in one run.

    python benchmarks/host_time/compare_host_time.py --before-code ../before --corpus corpus/ncbi \\
        --output benchmarks/host_time/cpu-DATE-host-time-compare.json

Both checkouts run their own benchmark_host_time.py and scripts/train.py, each with its own src/ on
PYTHONPATH, in the same venv, alternately (before, after, before, after, ...) so that a change in the
machine's load shows in both. Reported:

- host ms per 1,000 training words at 500 and at 4,000 words per step (the tiny random BERT: the
  transformer's own arithmetic nearly free), the median of `--rounds` runs, with the torch ms per step
  beside it (the same code in both: a gap there means the load changed, not the code);
- with `--train-steps N`: the default recipe with the real transformer (the embedded MiniLM by default)
  trained N steps on `corpus/train.spacy` by each checkout's scripts/train.py, on the CPU (`--train-threads`):
  the seconds of the whole command (loading, the N steps, an evaluation of dev at step 0 and at step N,
  calibration, saving: the same work in both), and the test P/R/F of its model-best by scripts/evaluate.py.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import typer
from wasabi import msg

from iob_ner.util.outputs import write_text_atomic
from iob_ner.util.runtime import cpu_name, library_versions

ROOT = Path(__file__).resolve().parents[2]
BATCHES = (500, 4000)


def _env(code: Path, threads: int = 1) -> Dict[str, str]:
    """`threads` threads (one for host time: its share is not hidden by parallel numpy/torch), the
    checkout's src/ first."""
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONPATH=str(code / "src"))


def host_time(code: Path, corpus: Path, batch_words: int, steps: int, out: Path, python: str) -> Dict[str, Any]:
    script = code / "benchmarks" / "host_time" / "benchmark_host_time.py"
    command = [python, str(script), "--corpus", str(corpus / "train.spacy"), "--steps", str(steps)]
    command += ["--batch-words", str(batch_words), "--output", str(out)]
    subprocess.run(command, env=_env(code), cwd=code, check=True, capture_output=True, text=True)
    return json.loads(out.read_text())


def train(
    code: Path, corpus: Path, steps: int, transformer: str, out: Path, threads: int, python: str
) -> Dict[str, Any]:
    """`steps` steps of the default recipe by `code`'s scripts/train.py, then its test scores.

    The steps' seconds come from the times spaCy's console logger prints its rows: the row of step 0
    comes after one step and an evaluation of dev, the row of step N after N more steps and the same
    evaluation, so the steps took (row N - row 0) - (row 0 - table header), give or take one step."""
    command = [python, "-u", "scripts/train.py", "configs/config.cfg", str(out), "--train"]
    command += [str(corpus / "train.spacy"), "--dev", str(corpus / "dev.spacy"), "--transformer", transformer]
    command += ["--gpu-id", "cpu", "--max-steps", str(steps), "--eval-frequency", str(steps), "--resume", "false"]
    start, stamps = time.perf_counter(), []
    with subprocess.Popen(
        command, env=_env(code, threads), cwd=code, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as run:
        assert run.stdout is not None
        for line in run.stdout:
            stamps.append((time.perf_counter() - start, line.rstrip()))
    if run.returncode:
        raise RuntimeError(f"{code}: train failed:\n" + "\n".join(line for _, line in stamps[-20:]))
    header = next(t for t, line in stamps if line.lstrip().startswith("E ") or line.lstrip().startswith("E  "))
    rows = [t for t, line in stamps if line.split()[:2] and line.split()[0].isdigit() and line.split()[1].isdigit()]
    evaluation = rows[0] - header
    step_seconds = (rows[-1] - rows[0]) - evaluation
    metrics = out / "metrics-test.json"
    command = [python, "scripts/evaluate.py", str(out / "model-best"), str(corpus / "test.spacy"), str(metrics)]
    subprocess.run(command, env=_env(code, threads), cwd=code, check=True, capture_output=True, text=True)
    scores = json.loads(metrics.read_text())
    return {
        "steps": steps,
        "threads": threads,
        "command_seconds": round(stamps[-1][0], 1),
        "evaluation_seconds": round(evaluation, 1),
        "step_seconds": round(step_seconds, 1),
        "steps_per_second": round(steps / step_seconds, 3),
        "test": scores["typed"],
        "test_words_per_second": scores.get("words_per_second"),
    }


def _median(runs: List[Dict[str, Any]], key: str) -> float:
    return round(statistics.median(run[key] for run in runs), 2)


def compare(
    before: Path,
    corpus: Path,
    rounds: int,
    steps: int,
    train_steps: int,
    transformer: str,
    threads: int,
    batches: Tuple[int, ...] = BATCHES,
    before_python: str = sys.executable,
) -> Dict[str, Any]:
    codes = {"before": before.resolve(), "after": ROOT}
    pythons = {"before": before_python, "after": sys.executable}
    result: Dict[str, Any] = {"host_time": {}, "training": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for batch in batches:
            runs: Dict[str, List[Dict[str, Any]]] = {"before": [], "after": []}
            for i in range(rounds):
                for name, code in codes.items():
                    report = host_time(
                        code, corpus, batch, steps, Path(tmp) / f"{name}-{batch}-{i}.json", pythons[name]
                    )
                    runs[name].append(report)
                    msg.text(f"{batch} words, {name}: host {report['host_ms_per_1000_words']} ms per 1,000 words")
            result["host_time"][f"batch_{batch}_words"] = {
                name: {
                    "host_ms_per_1000_words": _median(reports, "host_ms_per_1000_words"),
                    "torch_ms_per_step": _median(reports, "torch_ms"),
                    "step_ms": _median(reports, "step_ms"),
                    "runs": [
                        {k: r[k] for k in ("host_ms_per_1000_words", "torch_ms", "step_ms", "words_per_step")}
                        for r in reports
                    ],
                    "areas_ms_per_step_last_run": {a: v["ms_per_step"] for a, v in reports[-1]["areas"].items()},
                    "tokenized_once": reports[-1].get("tokenized_once"),
                }
                for name, reports in runs.items()
            }
        if train_steps:
            for name, code in codes.items():
                out = Path(tmp) / f"train-{name}"
                result["training"][name] = train(code, corpus, train_steps, transformer, out, threads, pythons[name])
                msg.text(f"training, {name}: {result['training'][name]}")
    return result


def main(
    before_code: Path = typer.Option(..., exists=True, file_okay=False, help="The other checkout ('before')"),
    corpus: Path = typer.Option(Path("corpus"), exists=True, file_okay=False, help="Folder of train/dev/test.spacy"),
    rounds: int = typer.Option(3, min=1, help="Host-time runs of each checkout per batch size"),
    steps: int = typer.Option(60, min=1, help="Timed steps of each host-time run"),
    train_steps: int = typer.Option(0, min=0, help="Also train the real transformer this many steps (0: no)"),
    transformer: str = typer.Option("embedded", help="The transformer of the training runs"),
    train_threads: int = typer.Option(2, min=1, help="torch threads of the training runs"),
    batch_words: str = typer.Option("500,4000", help="Words per step of the host-time runs, comma-separated"),
    output: Optional[Path] = typer.Option(None, help="Write the figures as JSON here"),
    before_python: str = typer.Option(
        sys.executable,
        help="The Python of the other checkout's own venv: one whose entry points name modules the other "
        "checkout lacks (src/iob_ner/layers since 2026-12-06, src/iob_ner/pipeline/layers since 2026-12-07) cannot serve both",
    ),
) -> None:
    """Host time per 1,000 training words and training speed, this checkout beside another, in one run."""
    batches = tuple(int(words) for words in batch_words.split(",") if words.strip())  # "": training only
    result = compare(
        before_code, corpus, rounds, steps, train_steps, transformer, train_threads, batches, before_python
    )
    for batch, sides in result["host_time"].items():
        before, after = sides["before"]["host_ms_per_1000_words"], sides["after"]["host_ms_per_1000_words"]
        msg.info(f"{batch}: host {before} -> {after} ms per 1,000 words ({before / after:.2f}x less)")
    report = {
        "what": "benchmarks/host_time/compare_host_time.py",
        "before_code": str(before_code.resolve()),
        "after_code": str(ROOT),
        "cpu": cpu_name(),
        "host_time_threads": 1,
        "before_python": before_python,
        "versions": library_versions(),
        **result,
    }
    if output is not None:
        write_text_atomic(output, json.dumps(report, indent=2) + "\n")
        msg.good(f"-> {output}")


if __name__ == "__main__":
    typer.run(main)
