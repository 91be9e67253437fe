"""Host time per 1,000 training words: what a training step of the default recipe spends outside the
transformer's forward and backward pass.

On a GPU the transformer's forward and backward are fast, so the rest of a step (the optimizer, wordpiece
tokenization and alignment, gold tags, the NER head and its loss) sets the ceiling. This script measures that
rest on the CPU: it builds a random BERT of 1 layer, 64 wide (2 heads, feed-forward 128) with the embedded
model's vocabulary and tokenizer, so the transformer costs almost nothing, and trains the project's default
recipe (configs/config.cfg, fp32) with it for --steps steps after --warmup steps.

How it measures (one run, no profiler in the timed steps):
- step: wall-clock time of the update, the optimizer step and step_schedules, as the project's training loop
  (src/iob_ner/training/loop.py: `update`, `finish_updates`) runs them
  (evaluation is not part of a step: it runs once every eval_frequency steps);
- torch: time inside the Hugging Face model's forward (its `forward` wrapped on the instance) plus inside
  torch.autograd.backward (the call thinc's PyTorchShim makes for the backward pass);
- host = step - torch; host ms per 1,000 words = host / training words of the step x 1,000;
- areas: exclusive time of wrapped entry points (a stack: time spent in an area nested inside another, such
  as the transformer's backward inside the NER head's backprop, counts for the inner one only), so the areas
  and "other" add up to the step. cProfile cannot give this split (its cumulative times overlap and its
  per-call cost inflates the Python-heavy areas); --profile FILE adds a separate cProfile pass of the same
  steps and prints the functions with the most own time, to find what to remove.

The figure for NCBI-disease (one thread, so the host's share is not hidden by parallel numpy/torch; a quiet
machine; its default of 500 words per batch is the recipe's CPU batch, the issue's "per 484-word step"):
    python scripts/convert.py --train path/to/ncbi-disease/train.tsv \
        --dev path/to/ncbi-disease/dev.tsv --test path/to/ncbi-disease/test.tsv --output corpus/ncbi
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/host_time/benchmark_host_time.py --corpus corpus/ncbi/train.spacy \
        --output training/host-time-ncbi.json
"""

import cProfile
import functools
import io
import json
import pstats
import random
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import typer
from wasabi import msg

from iob_ner.pipeline.layers.speedups import install, release
from iob_ner.pipeline.layers.transformer import transformer_models
from iob_ner.training.loop import finish_updates, update
from iob_ner.util.errors import SetupError
from iob_ner.util.outputs import write_text_atomic
from iob_ner.util.runtime import cpu_name, library_versions, resolve_transformer
from iob_ner.util.tiny import TINY_BERT, make_tiny_bert, tiny_training_setup

ROOT = Path(__file__).resolve().parents[2]
AREAS = {  # area -> what it holds, for the report
    "torch": "the transformer's forward and backward (Hugging Face model forward, torch.autograd.backward)",
    "optimizer_adam": "the transformer's Adam step (fused_adam: one fused torch call) and thinc's Adam for the head",
    "optimizer_other": "the update's walk over the pipes and models around Adam, zeroing the gradients",
    "token_ner": "TokenNER.update: the softmax head's forward and backward, dropout, glue",
    "token_ner_gold": "TokenNER.get_loss: the gold tags (read from the reference's arrays), the loss and its gradient",
    "spacy_transformers": "Transformer.update and the listener: spans, wordpiece alignment, pooling, tensor conversion",
    "hf_tokenizer": "the Hugging Face fast tokenizer's __call__",
}


