"""Score a trained pipeline on a corpus: metrics JSON (overall, per label, untyped, confusion) and predictions."""
import json
from pathlib import Path
from typing import Optional

import spacy
import typer
from spacy.tokens import DocBin
from wasabi import msg

from iob_ner.corpus import read_docs
from iob_ner.metrics import entity_metrics, predict_gold
from iob_ner.outputs import atomic_outputs
from iob_ner.runtime import SetupError, parse_gpu_id, select_device


def evaluate_pipeline(*, model: Path, corpus: Path, output: Path, predictions: Optional[Path] = None,
                      gpu_id: Optional[int] = -1, batch_size: int = 128) -> dict:
    _, device = select_device(gpu_id)
    nlp = spacy.load(model)
    try:
        gold = list(read_docs(corpus, nlp.vocab))
    except (ValueError, KeyError, TypeError) as err:  # spaCy's E1014, msgpack's errors: not a DocBin
        raise SetupError(f"{corpus} is not a spaCy DocBin (.spacy): make it with `spacy project run convert`") from err
    if not gold:
        raise SetupError(f"{corpus} holds no documents")
    examples, seconds = predict_gold(nlp, gold, batch_size=batch_size)
    metrics = entity_metrics(examples)
    words = sum(len(doc) for doc in gold)
    metrics.update({"model": str(model), "corpus": str(corpus), "device": device, "words": words,
                    "words_per_second": round(words / seconds, 1)})
    # Both or neither: metrics beside predictions of another run would disagree in report.md and errors.html.
    with atomic_outputs(*[path for path in (output, predictions) if path is not None]) as temps:
        temps[0].write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf8")
        if predictions is not None:
            DocBin(attrs=["ORTH", "ENT_IOB", "ENT_TYPE"], docs=[eg.predicted for eg in examples]).to_disk(temps[1])
    return metrics


def main(
    model: Path = typer.Argument(..., exists=True, file_okay=False),
    corpus: Path = typer.Argument(..., exists=True),
    output: Path = typer.Argument(..., help="Metrics JSON"),
    predictions: Optional[Path] = typer.Option(None, help="Also save the predicted docs (.spacy)"),
    gpu_id: str = typer.Option("cpu", help="GPU id, 'cpu' or 'auto'"),
) -> None:
    try:
        m = evaluate_pipeline(model=model, corpus=corpus, output=output, predictions=predictions, gpu_id=parse_gpu_id(gpu_id))
    except SetupError as err:
        msg.fail(str(err), exits=1)
    rows = [(label, f"{s['p']:.3f}", f"{s['r']:.3f}", f"{s['f']:.3f}", s["support"]) for label, s in m["per_label"].items()]
    rows.append(("ALL (typed)", f"{m['typed']['p']:.3f}", f"{m['typed']['r']:.3f}", f"{m['typed']['f']:.3f}", m["gold_entities"]))
    rows.append(("ALL (untyped)", f"{m['untyped']['p']:.3f}", f"{m['untyped']['r']:.3f}", f"{m['untyped']['f']:.3f}", m["gold_entities"]))
    msg.table(rows, header=("label", "P", "R", "F", "support"), divider=True)
    msg.good(f"{corpus}: {m['examples']} documents, {m['words']} words at {m['words_per_second']:.0f} words/s "
             f"on {m['device']} -> {output}")


if __name__ == "__main__":
    typer.run(main)
