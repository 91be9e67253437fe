"""predict's engines side by side: words/s of the local engine and of the Ray engine with 1 and 2 actors on
the same synthetic input, then the peak memory of the Ray engine on a 1-million-document input.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/ray/benchmark_ray.py [--documents 20000] [--million 1000000]

The pipeline: training/model-best where it exists (else, or with --fast, a tiny token_ner on spaCy's CPU
tok2vec, trained here in seconds); the 1-million-document run always uses the tiny one, since it measures
the engine's memory, not the model. Each run starts its own local Ray (as `--engine ray` does), so the
Ray rows include Ray's start and the actors' pipeline loading. Peak memory is sampled every 0.2 s over
this process and all its descendants (Ray's services and actors): the sum of resident sets, an upper
bound (the object store's shared pages count once per process that maps them).
"""

import json
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import psutil
import typer
from wasabi import msg

from iob_ner.inference import predict
from iob_ner.util.outputs import write_text_atomic
from iob_ner.util.runtime import cpu_name

ROOT = Path(__file__).resolve().parents[2]
WORDS = (
    "LiFePO4 ZnO TiO2 NiO CuO films grown by pulsed laser deposition we measured X-ray diffraction "
    "Raman spectroscopy sol-gel synthesis was studied the weather is nice today ."
).split()


def synthetic_jsonl(path: Path, documents: int, seed: int = 0) -> int:
    """`documents` abstracts-like lines of 3 to 60 words; returns the number of words."""
    rng, words = random.Random(seed), 0
    with path.open("w", encoding="utf8") as out:
        for i in range(documents):
            n = rng.randint(3, 60)
            words += n
            out.write(json.dumps({"id": f"doc{i}", "text": " ".join(rng.choice(WORDS) for _ in range(n))}) + "\n")
    return words


def fast_pipeline(path: Path) -> Path:
    """A tiny token_ner pipeline (tests/support/pipelines.py's trained_nlp): thousands of documents a second."""
    import spacy
    from spacy.tokens import Doc, Span
    from spacy.training import Example

    nlp = spacy.blank("en")
    nlp.add_pipe("token_ner", name="ner")
    train = [
        ("ZnO films grown by pulsed laser deposition".split(), [(0, 1, "MAT"), (4, 7, "SMT")]),
        ("we measured TiO2 by X-ray diffraction".split(), [(2, 3, "MAT"), (4, 6, "CMT")]),
        ("NiO was studied by Raman spectroscopy".split(), [(0, 1, "MAT"), (4, 6, "CMT")]),
    ]
    examples = []
    for words, spans in train:
        gold = Doc(nlp.vocab, words=words)
        gold.ents = [Span(gold, s, e, label=label) for s, e, label in spans]
        examples.append(Example(Doc(nlp.vocab, words=words), gold))
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(40):
        nlp.update(examples, sgd=optimizer, drop=0.0)
    nlp.to_disk(path)
    return path


class PeakMemory:
    """The largest sum of resident memory of this process and its descendants, sampled in a thread."""

    def __init__(self, every: float = 0.2) -> None:
        self.every, self.peak, self.stop = every, 0, threading.Event()
        self.series: List[Tuple[float, int]] = []  # (seconds since the start, bytes): is memory flat or growing?
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def sample(self) -> None:
        me = psutil.Process()
        start = time.perf_counter()
        while not self.stop.is_set():
            total = 0
            for process in [me] + me.children(recursive=True):
                try:
                    total += process.memory_info().rss
                except psutil.Error:  # a worker that ended between listing and reading
                    pass
            self.peak = max(self.peak, total)
            self.series.append((time.perf_counter() - start, total))
            self.stop.wait(self.every)

    def peak_within(self, start: float, end: float) -> int:
        """The peak, in MB, among the samples taken between two fractions of the run (0.0 to 1.0)."""
        if not self.series:
            return 0
        last = self.series[-1][0] or 1.0
        inside = [total for at, total in self.series if start * last <= at <= end * last]
        return max(inside, default=0) // 2**20

    def __enter__(self) -> "PeakMemory":
        self.thread.start()
        return self

    def __exit__(self, *_) -> None:
        self.stop.set()
        self.thread.join()


