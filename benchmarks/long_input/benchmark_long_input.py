"""A 2-million-token file without a blank line: how convert cuts it, how long it takes, how much memory.

A UBIAI export writes a whole document without blank lines. This writes such a file in three shapes
(a period every ~30 tokens; no punctuation at all; two -DOCSTART- documents of a million tokens each,
CRLF), converts each with scripts/convert_file.py in its own process (JSON and DocBin, as the project's
convert command does) and prints tokens, documents, the longest document, seconds and peak memory.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Tuple

import typer
from wasabi import msg

from iob_ner.util.runtime import cpu_name

CONVERT = Path(__file__).resolve().parents[2] / "scripts" / "convert_file.py"  # run, not imported
SHAPES = {"periods": (True, 0), "no punctuation": (False, 0), "2 documents": (True, 2)}
PEAK_LIMIT_MB = 500


def write_long_file(path: Path, tokens: int, periods: bool, documents: int) -> int:
    """`tokens` token lines and no blank line; returns the number of entities written.

    A 3-token SKILL entity every 997 tokens (so entities fall across every 5,000-token window), a
    period every 30 tokens outside entities when `periods`, and `documents` -DOCSTART- lines (with CRLF,
    as UBIAI writes) when it is above 0. The words repeat a 5,000-word vocabulary, as text does.
    """
    entities, per_document = 0, tokens // documents if documents else tokens + 1
    newline = "\r\n" if documents else "\n"
    with path.open("w", encoding="utf8", newline="") as out:
        for i in range(tokens):
            if documents and i % per_document == 0:
                out.write(f"-DOCSTART- -X- O O{newline}")
            place = i % 997
            tag = "B-SKILL" if place == 500 else "I-SKILL" if place in (501, 502) else "O"
            entities += place == 500
            word = "." if periods and tag == "O" and i % 30 == 29 else f"w{i % 5000}"
            out.write(f"{word}\t{tag}{newline}")
    return entities


def measure(command: List[str]) -> Tuple[float, float, str]:
    """(seconds, peak resident MB, output) of one command, which must succeed."""
    with tempfile.TemporaryFile("w+") as out:
        start = time.perf_counter()
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, text=True, env={**os.environ, "ANSI_COLORS_DISABLED": "1"}
        )
        _, status, usage = os.wait4(process.pid, 0)  # this child's own peak memory
        seconds = time.perf_counter() - start
        out.seek(0)
        output = out.read()
    if status != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {output[-2000:]}")
    return seconds, usage.ru_maxrss / 1024, output


def main(
    tokens: int = typer.Option(2_000_000, help="Token lines in each file"),
    max_sentence_tokens: int = typer.Option(5_000, help="Passed to convert_file.py --max-sentence-tokens"),
) -> None:
    rows, worst_peak = [], 0.0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for shape, (periods, documents) in SHAPES.items():
            path = tmp / f"{shape.replace(' ', '-')}.tsv"
            written = write_long_file(path, tokens, periods, documents)
            msg.info(f"{shape}: converting {path.stat().st_size / 1e6:.0f} MB, {tokens:,} tokens, {written:,} entities")
            command = [
                sys.executable,
                str(CONVERT),
                str(path),
                str(tmp / "corpus"),
                "--max-sentence-tokens",
                str(max_sentence_tokens),
            ]
            seconds, peak, output = measure(command)
            for repair in re.findall(r"repaired \d+x: .*?\(first lines: [0-9, ]+\)", " ".join(output.split())):
                msg.warn(repair)  # what convert printed, unwrapped
            report = json.loads((tmp / "corpus.report.json").read_text(encoding="utf8"))
            assert report["entities_total"] == written, f"{shape}: {report['entities_total']} of {written} entities"
            converted = re.search(r"entities in ([0-9.]+) s", " ".join(output.split()))
            rows.append(
                (
                    shape,
                    f"{report['tokens']:,}",
                    f"{report['entities_total']:,}",
                    f"{report['sentences']:,}",
                    f"{report['documents']:,}",
                    f"{report['longest_document']:,}",
                    converted.group(1) if converted else "-",
                    f"{seconds:.1f}",
                    f"{peak:,.0f}",
                )
            )
            worst_peak = max(worst_peak, peak)
    msg.table(
        rows,
        header=(
            "file",
            "tokens",
            "entities",
            "sentences",
            "documents",
            "longest document",
            "convert s",
            "process s",
            "peak MB",
        ),
        divider=True,
    )
    line = (
        f"{cpu_name()}; {len(rows)} files of {tokens:,} tokens without a blank line, every entity kept; "
        f"peak {worst_peak:,.0f} MB"
    )
    if worst_peak >= PEAK_LIMIT_MB:
        msg.fail(f"{line}, over the {PEAK_LIMIT_MB} MB budget", exits=1)
    msg.good(line)


if __name__ == "__main__":
    typer.run(main)
