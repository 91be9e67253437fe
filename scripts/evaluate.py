"""evaluate: score a trained pipeline on a corpus; metrics JSON (overall, per label, untyped, confusion, entity
confidence) and the predicted docs."""

from pathlib import Path
from typing import Optional

import typer
from wasabi import msg

from iob_ner.evaluation.evaluate import evaluate_pipeline
from iob_ner.util.cli import parse_gpu_id, user_errors


def print_metrics(m: dict) -> None:
    rows = [
        (label, f"{s['p']:.3f}", f"{s['r']:.3f}", f"{s['f']:.3f}", s["support"]) for label, s in m["per_label"].items()
    ]
    rows.append(
        (
            "ALL (typed)",
            f"{m['typed']['p']:.3f}",
            f"{m['typed']['r']:.3f}",
            f"{m['typed']['f']:.3f}",
            m["gold_entities"],
        )
    )
    rows.append(
        (
            "ALL (untyped)",
            f"{m['untyped']['p']:.3f}",
            f"{m['untyped']['r']:.3f}",
            f"{m['untyped']['f']:.3f}",
            m["gold_entities"],
        )
    )
    msg.table(rows, header=("label", "P", "R", "F", "support"), divider=True)
    raw = m.get("raw_text")
    if raw is not None:
        msg.info(
            f"On raw text (rebuilt from the tokens, cut by the pipeline's tokenizer): P {raw['p']:.3f} R "
            f"{raw['r']:.3f} F {raw['f']:.3f} (typed, by character offsets); {raw['reachable']:.1%} of the gold "
            f"entities start and end on its token boundaries"
        )
    confidence = m["confidence"]
    if confidence is None:
        msg.info(f"No entity confidence: {m['confidence_note']}")
        return

    def number(value: Optional[float]) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    sampled = f", means over {confidence['samples']} dropout passes" if confidence.get("samples") else ""
    msg.info(
        f"Entity confidence ({confidence['entities']} predicted entities{sampled}, temperature "
        f"{confidence['temperature']:.3g}): ECE {number(confidence['ece_before'])} at T = 1 -> "
        f"{number(confidence['ece_after'])} ({confidence['bins']} bins), AUROC {number(confidence['auroc'])}"
    )


def main(
    model: Path = typer.Argument(..., exists=True, file_okay=False),
    corpus: Path = typer.Argument(..., exists=True),
    output: Path = typer.Argument(..., help="Metrics JSON"),
    predictions: Optional[Path] = typer.Option(None, help="Also save the predicted docs (.spacy)"),
    gpu_id: str = typer.Option("cpu", help="GPU id, 'cpu' or 'auto'"),
    gpu_id_env: str = typer.Option("", help="Used where --gpu-id is 'auto' (project.yml passes $GPU_ID)"),
) -> None:
    with user_errors():
        m = evaluate_pipeline(
            model=model, corpus=corpus, output=output, predictions=predictions, gpu_id=parse_gpu_id(gpu_id, gpu_id_env)
        )
    print_metrics(m)
    msg.good(
        f"{corpus}: {m['examples']} documents, {m['words']} words at {m['words_per_second']:.0f} words/s "
        f"on {m['device']} -> {output}"
    )
    warning = m["corpus_check"]["warning"]
    if warning is not None:  # last, where it is seen: the scores above may say nothing about the model
        msg.warn(warning)


if __name__ == "__main__":
    typer.run(main)
