"""Timed training for the benchmarks (benchmarks/training, benchmarks/arithmetic): a recipe's config, a loop
that trains for a budget of seconds, steps or words and times only the updates, and scoring with inference
words/s. Not the project's training (training/): no checkpoints, no evaluations, no saved pipeline."""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch
from spacy.schemas import ConfigSchemaTraining
from spacy.training.initialize import init_nlp
from spacy.util import load_config_from_str, minibatch, registry, resolve_dot_names

from ..corpus.convert import read_docs
from ..evaluation.metrics import entity_metrics, predict_gold
from ..pipeline.layers.transformer import Padding, padding_share, transformer_shims
from ..training import precision as precision_mod
from ..training.config_file import render_config

# spaCy's quickstart transformer recipe, as the tutorial fills it (its `ner` block is configs/ner_transition.cfg)
QUICKSTART = {
    "components.transformer.model.get_spans.window": 128,
    "components.transformer.model.get_spans.stride": 96,
    "training.accumulate_gradient": 3,
    "training.batcher": {
        "@batchers": "spacy.batch_by_padded.v1",
        "discard_oversize": True,
        "size": 2000,
        "buffer": 256,
        "get_length": None,
    },
    "training.optimizer.learn_rate": {
        "@schedules": "warmup_linear.v1",
        "warmup_steps": 250,
        "total_steps": 20000,
        "initial_rate": 5e-5,
    },
}
RECIPES = {"token": ("token", {}), "transition": ("transition", {}), "quickstart": ("transition", QUICKSTART)}

# batcher=words: the config's batcher before benchmarks/arithmetic (documents in corpus order, `batch` words a
# batch); the default, padded, is the config's (similar wordpiece lengths, `batch` padded wordpieces a batch)
WORDS_BATCHER = {
    "@batchers": "spacy.batch_by_words.v1",
    "discard_oversize": False,
    "tolerance": 0.2,
    "get_length": None,
    "size": {"@schedules": "constant.v1", "rate": 500},
}
BATCHERS = ("padded", "words")


def nvidia_smi_id(gpu: int) -> str:
    """The --id that makes nvidia-smi report the GPU torch calls `gpu`: its UUID. nvidia-smi numbers the
    machine's GPUs and ignores CUDA_VISIBLE_DEVICES, so under Slurm, Ray or a container CUDA's GPU 0 is
    not nvidia-smi's 0."""
    uuid = str(getattr(torch.cuda.get_device_properties(gpu), "uuid", "") or "")
    if not uuid:
        return str(gpu)  # an old torch: the index, right only where every GPU is visible
    return uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"


