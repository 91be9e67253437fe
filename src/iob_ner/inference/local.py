"""predict's local engine: the pipeline in this process, a batch of documents at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..pipeline.layers.transformer import padding_share
from ..util.runtime import select_device
from .inputs import check_something_read
from .pipeline import BATCH_CHARS, check_settings, entity_reading, load_pipeline, source_predictions
from .writers import write_outputs


def predict_local(
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
    progress: bool = True,
) -> dict:
    """predict(engine="local"): the counts of what was written, skipped and on which device."""
    check_settings(batch_size, max_length, min_score, batch_chars)
    _, device = select_device(gpu_id)
    nlp = load_pipeline(model)
    reading = entity_reading(nlp, min_score, words=iob_output is not None)
    outputs = [output] + ([iob_output] if iob_output is not None else [])
    found, problems = source_predictions(
        nlp,
        source,
        outputs,
        reading,
        batch_size=batch_size,
        max_length=max_length,
        lines=lines,
        batch_chars=batch_chars,
        progress="predict" if progress else "",
    )
    counts = write_outputs(
        found, output, iob_output, check=lambda c: check_something_read(c["documents"], source, problems, outputs)
    )
    return {
        **counts,
        "skipped": problems.count,
        "skipped_reasons": dict(problems.reasons),
        "device": device,
        "scored": reading.spans_key is not None,
        "min_score": min_score,
        "padding_share": padding_share(nlp, "predict"),  # of the transformer's positions (None: not counted)
    }
