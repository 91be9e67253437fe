"""What a resumable checkpoint costs: seconds to write one, its size on disk, and seconds to resume from it.

    python benchmarks/checkpoints/benchmark_checkpoints.py --train corpus/train.spacy --dev corpus/dev.spacy \
        --output runs/checkpoints.json

The project's config with the chosen transformer (default: the embedded all-MiniLM-L6-v2) trains
`--steps` steps with `train`'s own loop (`iob_ner.training.loop`), a checkpoint after each. Each write is
timed (wall clock, `checkpoints.write_checkpoint`: the pipeline's `to_disk`, Adam's moments, the state,
the random states), and the last checkpoint's files are summed. Then the run is resumed from its last
checkpoint, where it has no step left: what a resume costs before its first step (initialize the
pipeline, load the checkpoint, replay the batches), plus saving model-last; beside it, initializing the
pipeline alone.
"""

import json
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any, Dict, List

import typer
from wasabi import msg

from iob_ner.training import checkpoints
from iob_ner.training import loop as train_loop
from iob_ner.util.runtime import cpu_name, library_versions, resolve_transformer

ROOT = Path(__file__).resolve().parents[2]


def main(
    train: Path = typer.Option(..., exists=True, help="Training corpus (.spacy)"),
    dev: Path = typer.Option(..., exists=True, help="Development corpus (.spacy)"),
    config: Path = typer.Option(ROOT / "configs" / "config.cfg", exists=True),
    transformer: str = typer.Option("embedded"),
    steps: int = typer.Option(4, help="Training steps, each followed by a checkpoint"),
    output: Path = typer.Option(Path("runs/checkpoints.json")),
) -> None:
    from spacy import util
    from spacy.training.initialize import init_nlp

    overrides: Dict[str, Any] = {
        "paths.train": str(train),
        "paths.dev": str(dev),
        "paths.transformer": resolve_transformer(transformer),
        "training.max_steps": steps,
        "training.eval_frequency": steps,
    }
    written: List[float] = []
    write = checkpoints.write_checkpoint

    def timed_write(*args: Any) -> Path:
        started = time.perf_counter()
        path = write(*args)
        written.append(time.perf_counter() - started)
        return path

    work = Path(tempfile.mkdtemp(prefix="checkpoints-"))
    try:
        checkpoints.write_checkpoint = timed_write
        train_loop.train(
            config,
            work,
            use_gpu=-1,
            overrides=overrides,
            fingerprints={},
            checkpoint_every=1,
            checkpoints_kept=steps + 1,
        )
        checkpoints.write_checkpoint = write
        last = checkpoints.checkpoints(work)[-1]
        parts = {p.name: _size(p) for p in last.iterdir()}
        started = time.perf_counter()
        init_nlp(util.load_config(config, overrides=overrides, interpolate=False), use_gpu=-1)
        init_seconds = time.perf_counter() - started
        started = time.perf_counter()  # resumed at the last step: initialize, load, replay, save model-last
        train_loop.train(config, work, use_gpu=-1, overrides=overrides, fingerprints={}, resume_from=last)
        resume_seconds = time.perf_counter() - started
    finally:
        checkpoints.write_checkpoint = write
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "date": date.today().isoformat(),
        "device": "CPU",
        "cpu": cpu_name(),
        "versions": library_versions(),
        "transformer": transformer,
        "write_seconds": [round(s, 3) for s in written],
        "checkpoint_mb": round(sum(parts.values()) / 1e6, 1),
        "checkpoint_parts_mb": {name: round(size / 1e6, 1) for name, size in sorted(parts.items())},
        "initialize_seconds": round(init_seconds, 2),
        "resume_at_last_step_seconds": round(resume_seconds, 2),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf8")
    shown = ", ".join(f"{name} {size / 1e6:.1f}" for name, size in sorted(parts.items()))
    msg.table(
        [
            ("write a checkpoint, s", ", ".join(f"{s:.2f}" for s in written)),
            ("checkpoint on disk, MB", f"{sum(parts.values()) / 1e6:.1f} ({shown})"),
            ("initialize the pipeline, s", f"{init_seconds:.2f}"),
            ("resume at the last step, s", f"{resume_seconds:.2f}"),
        ],
        divider=True,
    )
    msg.good(f"{output}")


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


if __name__ == "__main__":
    typer.run(main)