class AreaClock:
    """Exclusive time per area: entering an area pauses the enclosing one."""

    def __init__(self) -> None:
        self.totals: Dict[str, float] = defaultdict(float)
        self.stack: List[str] = []
        self.mark = 0.0

    def enter(self, area: str) -> None:
        now = time.perf_counter()
        if self.stack:
            self.totals[self.stack[-1]] += now - self.mark
        self.stack.append(area)
        self.mark = now

    def leave(self) -> None:
        now = time.perf_counter()
        self.totals[self.stack.pop()] += now - self.mark
        self.mark = now

    def wrap(self, area: str, func: Callable) -> Callable:
        @functools.wraps(func)
        def timed(*args, **kwargs):
            self.enter(area)
            try:
                return func(*args, **kwargs)
            finally:
                self.leave()

        return timed

    def wrap_layer(self, area: str, func: Callable) -> Callable:
        """A thinc layer function whose forward and returned backprop both count for `area`."""

        def forward(model, X, is_train):
            Y, backprop = self.wrap(area, func)(model, X, is_train)
            return Y, self.wrap(area, backprop)

        return forward


def batches(examples: List, batcher: Callable, seed: int = 0) -> Iterator[List]:
    """The batcher's batches over shuffled examples, epoch after epoch, as spaCy's loop draws them."""
    random.seed(seed)
    while True:
        random.shuffle(examples)
        yield from batcher(examples)


def train_steps(nlp, draw: Iterator[List], optimizer, dropout: float, steps: int) -> Tuple[float, int]:
    """`steps` training steps as spaCy's loop runs them: (seconds of the steps, training words)."""
    seconds, words = 0.0, 0
    for _ in range(steps):
        batch = next(draw)  # drawing batches is not part of the step
        start = time.perf_counter()
        losses: Dict[str, float] = {}
        update(nlp, batch, dropout, losses)  # the training loop's own update and optimizer step (training/loop.py)
        finish_updates(nlp, optimizer, [])
        optimizer.step_schedules()
        seconds += time.perf_counter() - start
        words += sum(len(eg.reference) for eg in batch)
    return seconds, words


@contextmanager
def instrumented(nlp, clock: AreaClock) -> Iterator[None]:
    """Wrap the areas' entry points for the duration; everything is put back after."""
    import thinc.model
    import thinc.optimizers
    import torch
    from spacy_transformers.pipeline_component import Transformer
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

    from iob_ner.pipeline.layers import fused_adam
    from iob_ner.pipeline.token_ner import TokenNER

    undo: List[Callable[[], None]] = []

    def patch(owner: Any, name: str, area: str) -> None:
        had, old = name in vars(owner), getattr(owner, name)
        setattr(owner, name, clock.wrap(area, old))
        undo.append(lambda: setattr(owner, name, old) if had else delattr(owner, name))

    for owner, name, area in (
        (torch.autograd, "backward", "torch"),
        (thinc.optimizers.Optimizer, "__call__", "optimizer_adam"),
        (fused_adam, "_fused_step", "optimizer_adam"),
        (thinc.model.Model, "finish_update", "optimizer_other"),
        (TokenNER, "update", "token_ner"),
        (TokenNER, "get_loss", "token_ner_gold"),
        (Transformer, "update", "spacy_transformers"),
        (PreTrainedTokenizerBase, "__call__", "hf_tokenizer"),
    ):
        patch(owner, name, area)
    for hf_model in _hf_models(nlp):
        patch(hf_model, "forward", "torch")  # on the instance: nn.Module.__call__ finds it first
    for node in _listener_layers(nlp):
        old_func = node._func
        node._func = clock.wrap_layer("spacy_transformers", old_func)
        undo.append(functools.partial(setattr, node, "_func", old_func))
    try:
        yield
    finally:
        for step in reversed(undo):
            step()


def _hf_models(nlp) -> List[Any]:
    from thinc.api import PyTorchShim

    shims = {
        id(s): s
        for _, pipe in nlp.pipeline
        if hasattr(pipe, "model")
        for node in pipe.model.walk()
        for s in node.shims
        if isinstance(s, PyTorchShim)
    }
    return [shim._model for shim in shims.values()]


