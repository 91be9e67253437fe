"""Train each NER recipe for the same wall-clock budget on the same data, device and transformer.

Prints and writes JSON: training words/s, GPU busy %, dev and test P/R/F, inference words/s (nlp.pipe on the
test set at each --infer-batch-sizes), peak GPU memory and the device. Recipes: `token` (the default config:
token_ner head), `transition` (the same config with spaCy's transition-based ner) and `quickstart` (spaCy's
quickstart transformer recipe, the tutorial's seed). With --hf-peer, the Hugging Face Trainer referee runs
in the same call, for --budget seconds.

--recipes takes runs separated by commas (or spaces), each `NAME[:KEY=VALUE[/KEY=VALUE...]][@SECONDS]`:
settings are separated by `/` so that a comma always starts the next run. Keys: `batcher` (`padded`, the
config's: documents of similar wordpiece length, `batch` counted in padded wordpieces; or `words`: spaCy's
batch_by_words in corpus order, `batch` counted in words, the config's before benchmarks/arithmetic),
`batch` (constant; default --batch-words, else the config's 800 padded wordpieces or 500 words), `lr`
(peak learning rate; default --learn-rate, else the config's), `precision` (auto, bf16 or fp32; default
--precision). quickstart keeps the tutorial's batcher and schedule, so it takes only `precision`. Example:
`token:batch=6400/precision=bf16@60,token:batcher=words/batch=4000@60,transition@45`. Each run records the
share of padding in its training batches and in its test predictions.

A GPU run (NCBI-disease; five runs of 40 s each plus the Trainer's 40 s; with the
setup, model loads, the evaluation and inference passes and the Trainer's start it is estimated, not yet
measured, to fit in 8 minutes on one GPU; `precision=fp32` pins the rows that must not pick bf16 through "auto"):

    python benchmarks/training/benchmark_training.py --gpu-id 0 --train path/to/ncbi-disease/train.tsv \
        --dev path/to/ncbi-disease/dev.tsv --test path/to/ncbi-disease/test.tsv --budget 40 \
        --recipes "token:batcher=words/batch=4000/precision=bf16,token:batch=6400/precision=bf16,token:batch=6400/precision=fp32,transition:batch=6400,quickstart" \
        --hf-peer path/to/hf_peer.py --hf-epochs 7 --infer-batch-sizes 256,64 \
        --output benchmarks/training/gpu-ncbi.json
"""

import functools
import gc
import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import typer
from wasabi import msg

import iob_ner.pipeline.token_ner  # noqa: F401 (the token_ner factory, also where the package is not pip-installed)
from iob_ner.corpus.convert import convert_iob
from iob_ner.experiments import timed
from iob_ner.experiments.timed import (  # noqa: F401
    BATCHERS,
    QUICKSTART,
    RECIPES,
    WORDS_BATCHER,
    GpuSampler,
    nvidia_smi_id,
    score,
    train_for,
)
from iob_ner.training import precision as precision_mod
from iob_ner.util.cli import parse_gpu_id
from iob_ner.util.errors import SetupError
from iob_ner.util.outputs import write_text_atomic
from iob_ner.util.runtime import cpu_name, resolve_transformer, select_device

ROOT = Path(__file__).resolve().parents[2]
SETTING_KEYS = ("batch", "lr", "precision", "batcher")
# no square brackets: typer's rich help reads them as markup
SPEC_HELP = (
    "Runs separated by commas or spaces. Each run: NAME, then optionally :KEY=VALUE with more settings "
    f"after '/', then optionally @SECONDS (else --budget). NAME: {', '.join(RECIPES)}. KEY: batch (padded "
    "wordpieces, or words with batcher=words, per batch, constant), lr (peak learning rate), precision (auto, bf16, fp32), batcher (padded or words); quickstart takes only "
    "precision. Example: token:batch=4000/lr=2e-4/precision=bf16@60,transition@45"
)


@dataclass(frozen=True)
class Run:
    """One recipe run of --recipes: its name, budget and the settings its spec names (the rest are defaults)."""

    recipe: str
    budget: float
    settings: Dict[str, Any] = field(default_factory=dict)
    spec: str = ""


def parse_runs(text: str, *, budget: float) -> List[Run]:
    """The runs of a --recipes value; a SetupError of one sentence naming the bad part."""
    # commas and whitespace separate runs; neither can appear inside one (settings use '/')
    parts = [part for part in re.split(r"[,\s]+", text) if part]
    if not parts:
        raise SetupError(f"--recipes {text!r} names no recipe: use e.g. token,transition")
    return [_parse_run(part, budget) for part in parts]


