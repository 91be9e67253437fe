"""Conversion speed and peak memory: this project's converter beside `spacy convert`, same files, same run.

Each conversion runs in its own process, so its peak resident memory is its own (os.wait4).
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Tuple

import typer
from wasabi import msg

from iob_ner.util.runtime import cpu_name

# Each snippet times the conversion alone (imports excluded) and prints the seconds on its last line.
# Ours runs as the convert command does: without importing torch.
OURS = """import sys, time; sys.modules.setdefault("torch", None)
from iob_ner.corpus.convert import convert_iob
start = time.perf_counter(); convert_iob(sys.argv[1], sys.argv[2], write_json=sys.argv[3] == "json")
print(time.perf_counter() - start)"""
SPACY = """import sys, time
from spacy.cli.convert import convert
start = time.perf_counter(); convert(sys.argv[1], sys.argv[2], file_type="spacy", n_sents=1, converter="ner", silent=True)
print(time.perf_counter() - start)"""


def measure(command: List[str]) -> Tuple[float, float, float]:
    """(conversion seconds, process seconds, peak resident MB) of one command."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own peak memory
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if status != 0:
            raise RuntimeError(f"{' '.join(command[:3])} failed: {err.read()[-2000:]}")
        return float(out.read().strip().splitlines()[-1]), seconds, usage.ru_maxrss / 1024


def make_synthetic(source: Path, target: Path, tokens: int) -> int:
    """Repeat `source`'s sentences until `tokens` token lines; returns the count."""
    lines = source.read_text(encoding="utf-8-sig").splitlines()
    per_copy = sum(1 for line in lines if line.strip() and not line.startswith("-DOCSTART-"))
    copies = -(-tokens // per_copy)
    with target.open("w", encoding="utf8") as out:
        for _ in range(copies):
            out.write("\n".join(lines).rstrip("\n") + "\n\n")
    return copies * per_copy


def main(
    input_path: Path = typer.Argument(..., exists=True, help="A token<TAB>tag file, e.g. NCBI-disease train.tsv"),
    synthetic_tokens: int = typer.Option(
        10_000_000, help="Size of the synthetic file built from INPUT_PATH; 0 skips it"
    ),
    spacy_on_synthetic: bool = typer.Option(True, help="Also run spacy convert on the synthetic file (about 6 GB)"),
) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = [
            (
                input_path,
                sum(1 for l in input_path.open(encoding="utf-8-sig") if l.strip() and not l.startswith("-DOCSTART-")),
            )
        ]
        if synthetic_tokens:
            synthetic = tmp / f"synthetic-{synthetic_tokens // 1_000_000}M.tsv"
            files.append((synthetic, make_synthetic(input_path, synthetic, synthetic_tokens)))
        for path, tokens in files:
            runs = [("this project (DocBin)", [sys.executable, "-c", OURS, str(path), str(tmp / "ours"), "nojson"])]
            if path == input_path:
                runs.append(
                    ("this project (DocBin + JSON)", [sys.executable, "-c", OURS, str(path), str(tmp / "ours"), "json"])
                )
            if path == input_path or spacy_on_synthetic:
                out = tmp / "spacy"
                out.mkdir(exist_ok=True)
                runs.append(("spacy convert -c ner -n 1", [sys.executable, "-c", SPACY, str(path), str(out)]))
            results = []
            for name, command in runs:
                msg.info(f"{path.name}: {name}")
                results.append((name, *measure(command)))
            spacy_seconds = next((s for n, s, _, _ in results if n.startswith("spacy")), None)
            for name, seconds, process_seconds, peak in results:
                ratio = f"{spacy_seconds / seconds:.1f}x" if spacy_seconds else "-"
                rows.append(
                    (
                        path.name,
                        f"{tokens:,}",
                        name,
                        f"{seconds:.2f}",
                        f"{tokens / seconds:,.0f}",
                        ratio,
                        f"{process_seconds:.1f}",
                        f"{peak:,.0f}",
                    )
                )
    msg.table(
        rows,
        header=("file", "tokens", "converter", "seconds", "tokens/s", "speed vs spacy", "process s", "peak MB"),
        divider=True,
    )
    msg.good(f"{cpu_name()}; 'seconds' times the conversion alone, 'process s' includes Python's start and imports")


if __name__ == "__main__":
    typer.run(main)
