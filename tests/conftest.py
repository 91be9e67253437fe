"""The fixtures the tests share: the fixture files, pipelines built once per session or module. What test
modules import (paths, script loading, pipeline and data builders) is in tests/support/, never in a test
module or here."""

import os

# Nothing in the tests may load from a model hub (CI has no network): offline, a name that is not a local
# folder fails at once, where huggingface_hub would first try the network (23 s in one test). Read by
# huggingface_hub when it is imported, so set before anything imports it; every command a test starts
# inherits it.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Under pytest-xdist (.ci/run runs two workers on two cores) each worker, and every command it starts,
# uses one thread for torch and BLAS, set before torch is imported: two workers each spinning two OpenMP
# threads on two cores slowed torch steps 4-18x (spin-waits).
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import pytest  # noqa: E402
import spacy  # noqa: E402
from support.paths import FIXTURES, ROOT  # noqa: E402
from support.pipelines import TEMPERATURE, gold_docs, make_pipeline, trained_nlp  # noqa: E402


@pytest.fixture
def fixture_path():
    return lambda name: FIXTURES / name


# -- pipelines that several test files use, built once per session -------------------------------------


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    for name, faulty in (("plain", False), ("faulty", True)):
        make_pipeline(faulty).to_disk(root / name)
    return root / "plain", root / "faulty"


@pytest.fixture(scope="session")
def scored_model(tmp_path_factory):
    """A tiny token_ner pipeline (support.pipelines.trained_nlp), trained once per session and saved."""
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
