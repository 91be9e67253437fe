"""Damaged training checkpoints: refused in one sentence that names the damaged file and says how to start
over, before anything heavy loads; a checkpoint that is skipped is said aloud (a tiny CNN pipeline, no
transformer)."""

import pytest
import spacy
from spacy.tokens import Doc
from spacy.training import Example

from iob_ner.training import train
from iob_ner.training.checkpoints import TrainingState, write_checkpoint
from iob_ner.util.errors import CheckpointError

FINGERPRINTS = {"config": "c", "training corpus": "t", "dev corpus": "d", "transformer": "x"}


@pytest.fixture()
def run_dir(tmp_path):
    """A run folder holding one whole checkpoint at step 4 and the model-best of its evaluation, written as
    the loop writes them."""
    nlp = spacy.blank("en")
    nlp.add_pipe("token_ner", name="ner")
    gold = Doc(nlp.vocab, words=["LiFePO4", "works"], ents=["B-MAT", "O"])
    examples = [Example(Doc(nlp.vocab, words=["LiFePO4", "works"]), gold)]
    optimizer = nlp.initialize(lambda: examples)
    nlp.update(examples, sgd=optimizer)
    state = TrainingState(step=4, epoch=1, results=[(0.5, 4)], words=8, seconds=1.0, losses={})
    state.fingerprints = dict(FINGERPRINTS)
    folder = tmp_path / "checkpoints"
    write_checkpoint(folder, nlp, optimizer, state, kept=1, shuffles=[])
    nlp.to_disk(folder / "model-best")  # the loop saves its best evaluation (step 4's) beside the checkpoints
    return folder


def test_a_whole_checkpoint_is_resumed(run_dir):
    assert train.resume_point(run_dir, FINGERPRINTS, resume=True) == run_dir / "step-000004"


def truncate(path):
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


@pytest.mark.parametrize(
    "name, damage, why",
    [
        ("state.json", truncate, "it is not whole JSON"),
        ("state.json", lambda p: p.unlink(), "it is missing"),
        ("optimizer.npz", lambda p: p.unlink(), "it is missing"),
        ("optimizer.npz", truncate, "it is not a whole NumPy archive"),
        ("random.pkl", lambda p: p.unlink(), "it is missing"),
        ("random.pkl", truncate, ""),
    ],
)
def test_a_damaged_checkpoint_is_refused_in_one_sentence_naming_the_file(run_dir, name, damage, why):
    checkpoint = run_dir / "step-000004"
    damage(checkpoint / name)
    with pytest.raises(CheckpointError) as caught:
        train.resume_point(run_dir, FINGERPRINTS, resume=True)
    text = str(caught.value)
    assert text.startswith(f"the checkpoint file {checkpoint / name} is damaged ({why}"), text
    assert text.endswith(
        "rerun with --vars.resume false to start over (the interrupted run's checkpoints are then removed)"
    )
    assert "\n" not in text
    assert checkpoint.exists()  # refused, not removed: the user decides


def test_a_damaged_checkpoint_is_still_removed_when_starting_over(run_dir):
    (run_dir / "step-000004" / "random.pkl").unlink()
    assert train.resume_point(run_dir, FINGERPRINTS, resume=False) is None
    assert not run_dir.exists()


def test_a_checkpoint_whose_writing_was_interrupted_is_skipped_aloud(run_dir, monkeypatch):
    (run_dir / ".step-000008.tmp").mkdir()
    warnings = []
    monkeypatch.setattr(train.msg, "warn", lambda text, *a, **k: warnings.append(text))
    assert train.resume_point(run_dir, FINGERPRINTS, resume=True) == run_dir / "step-000004"
    assert warnings == [f"Skipping {run_dir / '.step-000008.tmp'}: its writing was interrupted, so it is incomplete"]
