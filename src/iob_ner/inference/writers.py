"""Writing predictions: JSONL (or Parquet, where the output ends in .parquet) and the optional IOB .tsv in
the UBIAI export shape, whole or not at all. Both engines end here, so their outputs are byte-identical.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from ..iob.writer import write_iob
from ..util.errors import SetupError
from ..util.outputs import atomic_outputs
from .pipeline import Prediction, Span


def write_predictions(found: Iterable[Prediction], out: IO[str], iob_file: Optional[IO[str]]) -> Dict[str, int]:
    """Write each document's JSONL line (and IOB form); returns the counts."""
    counts = {"documents": 0, "entities": 0, "split": 0, "below_min_score": 0, "unscored": 0}

    def iob_documents() -> Iterator[Tuple[List[str], List[Span], List[int]]]:
        for prediction in found:
            out.write(json.dumps(prediction.record, ensure_ascii=False) + "\n")
            counts["documents"] += 1
            counts["entities"] += len(prediction.record["entities"])
            counts["split"] += prediction.split
            counts["below_min_score"] += prediction.dropped
            counts["unscored"] += prediction.unscored
            if prediction.words:
                yield prediction.words, prediction.spans, [0]

    if iob_file is None:
        for _ in iob_documents():
            pass
    else:
        write_iob(iob_file, iob_documents())
    return counts


# Parquet output: the JSONL records' columns, typed once so that every row group has the same schema
# (a batch without any entity or score would otherwise be inferred as list<null>).
PARQUET_ROWS = 10_000  # rows per row group: bounded memory, and few enough groups for fast reads


def parquet_schema():
    import pyarrow as pa  # optional (requirements-ray.txt): imported where Parquet is written

    entity = pa.struct(
        [
            ("text", pa.string()),
            ("label", pa.string()),
            ("start", pa.int64()),
            ("end", pa.int64()),
            ("score", pa.float64()),
        ]
    )
    return pa.schema([("id", pa.string()), ("text", pa.string()), ("entities", pa.list_(entity))])


class ParquetSink:
    """A write()-able stand-in for the JSONL file: takes the JSONL lines, writes Parquet row groups."""

    def __init__(self, path: Path) -> None:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise SetupError("writing Parquet needs pyarrow: pip install -r requirements-ray.txt") from None
        self.schema = parquet_schema()
        self.writer = pq.ParquetWriter(path, self.schema)
        self.rows: List[dict] = []

    def write(self, line: str) -> None:
        self.rows.append(json.loads(line))
        if len(self.rows) >= PARQUET_ROWS:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows = []

    def close(self) -> None:
        self.flush()
        self.writer.close()


def write_outputs(
    found: Iterable[Prediction],
    output: Path,
    iob_output: Optional[Path],
    check: Optional[Callable[[Dict[str, int]], None]] = None,
) -> Dict[str, int]:
    """Write the predictions to `output` (JSONL, or Parquet where it ends in .parquet) and the optional IOB
    file, whole or not at all; returns write_predictions' counts. Both engines end here. `check` sees the
    counts before the outputs are replaced: an error it raises leaves the previous outputs in place."""
    with atomic_outputs(*([output] + ([iob_output] if iob_output is not None else []))) as temps:
        if output.suffix.lower() == ".parquet":
            sink = ParquetSink(temps[0])
            try:
                counts = _write_with_iob(found, sink, temps[1:])
            finally:
                sink.close()
        else:
            with temps[0].open("w", encoding="utf8") as out:
                counts = _write_with_iob(found, out, temps[1:])
        if check is not None:
            check(counts)
    return counts


def _write_with_iob(found: Iterable[Prediction], out, iob_temp: Sequence[Path]) -> Dict[str, int]:
    if not iob_temp:
        return write_predictions(found, out, None)
    with iob_temp[0].open("w", encoding="utf8", newline="") as iob_file:
        return write_predictions(found, out, iob_file)