def _parse_run(part: str, budget: float) -> Run:
    head, at, seconds = part.partition("@")
    if at:
        budget = _parse_budget(seconds, part)
    name, colon, settings_text = head.partition(":")
    if name not in RECIPES and "=" in name:  # most likely a setting written after a comma
        raise SetupError(
            f"{part!r} is not a recipe: separate settings with '/' (token:batch=4000/lr=2e-4) and runs with commas"
        )
    if name not in RECIPES:
        raise SetupError(f"unknown recipe {name!r} in {part!r}: use {', '.join(RECIPES)}")
    if colon and not settings_text:
        raise SetupError(f"{part!r} has a ':' with no settings after it: write e.g. {name}:batch=4000")
    settings: Dict[str, Any] = {}
    for item in settings_text.split("/") if colon else []:
        key, value = _parse_setting(item, part)
        if key in settings:
            raise SetupError(f"{part!r} sets {key} twice")
        if name == "quickstart" and key in ("batch", "lr", "batcher"):
            raise SetupError(
                f"{key} in {part!r} does not apply: quickstart keeps the tutorial's batcher and "
                f"learning-rate schedule (only precision can be set)"
            )
        settings[key] = value
    return Run(name, budget, settings, part)


def _parse_budget(text: str, part: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf"):  # also rejects nan
        raise SetupError(f"the budget {text!r} in {part!r} must be a positive number of seconds (one '@' per run)")
    return seconds


def _parse_setting(item: str, part: str) -> Tuple[str, Any]:
    key, equals, value = item.partition("=")
    if not equals or not key or not value:
        raise SetupError(
            f"the setting {item!r} in {part!r} must be KEY=VALUE, with KEY one of {', '.join(SETTING_KEYS)}"
        )
    if key not in SETTING_KEYS:
        raise SetupError(f"unknown setting {key!r} in {part!r}: use {', '.join(SETTING_KEYS)}")
    if key == "batcher":
        if value not in BATCHERS:
            raise SetupError(f"batcher={value} in {part!r} must be one of {', '.join(BATCHERS)}")
        return key, value
    if key == "precision":
        if value not in precision_mod.SETTINGS:
            raise SetupError(f"precision={value} in {part!r} must be one of {', '.join(precision_mod.SETTINGS)}")
        return key, value
    try:
        number = int(value) if key == "batch" else float(value)
    except ValueError:
        number = 0
    if not number > 0 or number == float("inf"):
        what = "a positive whole number of words" if key == "batch" else "a positive number"
        raise SetupError(f"{key}={value} in {part!r} must be {what}")
    return key, number


def parse_batch_sizes(text: str) -> List[int]:
    """--infer-batch-sizes: positive whole numbers separated by commas, the first one recorded under the old key."""
    sizes = [item.strip() for item in text.split(",") if item.strip()]
    if not sizes or not all(item.isdigit() and int(item) > 0 for item in sizes):
        raise SetupError(
            f"--infer-batch-sizes {text!r} must be positive whole numbers separated by commas, e.g. 256,64"
        )
    return [int(item) for item in sizes]


def release_gpu_memory(gpu: int) -> None:
    """Free what the last recipe left in torch's cache and in cupy's pools (thinc allocates through cupy's
    default pool unless the config routes it to torch), then restart torch's peak count: each recipe's peak
    is its own."""
    if gpu < 0:
        return
    import torch

    gc.collect()
    try:
        import cupy

        cupy.get_default_memory_pool().free_all_blocks()
        cupy.get_default_pinned_memory_pool().free_all_blocks()
    except ImportError:
        pass
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(gpu)


# timed.build_config on this checkout's configs/base_config.cfg
build_config = functools.partial(timed.build_config, base=ROOT / "configs" / "base_config.cfg")


def effective_settings(run: Run, config, chosen_precision: str) -> Dict[str, Any]:
    """What the run trains with, defaults included, for its result entry and the table."""
    batcher = config["training"]["batcher"]
    size = batcher["size"]
    batch = size.get("rate") if isinstance(size, dict) else size
    return {
        "batch_words": batch,
        "batcher": batcher["@batchers"],
        "learn_rate": timed.peak_learn_rate(config),
        "precision": run.settings.get("precision"),
        "chosen_precision": chosen_precision,
    }


def run_hf_peer(script: Path, data_dir: Path, model: str, budget: float, epochs: Optional[float]) -> dict:
    out = data_dir / "hf_peer.json"
    extra = ["--epochs", str(epochs)] if epochs else []
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            "--data",
            str(data_dir),
            "--model",
            model,
            "--budget",
            str(budget),
            "--out",
            str(out),
            *extra,
        ],
        capture_output=True,
        text=True,
    )
    line = next((l for l in result.stdout.splitlines() if l.startswith("RESULT ")), None)
    if result.returncode != 0 or line is None:
        return {"system": "hf-trainer", "error": (result.stderr or result.stdout)[-1500:]}
    data = json.loads(line[len("RESULT ") :])
    return {
        "recipe": "hf-trainer",
        "device": data["device"],
        "train_s": data["train_s"],
        "steps": data["steps"],
        "budget_s": budget,
        "epochs": data["epochs"],
        "schedule_epochs": epochs,
        "train_words_per_s": data["train_words_per_s"],
        "gpu_busy_percent": None,
        "test": {**data["test"], "infer_words_per_s": data["infer_words_per_s"]},
    }


