"""The Ray engine's actor: the pipeline loaded once per Ray worker, turning predict batches into results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from wasabi import msg

from ...util.runtime import ThreadDevice, select_device
from ..inputs import InputProblems, Text
from ..pipeline import BATCH_CHARS, Prediction, entity_reading, load_pipeline, predictions

Skip = Tuple[str, str, str]  # where, why, kind: InputProblems.skip's arguments


class Recorder(InputProblems):
    """InputProblems that also keeps each skip, so that an actor can hand them to the driver."""

    def __init__(self) -> None:
        super().__init__()
        self.skipped: Dict[str, Skip] = {}

    def skip(self, where: str, why: str, kind: Optional[str] = None) -> None:
        super().skip(where, why, kind)
        self.skipped[where] = (where, why, kind or why)


class PipelineActor:
    """Ray Data's callable class: loads the pipeline once, then turns rows (one predict batch of documents
    each, as JSON) into results (one JSON list a row: a prediction or a skip per document, in order)."""

    def __init__(
        self,
        model: str,
        use_gpu: bool,
        batch_size: int,
        max_length: int,
        min_score: float,
        iob: bool,
        batch_chars: int = BATCH_CHARS,
    ) -> None:
        msg.no_print = True  # the driver reports skips and warnings once, not once per actor
        gpu, _ = select_device(0 if use_gpu else -1)  # Ray's CUDA_VISIBLE_DEVICES makes the actor's GPU number 0
        # Ray Data calls __call__ in a thread of its own, which would start on the CPU's ops and CUDA device 0
        self.device = ThreadDevice(gpu)
        self.nlp = load_pipeline(Path(model) if Path(model).is_dir() else model)
        self.reading = entity_reading(self.nlp, min_score, words=iob)
        self.nlp.max_length = max_length
        self.batch_size, self.max_length, self.batch_chars, self.iob = batch_size, max_length, batch_chars, iob

    def __call__(self, batch: Dict[str, Sequence]) -> Dict[str, list]:
        self.device.activate()
        results = [self.process(json.loads(docs)) for docs in batch["docs"]]
        return {"shard": list(batch["shard"]), "index": list(batch["index"]), "results": results}

    def process(self, docs: List[List[str]]) -> str:
        texts = [Text(*doc) for doc in docs]
        problems = Recorder()
        found = iter(
            predictions(
                self.nlp,
                texts,
                problems,
                batch_size=self.batch_size,
                max_length=self.max_length,
                batch_chars=self.batch_chars,
                reading=self.reading,
            )
        )
        # predictions() yields the good documents in order and skips the others: zip them back.
        results = [
            {"skip": problems.skipped[t.where]} if t.where in problems.skipped else to_result(next(found), self.iob)
            for t in texts
        ]
        return json.dumps(results, ensure_ascii=False)


def to_result(prediction: Prediction, iob: bool) -> dict:
    result = {
        "record": prediction.record,
        "split": prediction.split,
        "dropped": prediction.dropped,
        "unscored": prediction.unscored,
    }
    if iob:
        result.update(words=prediction.words, spans=prediction.spans)
    return result


def from_result(result: dict) -> Prediction:
    spans = [tuple(span) for span in result.get("spans", [])]
    return Prediction(
        "",
        result["record"],
        result.get("words", []),
        spans,
        split=result["split"],
        dropped=result["dropped"],
        unscored=result["unscored"],
    )
