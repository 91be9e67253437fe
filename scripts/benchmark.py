"""Train each NER recipe for the same wall-clock budget on the same data, device and transformer.

Prints and writes JSON: training words/s, GPU busy %, dev and test P/R/F, inference words/s, peak GPU
memory and the device. Recipes: `token` (the default config: token_ner head), `transition` (the same
config with spaCy's transition-based ner) and `quickstart` (spaCy's quickstart transformer recipe, the
tutorial's seed). With --hf-peer, the Hugging Face Trainer referee runs in the same call.
"""
import gc
import json
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path
from typing import Dict, List, Optional

import typer
from wasabi import msg

from iob_ner.config_file import render_config
from iob_ner.corpus import convert_iob
from iob_ner.outputs import write_text_atomic
from iob_ner.runtime import SetupError, cpu_name, parse_gpu_id, resolve_transformer, select_device

ROOT = Path(__file__).resolve().parents[1]
# spaCy's quickstart transformer recipe, as the tutorial fills it (its `ner` block is configs/ner_transition.cfg)
QUICKSTART = {
    "components.transformer.model.get_spans.window": 128,
    "components.transformer.model.get_spans.stride": 96,
    "training.accumulate_gradient": 3,
    "training.batcher": {"@batchers": "spacy.batch_by_padded.v1", "discard_oversize": True, "size": 2000,
                         "buffer": 256, "get_length": None},
    "training.optimizer.learn_rate": {"@schedules": "warmup_linear.v1", "warmup_steps": 250, "total_steps": 20000,
                                      "initial_rate": 5e-5},
}
RECIPES = {"token": ("token", {}), "transition": ("transition", {}), "quickstart": ("transition", QUICKSTART)}


