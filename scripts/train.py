"""train: train configs/config.cfg on the project's corpus, on a GPU when one is present."""

from pathlib import Path
from typing import Optional

import typer

from iob_ner.training.train import Checkpointing, train_pipeline
from iob_ner.util.cli import parse_bool, parse_gpu_id, user_errors


def main(
    config: Path = typer.Argument(..., exists=True, dir_okay=False),
    output: Path = typer.Argument(..., help="Folder for model-best and model-last"),
    train: Path = typer.Option(..., exists=True, help="Training corpus (.spacy)"),
    dev: Path = typer.Option(..., exists=True, help="Development corpus (.spacy)"),
    transformer: str = typer.Option("embedded", help="Hugging Face model name, local folder, or 'embedded'"),
    gpu_id: str = typer.Option("auto", help="GPU id, 'cpu', or 'auto' (a GPU if present)"),
    gpu_id_env: str = typer.Option("", help="Used where --gpu-id is 'auto' (project.yml passes $GPU_ID)"),
    max_steps: int = typer.Option(2000),
    eval_frequency: int = typer.Option(200),
    seed: int = typer.Option(0),
    warmup_ratio: float = typer.Option(0.1, help="Share of max_steps spent warming up the learning rate"),
    log_file: Optional[Path] = typer.Option(None, help="JSONL log of every evaluation (learning curve)"),
    confidence_samples: int = typer.Option(
        0, help="Entity scores as means over this many dropout passes (0: one pass)"
    ),
    checkpoint_every: int = typer.Option(0, help="Steps between resumable checkpoints (0: at each evaluation)"),
    checkpoints_kept: int = typer.Option(1, help="How many of the newest checkpoints to keep"),
    resume: str = typer.Option("true", help="Go on from an interrupted run's last checkpoint (false: start over)"),
) -> None:
    with user_errors():  # Ctrl-C: exit 130; train_pipeline has said what is kept
        train_pipeline(
            config=config,
            output=output,
            train=train,
            dev=dev,
            transformer=transformer,
            gpu_id=parse_gpu_id(gpu_id, gpu_id_env),
            max_steps=max_steps,
            eval_frequency=eval_frequency,
            seed=seed,
            warmup_ratio=warmup_ratio,
            log_file=log_file,
            confidence_samples=confidence_samples,
            checkpointing=Checkpointing(every=checkpoint_every, kept=checkpoints_kept, resume=parse_bool(resume)),
        )


if __name__ == "__main__":
    typer.run(main)