@dataclass(frozen=True)
class Defaults:
    """The CLI's settings for the runs whose spec does not name them."""

    batch_words: Optional[int]
    learn_rate: Optional[float]
    precision: str
    infer_batch_sizes: Tuple[int, ...]


def plan(runs: List[Run], defaults: Defaults, gpu: int) -> List[str]:
    """The precision each run trains in, chosen before anything trains, so a GPU without bf16 stops the
    call at once rather than after the earlier runs."""
    return [precision_mod.choose(run.settings.get("precision", defaults.precision), gpu) for run in runs]


def warm_up(config, *, gpu: int, precision: str, steps: int = 3) -> None:
    """A few untimed updates of a throwaway pipeline, so that the first timed recipe does not pay for CUDA's
    start, kernel compilation and cuBLAS's workspace (on a GPU)."""
    if gpu < 0:
        return
    train_for(config, gpu=gpu, budget=0.0, time_schedule=False, precision=precision, max_steps=steps)
    release_gpu_memory(gpu)


def run_recipe(run: Run, chosen: str, *, corpus: Path, model: str, gpu: int, device: str, defaults: Defaults) -> dict:
    """Train one run for its budget and score it; its result entry."""
    import torch

    release_gpu_memory(gpu)
    config = build_config(
        run.recipe,
        corpus,
        model,
        run.settings.get("batch", defaults.batch_words),
        run.settings.get("lr", defaults.learn_rate),
        run.settings.get("batcher", "padded"),
    )
    settings = effective_settings(run, config, chosen)
    settings["precision"] = settings["precision"] or defaults.precision
    result = train_for(config, gpu=gpu, budget=run.budget, time_schedule=run.recipe != "quickstart", precision=chosen)
    nlp = result.pop("nlp")
    entry = {
        "recipe": run.recipe,
        "spec": run.spec,
        "settings": settings,
        "device": device,
        "budget_s": run.budget,
        **result,
        "dev": score(nlp, corpus / "dev.spacy", defaults.infer_batch_sizes[:1]),
        "test": score(nlp, corpus / "test.spacy", defaults.infer_batch_sizes),
        "peak_gpu_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20) if gpu >= 0 else None,
    }
    del nlp
    release_gpu_memory(gpu)
    return entry


def run_label(entry: dict) -> str:
    """The table's recipe column: the recipe, what it trained with, its budget."""
    settings = entry.get("settings")
    if not settings:  # the Trainer referee
        return f"{entry['recipe']} ({entry['budget_s']:.0f} s)"
    batch = (
        f"batch={settings['batch_words']}"
        if settings["batcher"] == "spacy.batch_by_words.v1"
        else f"padded batch={settings['batch_words']}"
    )
    return f"{entry['recipe']} {batch} lr={settings['learn_rate']:g} {settings['chosen_precision']} ({entry['budget_s']:.0f} s)"


def print_table(results: List[dict], sizes: Sequence[int]) -> None:
    rows = []
    for r in results:
        if "error" in r:
            rows.append((r["system"], "failed: " + re.sub(r"\s+", " ", r["error"])[-60:], *[""] * (5 + len(sizes))))
            continue
        test = r["test"]
        infer = test.get("infer_words_per_s_by_batch", {str(sizes[0]): test["infer_words_per_s"]})
        rows.append(
            (
                run_label(r),
                f"{r['train_words_per_s']:.0f}",
                r["gpu_busy_percent"] or "-",
                r["steps"],
                f"{r['dev']['f']:.3f}" if "dev" in r else "-",
                f"{test['f']:.3f}",
                *[f"{infer[str(size)]:.0f}" if str(size) in infer else "-" for size in sizes],
                r.get("peak_gpu_memory_mb") or "-",
            )
        )
    msg.table(
        rows,
        header=(
            "recipe",
            "train words/s",
            "GPU busy %",
            "steps",
            "dev F",
            "test F",
            *[f"infer words/s @{size}" for size in sizes],
            "peak GPU MB",
        ),
        divider=True,
    )


