"""What the tests share: where the project is, its fixtures, the public corpora, and loading a command script
or a benchmark script as a module (tests import the package; a script is loaded from its file, never
imported by name, so that no script can come to depend on another)."""

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

# Under pytest-xdist (.ci/run runs two workers on two cores) each worker, and every command it starts,
# uses one thread for torch and BLAS, set before torch is imported: two workers each spinning two OpenMP
# threads on two cores slowed torch steps 4-18x (spin-waits).
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import pytest  # noqa: E402
import spacy  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
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


@pytest.fixture
def fixture_path():
    return lambda name: FIXTURES / name


# -- pipelines that several test files use, built once per session -------------------------------------


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    from test_predict import make_pipeline

    root = tmp_path_factory.mktemp("models")
    for name, faulty in (("plain", False), ("faulty", True)):
        make_pipeline(faulty).to_disk(root / name)
    return root / "plain", root / "faulty"


@pytest.fixture(scope="session")
def scored_model(tmp_path_factory):
    """A tiny token_ner pipeline (tests/test_token_ner.py's), trained once per session and saved."""
    from test_predict import TEMPERATURE
    from test_token_ner import trained_nlp

    nlp, _ = trained_nlp(60)
    nlp.get_pipe("ner").temperature = TEMPERATURE
    path = tmp_path_factory.mktemp("scored") / "model"
    nlp.to_disk(path)
    return path


@pytest.fixture(scope="session")
def transition_model(tmp_path_factory):
    """spaCy's transition ner (untrained: what matters is that it gives no scores)."""
    nlp = spacy.blank("en")
    nlp.add_pipe("ner").add_label("MAT")
    nlp.initialize()
    path = tmp_path_factory.mktemp("transition") / "model"
    nlp.to_disk(path)
    return path


@pytest.fixture(scope="module")  # per module: tests change its settings
def trf_nlp(tmp_path_factory):
    """configs/config.cfg with a 1-layer random BERT, trained a little on TRAIN (token_ner listening to it)."""
    import random

    from spacy.tokens import DocBin
    from test_entity_scores import gold_docs
    from thinc.api import Adam

    from iob_ner.util.runtime import resolve_transformer
    from iob_ner.util.tiny import make_tiny_bert, tiny_training_setup

    folder = tmp_path_factory.mktemp("trf")
    gold = gold_docs(spacy.blank("en").vocab)
    DocBin(docs=gold).to_disk(folder / "train.spacy")
    nlp, examples, _, _, _ = tiny_training_setup(
        ROOT / "configs" / "config.cfg",
        folder / "train.spacy",
        make_tiny_bert(resolve_transformer("embedded"), folder / "bert"),
    )
    optimizer = Adam(0.001)  # why not the config's: its warm-up would still be at a tiny rate here
    random.seed(0)
    for _ in range(10):
        nlp.update(examples, sgd=optimizer, drop=0.1)
    return nlp, gold


@pytest.fixture(scope="session")
def tiny_sample(tmp_path_factory):
    """(assets/train.tsv as a .spacy corpus, the 1-layer random BERT's folder): what tiny_training_setup takes."""
    from iob_ner.corpus.convert import convert_iob
    from iob_ner.util.runtime import resolve_transformer
    from iob_ner.util.tiny import make_tiny_bert

    folder = tmp_path_factory.mktemp("tiny-sample")
    convert_iob(ROOT / "assets" / "train.tsv", folder / "train.spacy")
    return folder / "train.spacy", make_tiny_bert(resolve_transformer("embedded"), folder / "bert")