def _listener_layers(nlp) -> List[Any]:
    """The NER head's tok2vec layer (the transformer listener and its pooling): spacy-transformers code that
    runs inside TokenNER.update, forward and backprop."""
    return [
        pipe.model.get_ref("tok2vec")
        for _, pipe in nlp.pipeline
        if hasattr(pipe, "model") and pipe.model.has_ref("tok2vec")
    ]


def measure_host_time(
    *,
    corpus: Path,
    steps: int = 60,
    warmup: int = 3,
    transformer: str = "embedded",
    batch_words: Optional[int] = None,
    profile: Optional[Path] = None,
) -> Dict[str, Any]:
    """Train the default recipe with a tiny random BERT for `warmup` + `steps` steps (and `steps` more under
    cProfile with `profile`); the figures of the timed steps."""
    import torch

    if not (corpus.is_dir() or corpus.suffix == ".spacy"):
        raise SetupError(f"{corpus} is not a .spacy file or folder: convert it first with `spacy project run convert`")
    source = resolve_transformer(transformer)
    with tempfile.TemporaryDirectory() as tmp:
        model = make_tiny_bert(source, Path(tmp) / "tiny-bert")
        nlp, examples, optimizer, dropout, batcher = tiny_training_setup(
            ROOT / "configs" / "config.cfg", corpus, model, batch_words
        )
        warm = tokenize_once(nlp, examples)
        try:
            draw = batches(examples, batcher)
            train_steps(nlp, draw, optimizer, dropout, warmup)
            clock = AreaClock()
            with instrumented(nlp, clock):
                seconds, words = train_steps(nlp, draw, optimizer, dropout, steps)
            top = profile_steps(nlp, draw, optimizer, dropout, steps, profile) if profile else None
        finally:  # as the training loop does: the wordpieces go
            release(nlp)
        batch_words = nlp.config["training"]["batcher"]["size"]["rate"]
    report = summarize(seconds, words, steps, dict(clock.totals))
    report.update(
        {
            "tokenized_once": warm,
            "warmup_steps": warmup,
            "batch_words": batch_words,
            "corpus": str(corpus),
            "corpus_documents": len(examples),
            "transformer": {"vocabulary_of": source, **TINY_BERT},
            "precision": "fp32",
            "torch_threads": torch.get_num_threads(),
            "cpu": cpu_name(),
            "versions": library_versions(),
        }
    )
    if top is not None:
        report["profile"] = {"path": str(profile), "top_own_time": top}
    return report


def tokenize_once(nlp, examples: List) -> Dict[str, Any]:
    """What the config's after_init callback does before the first step (`layers.speedups.install`: the
    training documents' wordpieces, once), done again and timed: its one-off cost, which the steps no
    longer pay."""
    release(nlp)
    start = time.perf_counter()
    install(nlp, "fp32")
    seconds = time.perf_counter() - start
    spans = sum(len(model.wordpiece_cache.entries) for model in transformer_models(nlp) if model.wordpiece_cache)
    return {"spans": spans, "seconds": round(seconds, 2)}


def summarize(seconds: float, words: int, steps: int, totals: Dict[str, float]) -> Dict[str, Any]:
    """Per-step figures; the areas and "other" add up to the step."""
    step_ms = 1000 * seconds / steps
    torch_ms = 1000 * totals.get("torch", 0.0) / steps
    host_ms = step_ms - torch_ms
    areas = {name: 1000 * totals.get(name, 0.0) / steps for name in AREAS}
    areas["other"] = step_ms - sum(areas.values())  # the update's own loops, validation, step_schedules
    return {
        "steps": steps,
        "words_per_step": round(words / steps, 1),
        "step_ms": round(step_ms, 2),
        "torch_ms": round(torch_ms, 2),
        "host_ms": round(host_ms, 2),
        "host_ms_per_1000_words": round(1000 * host_ms / (words / steps), 2),
        "host_percent_of_step": round(100 * host_ms / step_ms, 1),
        "areas": {
            name: {
                "ms_per_step": round(ms, 2),
                "percent_of_step": round(100 * ms / step_ms, 1),
                "holds": AREAS.get(name, "everything else in the step"),
            }
            for name, ms in areas.items()
        },
    }