def main(
    train: Path = typer.Option(..., exists=True),
    dev: Path = typer.Option(..., exists=True),
    test: Path = typer.Option(..., exists=True),
    transformer: str = typer.Option("embedded"),
    gpu_id: str = typer.Option("auto"),
    recipes: str = typer.Option("token,transition", help=SPEC_HELP),
    budget: float = typer.Option(90.0, help="Seconds of training per recipe (and for --hf-peer)"),
    batch_words: Optional[int] = typer.Option(
        None, help="Words per batch for runs without batch= (token and transition recipes)"
    ),
    learn_rate: Optional[float] = typer.Option(
        None, help="Peak learning rate for runs without lr= (token and transition recipes)"
    ),
    precision: str = typer.Option(
        "auto", help="Precision for runs without precision=: auto (bf16 on a GPU with native bf16), bf16 or fp32"
    ),
    infer_batch_sizes: str = typer.Option(
        "256,64", help="nlp.pipe batch sizes for test-set inference words/s; the first one also scores dev and test"
    ),
    hf_peer: Optional[Path] = typer.Option(None, help="Path of hf_peer.py, the Hugging Face Trainer referee"),
    hf_epochs: Optional[float] = typer.Option(
        None, help="hf_peer's --epochs: its warmup and decay span them, so fit them to the budget"
    ),
    output: Path = typer.Option(Path("training/benchmark.json")),
) -> None:
    """Train each NER recipe for the same wall-clock budget on the same data and device; print and write
    training words/s, GPU busy %, dev and test P/R/F, inference words/s and peak GPU memory."""
    benchmark(
        train=train,
        dev=dev,
        test=test,
        transformer=transformer,
        gpu_id=gpu_id,
        recipes=recipes,
        budget=budget,
        batch_words=batch_words,
        learn_rate=learn_rate,
        precision=precision,
        infer_batch_sizes=infer_batch_sizes,
        hf_peer=hf_peer,
        hf_epochs=hf_epochs,
        output=output,
    )


def benchmark(
    *,
    train: Path,
    dev: Path,
    test: Path,
    transformer: str,
    gpu_id: str,
    recipes: str,
    budget: float,
    batch_words: Optional[int],
    learn_rate: Optional[float],
    precision: str,
    infer_batch_sizes: str,
    hf_peer: Optional[Path],
    hf_epochs: Optional[float],
    output: Path,
) -> None:
    try:
        runs = parse_runs(recipes, budget=budget)
        if precision not in precision_mod.SETTINGS:
            raise SetupError(f"--precision must be one of {', '.join(precision_mod.SETTINGS)}, not {precision!r}")
        defaults = Defaults(batch_words, learn_rate, precision, tuple(parse_batch_sizes(infer_batch_sizes)))
        model = resolve_transformer(transformer)
        gpu, device = select_device(parse_gpu_id(gpu_id))
        chosen = plan(runs, defaults, gpu)
    except SetupError as err:
        msg.fail(str(err), exits=1)
    results: List[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp)
        for split, path in (("train", train), ("dev", dev), ("test", test)):
            convert_iob(path, corpus / split, write_json=False)
            shutil.copy(path, corpus / f"{split}.tsv")  # hf_peer reads DIR/{train,dev,test}.tsv
        if runs:  # untimed: CUDA's start and kernel compilation are no recipe's cost
            first = runs[0]
            warm_up(
                build_config(
                    first.recipe,
                    corpus,
                    model,
                    first.settings.get("batch", defaults.batch_words),
                    first.settings.get("lr", defaults.learn_rate),
                ),
                gpu=gpu,
                precision=chosen[0],
            )
        for run, run_precision in zip(runs, chosen):
            msg.info(f"{run.spec}: training for {run.budget:.0f} s on {device} in {run_precision}")
            entry = run_recipe(
                run, run_precision, corpus=corpus, model=model, gpu=gpu, device=device, defaults=defaults
            )
            results.append(entry)
            msg.good(f"{run_label(entry)}: {entry['train_words_per_s']:.0f} words/s, test F {entry['test']['f']:.3f}")
        if hf_peer is not None:
            msg.info(f"hf-trainer: training for {budget:.0f} s")
            results.append(run_hf_peer(hf_peer, corpus, model, budget, hf_epochs))
    write_text_atomic(
        output, json.dumps(_report(results, device=device, budget=budget, train=train, model=model), indent=2) + "\n"
    )
    print_table(results, defaults.infer_batch_sizes)
    msg.good(f"{device}, {cpu_name()}, {budget:.0f} s each unless set -> {output}")


def _report(results: List[dict], *, device: str, budget: float, train: Path, model: str) -> dict:
    from importlib.metadata import version

    return {
        "date": date.today().isoformat(),
        "device": device,
        "cpu": cpu_name(),
        "budget_s": budget,
        "train_file": str(train),
        "transformer": model,
        "versions": {
            "python": platform.python_version(),
            **{name: version(name) for name in ("spacy", "spacy-transformers", "thinc", "torch", "transformers")},
        },
        "results": results,
    }


if __name__ == "__main__":
    typer.run(main)
