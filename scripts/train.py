"""Train the pipeline of configs/config.cfg on the project's corpus, on a GPU when one is present."""
from pathlib import Path
from typing import Dict, Optional

import typer
from thinc.api import Config
from wasabi import msg

from iob_ner.runtime import SetupError, parse_gpu_id, resolve_transformer, select_device


def check_length_limit(config: Config, train_path: Path) -> None:
    """spaCy's Corpus drops documents over `max_length` without a word: name them instead."""
    limit = config["corpora"]["train"].get("max_length", 0)
    if not limit:
        return
    import spacy
    from iob_ner.corpus import read_docs

    long_docs = [(i, len(doc)) for i, doc in enumerate(read_docs(train_path, spacy.blank("en").vocab)) if len(doc) > limit]
    if long_docs:
        shown = ", ".join(f"#{i} ({n} tokens)" for i, n in long_docs[:5])
        msg.warn(f"corpora.train.max_length = {limit} in the config leaves {len(long_docs)} training "
                 f"document(s) out: {shown}. Set it to 0 to train on every document.")


def schedule_overrides(config: Config, max_steps: int, warmup_ratio: float) -> Dict[str, int]:
    """Fit a warmup/decay learning-rate schedule to `max_steps`, whatever steps the config names."""
    schedule = config["training"]["optimizer"].get("learn_rate")
    overrides = {}
    if isinstance(schedule, dict) and "total_steps" in schedule and max_steps > 0:
        overrides["training.optimizer.learn_rate.total_steps"] = max_steps
    if isinstance(schedule, dict) and "warmup_steps" in schedule and max_steps > 0:
        overrides["training.optimizer.learn_rate.warmup_steps"] = max(1, round(max_steps * warmup_ratio))
    return overrides


def train_pipeline(
    *, config: Path, output: Path, train: Path, dev: Path, transformer: str, gpu_id: Optional[int],
    max_steps: int, eval_frequency: int, seed: int, warmup_ratio: float = 0.1, log_file: Optional[Path] = None,
) -> None:
    from spacy.cli._util import parse_config_overrides
    from spacy.cli.train import train as spacy_train
    from spacy.util import load_config

    model = resolve_transformer(transformer)
    gpu, device = select_device(gpu_id)
    msg.info(f"Training on {device}, transformer {model}")
    config_data = load_config(config, interpolate=False)
    check_length_limit(config_data, train)
    overrides = {
        "paths.train": str(train), "paths.dev": str(dev), "paths.transformer": model,
        "training.max_steps": max_steps, "training.eval_frequency": eval_frequency, "system.seed": seed,
    }
    overrides.update(schedule_overrides(config_data, max_steps, warmup_ratio))
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        if log_file.exists():
            log_file.unlink()
        overrides["training.logger.output_file"] = str(log_file)
    overrides.update(parse_config_overrides([]))  # SPACY_CONFIG_OVERRIDES, as `spacy train` reads it
    spacy_train(config, output, use_gpu=gpu, overrides=overrides)


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
) -> None:
    try:
        train_pipeline(config=config, output=output, train=train, dev=dev, transformer=transformer,
                       gpu_id=parse_gpu_id(gpu_id, gpu_id_env), max_steps=max_steps,
                       eval_frequency=eval_frequency, seed=seed, warmup_ratio=warmup_ratio, log_file=log_file)
    except SetupError as err:
        msg.fail(str(err), exits=1)


if __name__ == "__main__":
    typer.run(main)
