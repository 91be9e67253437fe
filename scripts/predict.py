"""predict: run a trained pipeline on .txt files, a folder of them, JSONL, JSON or Parquet; JSONL (or Parquet) out,
and optionally an IOB .tsv in the UBIAI export shape. `--engine ray` runs the same on Ray actors."""

from pathlib import Path
from typing import Optional

import typer
from wasabi import msg

from iob_ner.inference import predict, prediction_summary
from iob_ner.inference.stream import BATCH_CHARS
from iob_ner.util.cli import parse_gpu_id, user_errors


def main(
    model: Path = typer.Argument(..., help="Pipeline folder (training/model-best) or installed package name"),
    source: Path = typer.Argument(
        ..., help='.txt, .jsonl, .json (an array of {"text": ...}) or .parquet file, or a folder of them'
    ),
    output: Path = typer.Argument(..., help="JSONL output (Parquet where it ends in .parquet)"),
    iob: Optional[Path] = typer.Option(None, help="Also write an IOB .tsv (UBIAI export shape)"),
    gpu_id: str = typer.Option("cpu", help="GPU id, 'cpu' or 'auto'"),
    gpu_id_env: str = typer.Option("", help="Used where --gpu-id is 'auto' (project.yml passes $GPU_ID)"),
    batch_size: int = typer.Option(64),
    lines: bool = typer.Option(False, "--lines", help="Each line of a .txt file is one document"),
    max_length: int = typer.Option(0, help="Split texts longer than this (characters; 0: the pipeline's max_length)"),
    batch_chars: int = typer.Option(
        BATCH_CHARS,
        help="Characters in one pass of the pipeline (bounds memory; longer texts stream through in pieces)",
    ),
    min_score: float = typer.Option(0.0, help="Leave out entities whose probability is under this (needs token_ner)"),
    engine: str = typer.Option("local", help="local (this process) or ray (pip install -r requirements-ray.txt)"),
    actors: int = typer.Option(0, help="Ray engine: pipeline copies (0: one per GPU, else one per CPU)"),
    shard_size: int = typer.Option(
        10_240, help="Ray engine: documents a resumable shard (rounded up to whole batches)"
    ),
    ray_address: str = typer.Option(
        "", help="Ray engine: a cluster's address (default: RAY_ADDRESS, else a local Ray)"
    ),
    ray_wheel: Optional[Path] = typer.Option(None, help="Ray engine: the pipeline's wheel, installed on the workers"),
) -> None:
    resume = "; rerun the same command to go on from the finished shards" if engine == "ray" else ""
    with user_errors(OSError, interrupted=f"interrupted: the previous outputs are left as they were{resume}"):
        result = predict(
            model=model,
            source=source,
            output=output,
            iob_output=iob,
            gpu_id=parse_gpu_id(gpu_id, gpu_id_env),
            batch_size=batch_size,
            lines=lines,
            max_length=max_length or None,
            min_score=min_score,
            batch_chars=batch_chars,
            engine=engine,
            actors=actors,
            shard_size=shard_size,
            ray_address=ray_address or None,
            ray_wheel=ray_wheel,
        )
    (msg.warn if result["skipped"] else msg.good)(prediction_summary(result, [output] + ([iob] if iob else [])))


if __name__ == "__main__":
    typer.run(main)
