"""crossval: k-fold cross-validation over the train + dev documents; per-fold and mean ± sd F, per label."""

from pathlib import Path

import typer
from wasabi import msg

from iob_ner.experiments.crossval import crossval
from iob_ner.util.cli import parse_bool, parse_gpu_id, user_errors


def main(
    config: Path = typer.Argument(..., exists=True, dir_okay=False),
    output: Path = typer.Argument(..., help="Folder for report.md, crossval.json and crossval.png"),
    train: Path = typer.Option(..., exists=True),
    dev: Path = typer.Option(..., exists=True),
    folds: int = typer.Option(5),
    seed: int = typer.Option(0),
    transformer: str = typer.Option("embedded"),
    gpu_id: str = typer.Option("auto"),
    gpu_id_env: str = typer.Option(""),
    max_steps: int = typer.Option(2000),
    eval_frequency: int = typer.Option(200),
    warmup_ratio: float = typer.Option(0.1),
    keep_models: str = typer.Option("false", help="true: keep the k fold models (for audit) in OUTPUT/runs"),
) -> None:
    with user_errors():
        record = crossval(
            config=config,
            train=train,
            dev=dev,
            output=output,
            folds=folds,
            seed=seed,
            transformer=transformer,
            gpu_id=parse_gpu_id(gpu_id, gpu_id_env),
            max_steps=max_steps,
            eval_frequency=eval_frequency,
            warmup_ratio=warmup_ratio,
            keep_models=parse_bool(keep_models),
        )
    s = record["summary"]
    msg.good(
        f"{folds} folds, {record['documents']} documents: typed F {s['typed_f']['mean']:.3f} ± "
        f"{s['typed_f']['sd']:.3f}, untyped F {s['untyped_f']['mean']:.3f} ± {s['untyped_f']['sd']:.3f} "
        f"in {record['seconds']:.0f} s -> {output / 'report.md'}"
    )


if __name__ == "__main__":
    typer.run(main)