def timed(run: Callable[[], dict]) -> Tuple[float, dict, int, PeakMemory]:
    """(seconds, predict's result, peak MB of the process tree, the memory samples) of one run."""
    with PeakMemory() as memory:
        start = time.perf_counter()
        result = run()
        seconds = time.perf_counter() - start
    return seconds, result, memory.peak // 2**20, memory


def main(
    documents: int = typer.Option(20_000, help="Documents of the words/s comparison (0: skip it)"),
    million: int = typer.Option(1_000_000, help="Documents of the memory run (0: skip it)"),
    fast: bool = typer.Option(False, "--fast", help="The tiny pipeline even where training/model-best exists"),
    model: Optional[Path] = typer.Option(None, help="A pipeline folder (default: training/model-best, else tiny)"),
    output: Optional[Path] = typer.Option(None, help="Also write the figures to this JSON file"),
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tiny = fast_pipeline(work / "tiny")
        trained = ROOT / "training" / "model-best"
        chosen = model or (trained if trained.is_dir() and not fast else tiny)
        which = "tiny token_ner (CPU tok2vec)" if chosen == tiny else str(chosen)
        source = work / "in.jsonl"
        words = synthetic_jsonl(source, documents)
        rows = []
        for engine, actors in (("local", 0), ("ray", 1), ("ray", 2)) if documents else ():
            seconds, result, peak, _ = timed(
                lambda: predict(
                    model=chosen, source=source, output=work / "out.jsonl", gpu_id=-1, engine=engine, actors=actors
                )
            )
            rows.append(
                {
                    "engine": engine,
                    "actors": actors,
                    "documents": result["documents"],
                    "words": words,
                    "seconds": round(seconds, 1),
                    "words_per_s": round(words / seconds),
                    "peak_mb": peak,
                }
            )
            msg.info(
                f"{engine} ({actors or 1} process{'es' if actors > 1 else ''}): {words / seconds:,.0f} words/s "
                f"({seconds:.1f} s, {result['documents']} documents, peak {peak} MB)"
            )
        figures = {"cpu": cpu_name(), "pipeline": which, "speed": rows}
        if million:
            big = work / "million.jsonl"
            big_words = synthetic_jsonl(big, million, seed=1)
            msg.info(
                f"{million:,} documents ({big.stat().st_size / 2**20:,.0f} MB, {big_words:,} words), Ray, 2 actors"
            )
            seconds, result, peak, memory = timed(
                lambda: predict(
                    model=tiny, source=big, output=work / "million-out.jsonl", gpu_id=-1, engine="ray", actors=2
                )
            )
            figures["million"] = {
                "documents": result["documents"],
                "input_mb": round(big.stat().st_size / 2**20),
                "seconds": round(seconds, 1),
                "words_per_s": round(big_words / seconds),
                "peak_mb_process_tree": peak,
                "shards": result["shards"],
                "peak_mb_by_quarter": [memory.peak_within(q / 4, (q + 1) / 4) for q in range(4)],
            }
            msg.info(
                f"peak resident memory of the process tree: {peak:,} MB for an input of "
                f"{big.stat().st_size / 2**20:,.0f} MB ({seconds:.0f} s, {big_words / seconds:,.0f} words/s); "
                f"by quarter of the run: {figures['million']['peak_mb_by_quarter']} MB"
            )
    if output:
        write_text_atomic(output, json.dumps(figures, indent=2) + "\n")
    msg.good(f"pipeline: {which}; CPU: {figures['cpu']}; {len(rows)} speed runs{', 1 memory run' if million else ''}")


if __name__ == "__main__":
    typer.run(main)
