"""predict on one long single-line text: the whole process's peak memory and seconds, and whether its
entities are those of the text run whole.

    python benchmarks/long_input/benchmark_predict_long.py training/model-best --sizes 3,10 \
        [--whole-max-mb 3] [--before-code DIR --before-max-mb 3] --output runs/predict-long.json

Each text is ONE line of real sentences (`--sentences`: one a line, joined by one space; by default the
110,054 biomedical sentences of ../shared/data/biomed-unlabeled), `--sizes` million characters long,
written to a temporary .txt file that predict reads as one document. scripts/predict.py runs on it in
a process of its own; its peak resident memory and CPU seconds are that child's, from the OS
(ru_maxrss, ru_utime + ru_stime).

Up to three runs a size:
- "streamed": this code as it is (`--batch-chars`, default 50,000);
- "whole" (sizes up to `--whole-max-mb`): this code with `--batch-chars 1000000`, so that each
  max_length chunk goes through the pipeline whole, in one pass: the reference for the entities;
- "before" (with `--before-code DIR`, sizes up to `--before-max-mb`): another checkout's
  scripts/predict.py with its src/ (e.g. the commit before streaming, which took about 2.5 GB a million
  characters: keep its sizes within the machine's memory).
The entities of "streamed" and "before" are compared with "whole" (and "before" with "streamed") by
(start, end, label, text), scores to 4 decimals; an entity found by one run only is placed against the
nearest cut between pieces.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import typer
from wasabi import msg

from iob_ner.inference.stream import BATCH_CHARS, split_text
from iob_ner.util.outputs import write_text_atomic
from iob_ner.util.runtime import cpu_name, library_versions

ROOT = Path(__file__).resolve().parents[2]
SENTENCES = ROOT.parent / "shared" / "data" / "biomed-unlabeled" / "sentences.txt"
MAX_LENGTH = 1_000_000  # spaCy's nlp.max_length: predict's default chunk
PEAK_LIMIT_MB = 1_500
Key = Tuple[int, int, str, str]  # start, end, label, text
Run = Tuple[Path, List[str]]  # the checkout, predict's options


def long_line(sentences: Path, chars: int) -> str:
    """Whole sentences of `sentences` (in order, from the start again when they run out) joined by one
    space, up to `chars` characters: one line."""
    lines = [line.strip() for line in sentences.read_text(encoding="utf8").splitlines() if line.strip()]
    parts, size, i = [], 0, 0
    while size + len(lines[i % len(lines)]) + 1 <= chars:
        parts.append(lines[i % len(lines)])
        size += len(parts[-1]) + 1
        i += 1
    return " ".join(parts)


def run_predict(code: Path, model: str, text: Path, output: Path, args: List[str]) -> dict:
    """Seconds (wall and CPU: on shared cores only the CPU seconds compare), the load average of this
    machine meanwhile and the peak resident MB of one predict process, which must succeed."""
    command = [sys.executable, str(code / "scripts" / "predict.py"), model, str(text), str(output), *args]
    environ = {**os.environ, "PYTHONPATH": str(code / "src"), "ANSI_COLORS_DISABLED": "1"}
    with tempfile.TemporaryFile("w+") as log:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True, env=environ)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own peak memory
        seconds = time.perf_counter() - start
        log.seek(0)
        tail = log.read()[-2000:]
    if status != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {tail}")
    return {
        "seconds": round(seconds, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "load_average_15min": round(os.getloadavg()[2], 2),  # over 2 on 2 cores: something else ran too
        "peak_mb": round(usage.ru_maxrss / 1024),
    }


def entities(output: Path) -> Dict[Key, Optional[float]]:
    (record,) = [json.loads(line) for line in output.read_text(encoding="utf8").splitlines()]
    return {(e["start"], e["end"], e["label"], e["text"]): e.get("score") for e in record["entities"]}


def piece_cuts(text: str, batch_chars: int) -> List[int]:
    """Where predict cuts `text`: between max_length chunks, and between the pieces of each chunk."""
    return sorted(
        {at + inner for at, chunk in split_text(text, MAX_LENGTH) for inner, _ in split_text(chunk, batch_chars)} - {0}
    )


def compare(reference: Dict[Key, Optional[float]], other: Dict[Key, Optional[float]], cuts: List[int]) -> dict:
    """How many entities both runs found, and each found by one run only: its score and how far (in
    characters) it is from the nearest cut."""
    same = reference.keys() & other.keys()
    scored = [abs(reference[k] - other[k]) for k in same if reference[k] is not None and other[k] is not None]

    def placed(key: Key, score: Optional[float]) -> dict:
        nearest = min((abs(key[0] - cut) for cut in cuts), default=None)
        return {"start": key[0], "end": key[1], "label": key[2], "text": key[3], "score": score, "to_cut": nearest}

    only_reference = [placed(k, reference[k]) for k in sorted(reference.keys() - other.keys())]
    only_other = [placed(k, other[k]) for k in sorted(other.keys() - reference.keys())]
    return {
        "in_reference": len(reference),
        "in_run": len(other),
        "same": len(same),
        "identical": not only_reference and not only_other,
        "max_score_difference": round(max(scored, default=0.0), 4),
        "scores_different": sum(d > 0 for d in scored),
        "only_reference": only_reference,
        "only_other": only_other,
    }


def measure_size(size: float, text: str, tmp: Path, model: str, runs: Dict[str, Run]) -> Tuple[list, dict]:
    """Each run of predict on `text`: its row (seconds, peak, entities) and its entities."""
    path = tmp / f"long-{size:g}m.txt"
    path.write_text(text, encoding="utf8")
    rows, found = [], {}
    for name, (code, args) in runs.items():
        msg.info(f"{size:g} M characters, {name}: {code} {' '.join(args)}")
        out = tmp / f"{name}.jsonl"
        row = {"size_m_chars": size, "chars": len(text), "run": name, **run_predict(code, model, path, out, args)}
        found[name] = entities(out)
        rows.append({**row, "entities": len(found[name])})
        msg.text(json.dumps(rows[-1]))
    path.unlink()
    return rows, found


def show(rows: List[dict], comparisons: List[dict]) -> None:
    msg.table(
        [
            (r["size_m_chars"], r["run"], r["seconds"], r["cpu_seconds"], f"{r['peak_mb']:,}", f"{r['entities']:,}")
            for r in rows
        ],
        header=("M chars", "run", "seconds", "CPU seconds", "peak MB", "entities"),
        divider=True,
    )
    for c in comparisons:
        msg.text(
            f"{c['size_m_chars']:g} M, {c['run']} against {c['reference']}: {c['same']:,} of {c['in_reference']:,} "
            f"entities the same, {len(c['only_reference'])} only in {c['reference']}, {len(c['only_other'])} only "
            f"in {c['run']}; scores differ by {c['max_score_difference']} at most"
        )


def main(
    model: str = typer.Argument(..., help="Pipeline folder (training/model-best)"),
    sizes: str = typer.Option("3,10", help="Text sizes, in millions of characters"),
    sentences: Path = typer.Option(SENTENCES, help="Sentences, one a line, joined into the long line"),
    batch_chars: int = typer.Option(BATCH_CHARS, help="predict's --batch-chars for the streamed runs"),
    whole_max_mb: float = typer.Option(3.0, help="The largest size to run whole (about 6 GB), as reference"),
    before_code: Optional[Path] = typer.Option(None, help="Another checkout to run as 'before'"),
    before_max_mb: float = typer.Option(3.0, help="The largest size to run 'before' on"),
    output: Path = typer.Option(Path("runs/predict-long.json")),
) -> None:
    if not sentences.is_file():
        msg.fail(f"{sentences} is not a file: pass --sentences (one sentence a line)", exits=1)
    rows, comparisons = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for size in [float(s) for s in sizes.split(",")]:
            text = long_line(sentences, int(size * 1_000_000))
            runs: Dict[str, Run] = {"streamed": (ROOT, ["--batch-chars", str(batch_chars)])}
            if size <= whole_max_mb:
                runs["whole"] = (ROOT, ["--batch-chars", str(MAX_LENGTH)])
            if before_code and size <= before_max_mb:
                runs["before"] = (before_code, [])
            measured, found = measure_size(size, text, Path(tmp), model, runs)
            rows += measured
            cuts = piece_cuts(text, batch_chars)
            for reference, other in (("whole", "streamed"), ("whole", "before"), ("streamed", "before")):
                if reference in found and other in found:
                    compared = compare(found[reference], found[other], cuts)
                    comparisons.append({"size_m_chars": size, "reference": reference, "run": other, **compared})
    result = {
        "date": date.today().isoformat(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "versions": library_versions(),
        "model": model,
        "sentences": str(sentences),
        "batch_chars": batch_chars,
        "cuts": "streamed: between max_length chunks and between the pieces of each",
        "whole": f"this code, --batch-chars {MAX_LENGTH}: each max_length chunk in one pass",
        "before": str(before_code) if before_code else None,
        "runs": rows,
        "comparisons": comparisons,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output, json.dumps(result, indent=1) + "\n")
    show(rows, comparisons)
    worst = max(r["peak_mb"] for r in rows if r["run"] == "streamed")
    line = f"{cpu_name()}; streamed peak {worst:,} MB -> {output}"
    if worst > PEAK_LIMIT_MB:
        msg.fail(f"{line}, over the {PEAK_LIMIT_MB:,} MB target", exits=1)
    msg.good(line)


if __name__ == "__main__":
    typer.run(main)
