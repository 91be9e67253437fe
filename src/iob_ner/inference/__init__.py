"""Inference: the documents of a file or folder through a trained pipeline, on one of two engines.

`predict` is the one entry point: `engine="local"` runs the pipeline in this process
(`inference.local`), `engine="ray"` on Ray actors (`inference.ray_engine`, which imports Ray only when it
runs: Ray is optional). Both read with `inference.inputs`, run with `inference.pipeline` and write with
`inference.writers`, so their outputs are byte-identical; neither imports the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ..util.errors import SetupError
from ..util.outputs import check_outputs
from .local import predict_local
from .ray_engine.driver import predict_ray
from .stream import BATCH_CHARS

ENGINES = ("local", "ray")


def predict(
    *,
    model: Path,
    source: Path,
    output: Path,
    iob_output: Optional[Path] = None,
    gpu_id: Optional[int] = -1,
    batch_size: int = 64,
    lines: bool = False,
    max_length: Optional[int] = None,
    min_score: float = 0.0,
    batch_chars: int = BATCH_CHARS,
    engine: str = "local",
    actors: int = 0,
    shard_size: int = 10_240,
    ray_address: Optional[str] = None,
    ray_wheel: Optional[Path] = None,
) -> dict:
    """Predict entities for every document of `source`; returns counts. `max_length` (default: the
    pipeline's nlp.max_length) is the longest text processed as one document; longer ones are split.
    `batch_chars` bounds the characters of one pass of the pipeline (its memory): a longer text streams
    through in pieces, with the entities it has whole (`inference.stream`). Entities
    whose score is under `min_score` are left out (and counted). `engine` "ray" runs on Ray actors
    (`actors`, 0: one a GPU or CPU; `shard_size` documents a resumable shard; `ray_address` or
    RAY_ADDRESS: an existing cluster, else a local one; `ray_wheel`: the pipeline package's wheel, sent
    to the workers) and writes the same outputs."""
    if engine not in ENGINES:
        raise SetupError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    check_outputs(source, [output, iob_output], ["the output", "the --iob output"])
    if engine == "ray":
        return predict_ray(
            model=model,
            source=source,
            output=output,
            iob_output=iob_output,
            gpu_id=gpu_id,
            batch_size=batch_size,
            lines=lines,
            max_length=max_length,
            min_score=min_score,
            batch_chars=batch_chars,
            actors=actors,
            shard_size=shard_size,
            address=ray_address,
            wheels=[ray_wheel] if ray_wheel else [],
        )
    return predict_local(
        model=model,
        source=source,
        output=output,
        iob_output=iob_output,
        gpu_id=gpu_id,
        batch_size=batch_size,
        lines=lines,
        max_length=max_length,
        min_score=min_score,
        batch_chars=batch_chars,
    )


def skipped_text(result: dict) -> str:
    """ "N input(s) skipped (2 not JSON, 1 not UTF-8)", for the summaries of predict and review."""
    reasons = ", ".join(f"{n} {why}" for why, n in sorted(result["skipped_reasons"].items()))
    return f"{result['skipped']} input(s) skipped{f' ({reasons})' if reasons else ''}"


def prediction_summary(result: dict, outputs: Sequence[Path]) -> str:
    below = (
        f"{result['below_min_score']} entities under min_score {result['min_score']:g} left out, "
        if result.get("min_score")
        else ""
    )
    unscored = (
        f"{result['unscored']} entities without a score (set by another component), " if result.get("unscored") else ""
    )
    shards = (
        f" ({result['shards']} shard(s), {result['shards_reused']} reused from an earlier run)"
        if result.get("engine") == "ray"
        else ""
    )
    return (
        f"{result['documents']} document(s) written, {result['entities']} entities, {below}{unscored}"
        f"{skipped_text(result)}, {result['split']} long "
        f"text(s) split, on {result['device']}{shards} -> {', '.join(str(p) for p in outputs)}"
    )