def profile_steps(
    nlp, draw: Iterator[List], optimizer, dropout: float, steps: int, path: Path, top: int = 25
) -> List[Dict[str, Any]]:
    """`steps` more steps under cProfile, saved to `path` (pstats); the functions with the most own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    seconds, _ = train_steps(nlp, draw, optimizer, dropout, steps)
    profiler.disable()
    path.parent.mkdir(parents=True, exist_ok=True)
    profiler.dump_stats(str(path))
    stats = pstats.Stats(profiler, stream=io.StringIO())
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:top]  # type: ignore[attr-defined]
    return [
        {
            "function": f"{Path(file).name}:{line}({name})",
            "calls_per_step": round(nc / steps, 1),
            "own_percent": round(100 * tt / seconds, 1),
            "cumulative_percent": round(100 * ct / seconds, 1),
        }
        for (file, line, name), (cc, nc, tt, ct, _) in rows
    ]


def show(report: Dict[str, Any]) -> None:
    msg.info(
        f"{report['steps']} steps of {report['words_per_step']:.0f} words: {report['step_ms']:.1f} ms per "
        f"step, torch {report['torch_ms']:.1f} ms, host {report['host_ms']:.1f} ms "
        f"({report['host_percent_of_step']:.0f} %)"
    )
    rows = [
        (name, f"{area['ms_per_step']:.2f}", f"{area['percent_of_step']:.1f}")
        for name, area in sorted(report["areas"].items(), key=lambda kv: -kv[1]["ms_per_step"])
    ]
    msg.table(rows, header=("area", "ms per step", "% of step"), divider=True)
    for row in report.get("profile", {}).get("top_own_time", [])[:15]:
        print(
            f"  {row['own_percent']:5.1f} % own  {row['cumulative_percent']:5.1f} % cum  "
            f"{row['calls_per_step']:8.1f} calls/step  {row['function']}"
        )
    if report.get("tokenized_once", {}).get("spans"):
        once = report["tokenized_once"]
        msg.info(f"before the steps: {once['spans']:,} spans tokenized once in {once['seconds']:.2f} s")
    msg.good(f"host time: {report['host_ms_per_1000_words']:.1f} ms per 1,000 training words")


def main(
    corpus: Path = typer.Option(
        Path("corpus/train.spacy"), exists=True, help="Training corpus (.spacy file or folder)"
    ),
    steps: int = typer.Option(60, min=1, help="Timed training steps"),
    warmup: int = typer.Option(3, min=0, help="Untimed steps first"),
    transformer: str = typer.Option("embedded", help="Model whose vocabulary and tokenizer the tiny BERT takes"),
    batch_words: Optional[int] = typer.Option(
        None,
        min=1,
        help="Words per batch instead of the config's 500 (the optimizer's cost is per step, so it shrinks per word with bigger batches)",
    ),
    profile: Optional[Path] = typer.Option(None, help="Also run the steps under cProfile and save the stats here"),
    output: Optional[Path] = typer.Option(None, help="Write the figures as JSON here"),
) -> None:
    """Host time per 1,000 training words of the default recipe, outside the transformer's forward and
    backward (a tiny random BERT makes those nearly free), with a breakdown by area."""
    try:
        report = measure_host_time(
            corpus=corpus, steps=steps, warmup=warmup, transformer=transformer, batch_words=batch_words, profile=profile
        )
    except SetupError as err:
        msg.fail(str(err), exits=1)
    show(report)
    if output is not None:
        write_text_atomic(output, json.dumps(report, indent=2) + "\n")
        msg.good(f"-> {output}")


if __name__ == "__main__":
    typer.run(main)
