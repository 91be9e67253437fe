"""Where the project is, its fixtures, the public corpora, and loading a command script or a benchmark script
as a module (tests import the package; a script is loaded from its file, never imported by name, so that no
script can come to depend on another)."""

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
# The public corpora (NCBI-disease, MatScholar, biomed-unlabeled): IOB_NER_DATA, else ../shared/data beside
# the repository. Tests that need them skip where they are absent.
SHARED_DATA = Path(os.environ.get("IOB_NER_DATA") or ROOT.parent / "shared" / "data")


def load_file(path: Path) -> ModuleType:
    """The module defined by a .py file (a script of scripts/ or benchmarks/), loaded once."""
    name = f"_loaded_{path.parent.name}_{path.stem}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def load_script(name: str) -> ModuleType:
    return load_file(ROOT / "scripts" / f"{name}.py")


def load_benchmark(path: str) -> ModuleType:
    return load_file(ROOT / "benchmarks" / path)


def training_benchmark_arguments(output: Path, **changes) -> dict:
    """Every argument of benchmarks/training's `benchmark()` (a typer command: called directly it has no
    defaults), for the sample's three files and the embedded model; `changes` replace some."""
    assets = ROOT / "assets"
    arguments = dict(
        train=assets / "train.tsv",
        dev=assets / "dev.tsv",
        test=assets / "test.tsv",
        transformer="embedded",
        gpu_id="cpu",
        recipes="token",
        budget=1.0,
        batch_words=None,
        learn_rate=None,
        precision="auto",
        infer_batch_sizes="256",
        hf_peer=None,
        hf_epochs=None,
        output=output,
    )
    return {**arguments, **changes}
