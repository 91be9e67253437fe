"""data-curve: train on 25/50/75/100 % of the training documents and plot dev F against size."""

from pathlib import Path

import typer
from wasabi import msg

from iob_ner.experiments.data_curve import data_curve
from iob_ner.util.cli import parse_gpu_id, user_errors


def main(
    config: Path = typer.Argument(..., exists=True, dir_okay=False),
    output: Path = typer.Argument(..., help="Folder for report.md, data-curve.json and data-curve.png"),
    train: Path = typer.Option(..., exists=True),
    dev: Path = typer.Option(..., exists=True),
    seed: int = typer.Option(0),
    transformer: str = typer.Option("embedded"),
    gpu_id: str = typer.Option("auto"),
    gpu_id_env: str = typer.Option(""),
    max_steps: int = typer.Option(2000, help="Steps for the full training set; subsets get their share"),
    eval_frequency: int = typer.Option(200),
    warmup_ratio: float = typer.Option(0.1),
) -> None:
    with user_errors():
        record = data_curve(
            config=config,
            train=train,
            dev=dev,
            output=output,
            seed=seed,
            transformer=transformer,
            gpu_id=parse_gpu_id(gpu_id, gpu_id_env),
            max_steps=max_steps,
            eval_frequency=eval_frequency,
            warmup_ratio=warmup_ratio,
        )
    values = ", ".join(f"{p['share']} %: {p['dev_f']:.3f}" for p in record["points"])
    msg.good(f"dev F {values}; {record['reading']} -> {output / 'report.md'}")


if __name__ == "__main__":
    typer.run(main)