class GpuSampler(threading.Thread):
    """Samples `nvidia-smi` utilisation of one GPU (by UUID, see nvidia_smi_id) twice a second while training runs."""

    def __init__(self, gpu: int) -> None:
        super().__init__(daemon=True)
        self.gpu, self.samples, self.running = gpu, [], True
        self.smi_id = nvidia_smi_id(gpu)

    def run(self) -> None:
        while self.running:
            try:
                out = subprocess.run(
                    [
                        "nvidia-smi",
                        f"--id={self.smi_id}",
                        "--query-gpu=utilization.gpu",
                        "--format=csv,noheader,nounits",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=5,
                )
                self.samples.append(float(out.stdout.strip().splitlines()[0]))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                pass
            time.sleep(0.5)

    def stop(self) -> Optional[float]:
        self.running = False
        return round(sum(self.samples) / len(self.samples), 1) if self.samples else None


def _set(config, dotted: str, value) -> None:
    *parents, key = dotted.split(".")
    section = config
    for name in parents:
        section = section[name]
    section[key] = value


def build_config(
    recipe: str,
    corpus: Path,
    model: str,
    batch_words: Optional[int],
    learn_rate: Optional[float],
    batcher: str = "padded",
    *,
    base: Path,
):
    """The config of a recipe (`base`: configs/base_config.cfg) reading `corpus` (train.spacy, dev.spacy) and
    the transformer `model`; `batch_words`, `learn_rate` and `batcher` (padded or words) where given."""
    head, overrides = RECIPES[recipe]
    config = load_config_from_str(render_config(base, head), interpolate=False)
    settings = {
        "paths.train": str(corpus / "train.spacy"),
        "paths.dev": str(corpus / "dev.spacy"),
        "paths.transformer": model,
        **overrides,
    }
    if recipe != "quickstart":
        if batcher == "words":
            settings["training.batcher"] = json.loads(json.dumps(WORDS_BATCHER))  # a copy, nested dicts too
        if batch_words:
            settings["training.batcher.size"] = {"@schedules": "constant.v1", "rate": batch_words}
        if learn_rate:
            settings["training.optimizer.learn_rate.initial_rate"] = learn_rate
    for dotted, value in settings.items():
        _set(config, dotted, value)
    return config


def peak_learn_rate(config) -> float:
    schedule = config["training"]["optimizer"]["learn_rate"]
    return float(schedule["initial_rate"]) if isinstance(schedule, dict) else float(schedule)


def train_for(
    config,
    *,
    gpu: int,
    budget: float,
    time_schedule: bool,
    precision: str = "fp32",
    max_steps: Optional[int] = None,
    max_words: Optional[int] = None,
) -> dict:
    """Train until `budget` seconds of updates have passed (or `max_steps` updates, or the step that reaches
    `max_words` training words, where given); returns nlp and counts. `precision`: "bf16" or "fp32", set on the initialized pipeline before the loop, as train does."""
    nlp = init_nlp(config, use_gpu=gpu)
    precision_mod.set_precision(nlp, precision)
    interpolated = nlp.config.interpolate()
    T = registry.resolve(interpolated["training"], schema=ConfigSchemaTraining)
    (train_corpus,) = resolve_dot_names(interpolated, [T["train_corpus"]])
    optimizer, batcher, accumulate = T["optimizer"], T["batcher"], T["accumulate_gradient"]
    peak = peak_learn_rate(config)
    if time_schedule:  # warm up over the first tenth of the budget, then decay linearly to 0 at its end
        optimizer.schedules.pop("learn_rate", None)
    examples = list(train_corpus(nlp))
    corpus_words = sum(len(eg.reference) for eg in examples)
    random.seed(0)
    sampler = GpuSampler(gpu) if gpu >= 0 else None
    if sampler:
        sampler.start()
    words = steps = 0
    spent = 0.0
    limit = max_steps if max_words is None else None

    def done() -> bool:
        if max_words is not None:
            return words >= max_words
        return spent >= budget and (limit is None or steps >= limit)

    while not done():
        random.shuffle(examples)
        for batch in batcher(examples):
            start = time.perf_counter()
            if time_schedule:
                fraction = spent / budget
                optimizer.learn_rate = peak * min(fraction / 0.1, (1 - fraction) / 0.9)
            for sub in minibatch(batch, size=max(1, -(-len(batch) // accumulate))):
                nlp.update(sub, drop=T["dropout"], sgd=False)
            for _, proc in nlp.pipeline:
                if hasattr(proc, "finish_update") and hasattr(proc, "model"):
                    proc.finish_update(optimizer)
            if not time_schedule:
                optimizer.step_schedules()
            _sync(gpu)
            spent += time.perf_counter() - start
            words += sum(len(eg.reference) for eg in batch)
            steps += 1
            if done():
                break
    busy = sampler.stop() if sampler else None
    padding = padding_share(nlp, "train")
    return {
        "nlp": nlp,
        "train_s": round(spent, 1),
        "steps": steps,
        "epochs": round(words / corpus_words, 2),
        "train_words": words,
        "train_words_per_s": round(words / spent, 1),
        "gpu_busy_percent": busy,
        "padding_share": None if padding is None else round(padding, 4),
    }


def _sync(gpu: int) -> None:
    if gpu >= 0:
        torch.cuda.synchronize()


def score(nlp, corpus_path: Path, batch_sizes: Sequence[int] = (256,)) -> Dict[str, Any]:
    """Typed P/R/F with nlp.pipe at the first batch size, whose words/s stay under `infer_words_per_s`
    (the key older JSON readers know); with more sizes, `infer_words_per_s_by_batch` has one figure each."""
    gold = list(read_docs(corpus_path, nlp.vocab))
    words = sum(map(len, gold))
    shims = transformer_shims(nlp)
    for shim in shims:
        shim.padding["predict"] = Padding()
    examples, seconds = predict_gold(nlp, gold, batch_size=batch_sizes[0])
    typed = entity_metrics(examples)["typed"]
    padding = padding_share(nlp, "predict")
    result: Dict[str, Any] = {
        **{k: round(v, 4) for k, v in typed.items()},
        "infer_words_per_s": round(words / seconds, 1),
        "infer_padding_share": None if padding is None else round(padding, 4),
    }
    if len(batch_sizes) > 1:
        by_batch = {str(batch_sizes[0]): result["infer_words_per_s"]}
        for size in batch_sizes[1:]:
            by_batch[str(size)] = round(words / predict_gold(nlp, gold, batch_size=size)[1], 1)
        result["infer_words_per_s_by_batch"] = by_batch
    return result