class GpuSampler(threading.Thread):
    """Samples `nvidia-smi` utilisation twice a second while training runs."""

    def __init__(self, gpu: int) -> None:
        super().__init__(daemon=True)
        self.gpu, self.samples, self.running = gpu, [], True

    def run(self) -> None:
        while self.running:
            try:
                out = subprocess.run(["nvidia-smi", f"--id={self.gpu}", "--query-gpu=utilization.gpu",
                                      "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5)
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


def build_config(recipe: str, corpus: Path, model: str, batch_words: Optional[int], learn_rate: Optional[float]):
    from spacy.util import load_config_from_str

    head, overrides = RECIPES[recipe]
    config = load_config_from_str(render_config(ROOT / "configs" / "base_config.cfg", head), interpolate=False)
    settings = {"paths.train": str(corpus / "train.spacy"), "paths.dev": str(corpus / "dev.spacy"),
                "paths.transformer": model, **overrides}
    if recipe != "quickstart":
        if batch_words:
            settings["training.batcher.size"] = {"@schedules": "constant.v1", "rate": batch_words}
        if learn_rate:
            settings["training.optimizer.learn_rate.initial_rate"] = learn_rate
    for dotted, value in settings.items():
        _set(config, dotted, value)
    return config


def _peak_learn_rate(config) -> float:
    schedule = config["training"]["optimizer"]["learn_rate"]
    return float(schedule["initial_rate"]) if isinstance(schedule, dict) else float(schedule)


def train_for(config, *, gpu: int, budget: float, time_schedule: bool) -> dict:
    """Train until `budget` seconds of updates have passed; returns nlp and counts."""
    from spacy.schemas import ConfigSchemaTraining
    from spacy.training.initialize import init_nlp
    from spacy.util import minibatch, registry, resolve_dot_names

    nlp = init_nlp(config, use_gpu=gpu)
    interpolated = nlp.config.interpolate()
    T = registry.resolve(interpolated["training"], schema=ConfigSchemaTraining)
    (train_corpus,) = resolve_dot_names(interpolated, [T["train_corpus"]])
    optimizer, batcher, accumulate = T["optimizer"], T["batcher"], T["accumulate_gradient"]
    peak = _peak_learn_rate(config)
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
    while spent < budget:
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
            if spent >= budget:
                break
    busy = sampler.stop() if sampler else None
    return {"nlp": nlp, "train_s": round(spent, 1), "steps": steps, "epochs": round(words / corpus_words, 2),
            "train_words": words, "train_words_per_s": round(words / spent, 1), "gpu_busy_percent": busy}


def _sync(gpu: int) -> None:
    if gpu >= 0:
        import torch

        torch.cuda.synchronize()


def score(nlp, corpus_path: Path) -> Dict[str, float]:
    from iob_ner.corpus import read_docs
    from iob_ner.metrics import entity_metrics, predict_gold

    gold = list(read_docs(corpus_path, nlp.vocab))
    examples, seconds = predict_gold(nlp, gold, batch_size=256)
    typed = entity_metrics(examples)["typed"]
    return {**{k: round(v, 4) for k, v in typed.items()}, "infer_words_per_s": round(sum(map(len, gold)) / seconds, 1)}


def run_hf_peer(script: Path, data_dir: Path, model: str, budget: float, epochs: Optional[float]) -> dict:
    out = data_dir / "hf_peer.json"
    extra = ["--epochs", str(epochs)] if epochs else []
    result = subprocess.run([sys.executable, str(script), "--data", str(data_dir), "--model", model,
                             "--budget", str(budget), "--out", str(out), *extra], capture_output=True, text=True)
    line = next((l for l in result.stdout.splitlines() if l.startswith("RESULT ")), None)
    if result.returncode != 0 or line is None:
        return {"system": "hf-trainer", "error": (result.stderr or result.stdout)[-1500:]}
    data = json.loads(line[len("RESULT "):])
    return {"recipe": "hf-trainer", "device": data["device"], "train_s": data["train_s"], "steps": data["steps"],
            "budget_s": budget, "epochs": data["epochs"], "schedule_epochs": epochs, "train_words_per_s": data["train_words_per_s"], "gpu_busy_percent": None,
            "test": {**data["test"], "infer_words_per_s": data["infer_words_per_s"]}}


def main(
    train: Path = typer.Option(..., exists=True), dev: Path = typer.Option(..., exists=True),
    test: Path = typer.Option(..., exists=True),
    transformer: str = typer.Option("embedded"),
    gpu_id: str = typer.Option("auto"),
    recipes: str = typer.Option("token,transition", help=f"Comma-separated: {', '.join(RECIPES)}; NAME@SECONDS sets its own budget"),
    budget: float = typer.Option(90.0, help="Seconds of training per recipe"),
    batch_words: Optional[int] = typer.Option(None, help="Words per batch (token and transition recipes)"),
    learn_rate: Optional[float] = typer.Option(None, help="Peak learning rate (token and transition recipes)"),
    hf_peer: Optional[Path] = typer.Option(None, help="Path of hf_peer.py, the Hugging Face Trainer referee"),
    hf_epochs: Optional[float] = typer.Option(None, help="hf_peer's --epochs: its warmup and decay span them, so fit them to the budget"),
    output: Path = typer.Option(Path("training/benchmark.json")),
) -> None:
    from importlib.metadata import version

    import torch

    try:
        model = resolve_transformer(transformer)
        gpu, device = select_device(parse_gpu_id(gpu_id))
    except SetupError as err:
        msg.fail(str(err), exits=1)
    runs = [(r.split("@")[0].strip(), float(r.split("@")[1]) if "@" in r else budget) for r in recipes.split(",") if r.strip()]
    unknown = {name for name, _ in runs} - set(RECIPES)
    if unknown:
        msg.fail(f"unknown recipe(s) {sorted(unknown)}: use {', '.join(RECIPES)}", exits=1)
    results: List[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp)
        for split, path in (("train", train), ("dev", dev), ("test", test)):
            convert_iob(path, corpus / split, write_json=False)
            shutil.copy(path, corpus / f"{split}.tsv")  # hf_peer reads DIR/{train,dev,test}.tsv
        for recipe, seconds in runs:
            msg.info(f"{recipe}: training for {seconds:.0f} s on {device}")
            if gpu >= 0:
                torch.cuda.reset_peak_memory_stats()
            config = build_config(recipe, corpus, model, batch_words, learn_rate)
            run = train_for(config, gpu=gpu, budget=seconds, time_schedule=recipe != "quickstart")
            nlp = run.pop("nlp")
            entry = {"recipe": recipe, "device": device, "budget_s": seconds, **run, "dev": score(nlp, corpus / "dev.spacy"),
                     "test": score(nlp, corpus / "test.spacy"),
                     "peak_gpu_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20) if gpu >= 0 else None}
            results.append(entry)
            msg.good(f"{recipe}: {entry['train_words_per_s']:.0f} words/s, test F {entry['test']['f']:.3f}")
            del nlp
            gc.collect()
            if gpu >= 0:
                torch.cuda.empty_cache()
        if hf_peer is not None:
            msg.info(f"hf-trainer: training for {budget:.0f} s")
            results.append(run_hf_peer(hf_peer, corpus, model, budget, hf_epochs))
    report = {"date": date.today().isoformat(), "device": device, "cpu": cpu_name(), "budget_s": budget,
              "train_file": str(train), "transformer": model,
              "versions": {"python": platform.python_version(), **{
                  name: version(name) for name in ("spacy", "spacy-transformers", "thinc", "torch", "transformers")}},
              "results": results}
    write_text_atomic(output, json.dumps(report, indent=2) + "\n")
    rows = []
    for r in results:
        if "error" in r:
            rows.append((r["system"], "failed: " + re.sub(r"\s+", " ", r["error"])[-60:], "", "", "", "", "", ""))
            continue
        rows.append((f"{r['recipe']} ({r['budget_s']:.0f} s)", f"{r['train_words_per_s']:.0f}", r["gpu_busy_percent"] or "-", r["steps"],
                     f"{r['dev']['f']:.3f}" if "dev" in r else "-", f"{r['test']['f']:.3f}",
                     f"{r['test']['infer_words_per_s']:.0f}", r.get("peak_gpu_memory_mb") or "-"))
    msg.table(rows, header=("recipe", "train words/s", "GPU busy %", "steps", "dev F", "test F", "infer words/s",
                            "peak GPU MB"), divider=True)
    msg.good(f"{device}, {cpu_name()}, {budget:.0f} s each -> {output}")


if __name__ == "__main__":
    typer.run(main)
