"""distill: the soft-target loss against a hand computation, a student that learns from a teacher on tiny data,
teacher labels reused by a rerun and remade for another teacher, the command end to end, and the packaged
student installed by name in a fresh venv."""

import json
import os
import random
import subprocess
import sys

import numpy
import pytest
import spacy
from spacy.tokens import Doc
from spacy.training import Example
from support.paths import ROOT

from iob_ner.corpus.convert import convert_iob, read_docs
from iob_ner.distill import distill_pipeline
from iob_ner.distill import labels as labels_module
from iob_ner.distill.labels import label_texts, logits_and_tags, stream_silver
from iob_ner.distill.student import StudentSettings, one_hot, teacher_student_loss
from iob_ner.training.train import Checkpointing
from iob_ner.util.errors import SetupError
from iob_ner.util.outputs import content_sha256

SCRIPT = ROOT / "scripts" / "distill.py"


def softmax(x, axis=-1):
    e = numpy.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.fixture(scope="module")
def head():
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("token_ner", name="ner")
    pipe.add_label("X")  # tags O, B-X, I-X, L-X, U-X
    return pipe


# -- the loss -----------------------------------------------------------------------------------------------


def test_soft_target_loss_and_gradient_match_a_hand_computation(head):
    z = numpy.array([[2.0, -1.0, 0.5, 0.0, 1.0], [-3.0, 4.0, 0.0, 1.0, -2.0]], dtype="float32")
    teacher = numpy.array([[0.7, 0.1, 0.1, 0.05, 0.05], [0.0, 0.9, 0.1, 0.0, 0.0]], dtype="float32")
    T = 2.0
    loss, (grad,) = teacher_student_loss(head, [teacher], [softmax(z)], temperature=T)
    # by hand: q = softmax(z / T); loss = T² · KL(p ‖ q) = T² · Σ p (log p - log q) (0 log 0 = 0); d loss / d z = T · (q - p)
    q = numpy.exp(z / T) / numpy.exp(z / T).sum(axis=1, keepdims=True)
    kl = sum(p * (numpy.log(p) - numpy.log(q_)) for p, q_ in zip(teacher.ravel(), q.ravel()) if p > 0)
    assert loss == pytest.approx(T * T * kl, rel=1e-5)
    numpy.testing.assert_allclose(grad, T * (q - teacher), atol=1e-6)
    # a student whose logits are T · log p matches the teacher: nothing left to learn
    matched = softmax(T * numpy.log(numpy.maximum(teacher, 1e-30)))
    assert teacher_student_loss(head, [teacher], [matched], temperature=T)[0] == pytest.approx(0.0, abs=1e-4)
    # and the gradient is the loss's: central differences on the logits
    eps, numeric = 1e-3, numpy.zeros_like(z, dtype="float64")
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            up, down = z.astype("float64"), z.astype("float64")
            up[i, j] += eps
            down[i, j] -= eps
            plus = teacher_student_loss(head, [teacher], [softmax(up)], temperature=T)[0]
            minus = teacher_student_loss(head, [teacher], [softmax(down)], temperature=T)[0]
            numeric[i, j] = (plus - minus) / (2 * eps)
    numpy.testing.assert_allclose(grad, numeric, atol=2e-3)


def test_hard_silver_targets_at_t1_give_the_gold_loss_and_gradient(head):
    """One-hot targets at T = 1 are plain cross-entropy: get_loss's gradient on those tags (thinc's get_loss
    reports the squared gradient as its loss; this loss is the cross-entropy itself)."""
    nlp = spacy.blank("en")
    doc = Doc(nlp.vocab, words=["LiFePO4", "is", "a", "cathode"], ents=["B-X", "O", "B-X", "I-X"])
    z = numpy.random.default_rng(0).normal(size=(4, 5)).astype("float32")
    tags = numpy.array([head.tag_names.index(t) for t in ("U-X", "O", "B-X", "L-X")])
    gold_loss, (gold_grad,) = head.get_loss([Example(Doc(nlp.vocab, words=[t.text for t in doc]), doc)], [softmax(z)])
    loss, (grad,) = teacher_student_loss(head, [one_hot(tags, 5)], [softmax(z)], temperature=1.0)
    numpy.testing.assert_allclose(grad, gold_grad, atol=1e-6)
    assert gold_loss == pytest.approx((gold_grad**2).sum(), rel=1e-5)
    assert loss == pytest.approx(-numpy.log(softmax(z)[numpy.arange(4), tags]).sum(), rel=1e-5)


def test_a_bad_temperature_is_refused(head):
    with pytest.raises(ValueError, match="temperature must be positive"):
        teacher_student_loss(head, [numpy.ones((1, 5)) / 5], [numpy.ones((1, 5)) / 5], temperature=0.0)
    with pytest.raises(SetupError, match="distill_mode must be one of soft, hard, gold"):
        StudentSettings(mode="silver").check()


# -- a teacher on the sample -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """The shipped sample converted (train, dev, test), and a CNN token_ner teacher trained on its train split."""
    folder = tmp_path_factory.mktemp("distill")
    for split in ("train", "dev", "test"):
        convert_iob(ROOT / "assets" / f"{split}.tsv", folder / split, write_json=False)
    teacher = trained_teacher(folder / "train.spacy", steps=40)
    teacher.to_disk(folder / "teacher")
    return folder


def trained_teacher(train, steps, seed=0):
    nlp = spacy.blank("en")
    nlp.add_pipe("token_ner", name="ner")
    examples = [Example(Doc(nlp.vocab, words=[t.text for t in d]), d) for d in read_docs(train, nlp.vocab)]
    random.seed(seed)
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(steps):
        random.shuffle(examples)
        nlp.update(examples, sgd=optimizer, drop=0.1)
    return nlp


def student_config(tmp_path):
    """configs/student.cfg as create-config writes it."""
    from iob_ner.training.config_file import write_config

    path = tmp_path / "student.cfg"
    write_config(ROOT / "configs" / "base_student.cfg", path, "token")
    return path


def distill_sample(sample, tmp_path, teacher=None, **options):
    """distill_pipeline on the sample's train and dev, with student_config's student, writing under tmp_path
    (student/, labels/); the teacher is the sample's unless given."""
    return distill_pipeline(
        teacher=teacher or sample / "teacher",
        config=student_config(tmp_path),
        output=tmp_path / "student",
        train=sample / "train.spacy",
        dev=sample / "dev.spacy",
        labels_dir=tmp_path / "labels",
        **options,
    )


def label(sample, labels_dir, teacher=None, **kwargs):
    teacher = teacher or sample / "teacher"
    nlp = spacy.load(teacher)
    return label_texts(
        nlp, teacher, [sample / "train.spacy"], labels_dir, head="ner", temperature=2.0, shard_size=16, **kwargs
    )


def test_labels_are_shards_of_teacher_distributions_that_sum_to_one(sample, tmp_path):
    labels = label(sample, tmp_path / "labels")
    docs = list(read_docs(sample / "train.spacy", spacy.blank("en").vocab))
    assert labels.docs == len(docs) and len(labels.manifest["shards"]) == -(-len(docs) // 16)
    assert labels.manifest["complete"] and not labels.reused and labels.labelled_docs == len(docs)
    stream = stream_silver(labels, spacy.blank("en").vocab, limit=None, seed=0)
    items = [next(stream) for _ in range(len(docs))]
    assert sorted(item.doc.text for item in items) == sorted(doc.text for doc in docs)  # an epoch: each once
    for item in items:
        assert item.probs.dtype == numpy.float16 and item.probs.shape == (len(item.doc), len(labels.tag_names))
        numpy.testing.assert_allclose(item.probs.astype("float32").sum(axis=1), 1.0, atol=5e-3)
    # the soft targets are the teacher's softmax at T = 2 over the logits it predicts with
    teacher = spacy.load(sample / "teacher")
    doc = Doc(teacher.vocab, words=[t.text for t in items[0].doc], spaces=[bool(t.whitespace_) for t in items[0].doc])
    ((logits, tags),) = logits_and_tags(teacher.get_pipe("ner"), [doc])
    numpy.testing.assert_allclose(items[0].probs.astype("float32"), softmax(logits / 2.0), atol=2e-3)
    assert list(items[0].tags) == list(tags)


def test_a_rerun_with_the_same_teacher_and_texts_labels_nothing(sample, tmp_path, monkeypatch):
    label(sample, tmp_path / "labels")
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "labels").iterdir()}

    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher ran again")

    monkeypatch.setattr(labels_module, "teacher_batches", no_teacher)
    again = label(sample, tmp_path / "labels")
    assert again.reused and again.labelled_docs == 0 and again.docs > 0
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "labels").iterdir()} == before


def test_an_unlabelled_input_without_text_is_refused_not_ignored(sample, tmp_path):
    teacher = spacy.load(sample / "teacher")
    for empty in (ROOT / "assets" / "train.tsv", tmp_path / "blank.txt"):  # an IOB export; blank lines
        (tmp_path / "blank.txt").write_text("\n \n", encoding="utf8")
        with pytest.raises(SetupError, match=f"{empty.name} holds no text to label"):
            label_texts(
                teacher,
                sample / "teacher",
                [sample / "train.spacy", empty],
                tmp_path / "labels",
                head="ner",
                temperature=2.0,
                shard_size=16,
            )


def test_a_changed_teacher_relabels(sample, tmp_path):
    first = label(sample, tmp_path / "labels")
    other = tmp_path / "other-teacher"
    trained_teacher(sample / "train.spacy", steps=5, seed=1).to_disk(other)
    second = label(sample, tmp_path / "labels", teacher=other)
    assert not second.reused and second.labelled_docs == first.docs
    assert second.manifest["fingerprint"]["teacher"] != first.manifest["fingerprint"]["teacher"]


def test_an_interrupted_labelling_goes_on_after_its_last_whole_shard(sample, tmp_path):
    def stop_after_two(shards, docs):
        if shards == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        label(sample, tmp_path / "labels", on_shard=stop_after_two)
    resumed = label(sample, tmp_path / "labels")
    assert not resumed.reused and resumed.labelled_docs == resumed.docs - 32  # two shards of 16 were kept
    whole = label(sample, tmp_path / "fresh")
    # the first two shards' seconds are the interrupted run's; a shard cut from the teacher's buffer right
    # after another takes ~0 s (the buffer's labelling time went to the first)
    seconds = [shard["seconds"] for shard in resumed.manifest["shards"]]
    assert min(seconds) >= 0 and sum(seconds[:2]) > 0 and resumed.all_seconds == round(sum(seconds), 1)
    for a, b in zip(resumed.manifest["shards"], whole.manifest["shards"]):
        assert {**a, "seconds": 0} == {**b, "seconds": 0}
        with (
            numpy.load(tmp_path / "labels" / f"{a['name']}.npz") as x,
            numpy.load(tmp_path / "fresh" / f"{b['name']}.npz") as y,
        ):
            numpy.testing.assert_array_equal(x["probs"], y["probs"])


# -- the student --------------------------------------------------------------------------------------------


def f_on(model, corpus):
    nlp = spacy.load(model)
    gold = list(read_docs(corpus, nlp.vocab))
    return nlp.evaluate([Example(nlp.make_doc(doc.text), doc) for doc in gold])["ents_f"]


def test_a_student_learns_from_the_teacher_on_tiny_data_and_beats_chance(sample, tmp_path):
    """Soft targets on the training texts, 60 steps: the student finds the training entities (chance: F ~ 0)."""
    record = distill_sample(
        sample,
        tmp_path,
        test=sample / "test.spacy",
        settings=StudentSettings(max_steps=60, eval_frequency=20),
        shard_size=16,
    )
    student = tmp_path / "student"
    for name in ("model-best", "model-last", "log.jsonl", "calibration.json", "distillation.json"):
        assert (student / name).exists(), name
    assert not (student / ".run").exists()
    assert f_on(student / "model-best", sample / "train.spacy") > 0.5
    log = [json.loads(line) for line in (student / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [20, 40, 60] and log[-1]["losses"]["ner_distill"] < log[0]["losses"][
        "ner_distill"
    ]
    nlp = spacy.load(student / "model-best")
    assert (
        nlp.pipe_names == ["ner"]
        and nlp.get_pipe("ner").labels == spacy.load(sample / "teacher").get_pipe("ner").labels
    )
    assert nlp.get_pipe("ner").temperature == pytest.approx(record["calibration"]["temperature"])
    trained_on = nlp.meta["iob_ner_trained_on"]  # what evaluate compares a corpus with
    assert trained_on["dev"] == {"path": str(sample / "dev.spacy"), "sha256": content_sha256(sample / "dev.spacy")}
    assert trained_on["train"]["sha256"] == content_sha256(sample / "train.spacy")
    side = record["comparison"]
    assert side["teacher"]["words"] == side["student"]["words"] == side["timing_words"] > 0
    # the speed-up: the median of alternate timed rounds, with the spread of the per-round ratios
    assert side["rounds"] == 3 and len(side["speedup_rounds"]) == 3 and side["timing_documents"] > 0
    assert side["speedup_min"] <= side["speedup"] <= side["speedup_max"] and side["speedup"] > 0
    assert side["speedup"] == pytest.approx(sorted(side["speedup_rounds"])[1], abs=0.011)
    for name in ("teacher", "student"):
        assert len(side[name]["seconds"]) == len(side[name]["words_per_second_rounds"]) == 3
        assert side[name]["words_per_second"] == pytest.approx(sorted(side[name]["words_per_second_rounds"])[1])
    assert record["silver_docs"] == record["sources"][0]["docs"] > 0 and record["peak_memory_mb"] > 0


def test_a_teacher_without_token_ner_is_refused_in_one_sentence(sample, tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe("ner").add_label("MAT")
    nlp.initialize()
    nlp.to_disk(tmp_path / "transition")
    with pytest.raises(SetupError, match="has no token_ner component"):
        distill_sample(sample, tmp_path, teacher=tmp_path / "transition")


def test_a_teacher_that_lacks_a_training_label_is_refused_before_labelling(sample, tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe("token_ner", name="ner")
    doc = Doc(nlp.vocab, words=["LiFePO4", "works"], ents=["B-MAT", "O"])
    nlp.initialize(lambda: [Example(Doc(nlp.vocab, words=["LiFePO4", "works"]), doc)])
    nlp.to_disk(tmp_path / "mat-only")
    with pytest.raises(SetupError, match=r"train.spacy has label\(s\) APL, CMT, PRO, SMT that the teacher"):
        distill_sample(sample, tmp_path, teacher=tmp_path / "mat-only")
    assert not (tmp_path / "labels").exists() and not (tmp_path / "student").exists()


# -- the command, with a transformer teacher ----------------------------------------------------------------


@pytest.fixture(scope="module")
def trf_teacher(sample, tmp_path_factory):
    """configs/config.cfg's pipeline with a 1-layer random BERT (src/iob_ner/util/tiny.py), trained a few steps."""
    from thinc.api import Adam

    from iob_ner.util.runtime import resolve_transformer
    from iob_ner.util.tiny import make_tiny_bert, tiny_training_setup

    folder = tmp_path_factory.mktemp("trf-teacher")
    bert = make_tiny_bert(resolve_transformer("embedded"), folder / "bert")
    nlp, examples, _, _, _ = tiny_training_setup(ROOT / "configs" / "config.cfg", sample / "train.spacy", bert)
    optimizer = Adam(0.001)
    random.seed(0)
    for _ in range(5):
        nlp.update(examples, sgd=optimizer, drop=0.1)
    nlp.to_disk(folder / "model-best")
    return folder / "model-best"


def run_script(*args, cwd=ROOT):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "WASABI_LOG_FRIENDLY": "1"},
    )
    return result.returncode, " ".join((result.stdout + result.stderr).split())


def test_the_command_distils_a_transformer_scores_the_student_and_reports_both(sample, trf_teacher, tmp_path):
    texts = tmp_path / "unlabelled.txt"
    texts.write_text("LiFePO4 cathodes were coated .\nZnO films were grown by sputtering .\n", encoding="utf8")
    args = [
        trf_teacher,
        tmp_path / "student.cfg",
        tmp_path / "student",
        "--base-config",
        ROOT / "configs" / "base_student.cfg",
    ]
    args += ["--train", sample / "train.spacy", "--dev", sample / "dev.spacy", "--test", sample / "test.spacy"]
    args += ["--input", texts, "--labels-dir", tmp_path / "labels", "--max-steps", "10", "--eval-frequency", "5"]
    code, output = run_script(*args, "--gpu-id", "cpu")
    assert code == 0, output
    assert "documents labelled" in output and "student step 10: dev F" in output and "the teacher's words/s" in output
    record = json.loads((tmp_path / "student" / "distillation.json").read_text())
    assert [s["docs"] for s in record["sources"]] == [
        len(list(read_docs(sample / "train.spacy", spacy.blank("en").vocab))),
        2,
    ]
    report = (tmp_path / "student" / "report.md").read_text()
    assert "## Teacher and student" in report and "| words/s (median) |" in report
    side = record["comparison"]
    assert f"{side['speedup']:.1f}x as fast (median of 3 rounds" in report
    assert f"per round {side['speedup_min']:.1f}x to {side['speedup_max']:.1f}x" in report
    for name in ("metrics-dev.json", "metrics-test.json"):
        assert json.loads((tmp_path / "student" / name).read_text())["model"].endswith("model-best")
    # the same command again: the teacher's labels are reused
    code, output = run_script(*args, "--gpu-id", "cpu")
    assert code == 0 and "reused from an earlier run" in output, output


KILL_AFTER_CHECKPOINT = """
import os, runpy, signal, sys
from iob_ner.training import checkpoints

write = checkpoints.write_checkpoint

def write_then_die(folder, nlp, optimizer, state, kept, shuffles):
    path = write(folder, nlp, optimizer, state, kept, shuffles)
    if state.step == {step}:  # kill -9 right after the checkpoint of this step
        os.kill(os.getpid(), signal.SIGKILL)
    return path

checkpoints.write_checkpoint = write_then_die
sys.argv = ["scripts/distill.py", *sys.argv[1:]]
runpy.run_path("scripts/distill.py", run_name="__main__")
"""


def test_a_student_killed_after_a_checkpoint_resumes_to_the_same_weights_as_an_uninterrupted_one(sample, tmp_path):
    """kill -9 after the checkpoint of step 6 (between the evaluations of steps 4 and 8), then the same command:
    the student goes on from step 6 and ends with the uninterrupted run's log and weights, byte for byte."""
    config, labels = student_config(tmp_path), tmp_path / "labels"
    distill_pipeline(  # the uninterrupted run, in this process (one interpreter's start less)
        teacher=sample / "teacher",
        config=config,
        output=tmp_path / "whole",
        train=sample / "train.spacy",
        dev=sample / "dev.spacy",
        labels_dir=labels,
        settings=StudentSettings(max_steps=12, eval_frequency=4),
        checkpointing=Checkpointing(every=2),
    )

    def command(output):  # the same run through the command
        args = [sample / "teacher", config, output, "--train", sample / "train.spacy", "--dev", sample / "dev.spacy"]
        args += ["--labels-dir", labels, "--max-steps", "12", "--eval-frequency", "4"]
        return [*map(str, args), "--checkpoint-every", "2", "--gpu-id", "cpu"]

    killed = tmp_path / "killed"
    result = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_CHECKPOINT.format(step=6), *command(killed)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == -9, result.stderr[-3000:]
    assert not (killed / "model-best").exists()  # nothing promoted: the run is in .run, with its checkpoint
    assert sorted(p.name for p in (killed / ".run").iterdir() if p.name.startswith("step-")) == ["step-000006"]

    code, output = run_script(*command(killed))
    assert code == 0, output
    assert "Resuming the interrupted run from its checkpoint at step 6" in output, output
    assert sorted(p.name for p in killed.iterdir()) == sorted(p.name for p in (tmp_path / "whole").iterdir())
    whole = [json.loads(line) for line in (tmp_path / "whole" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in whole] == [4, 8, 12]
    assert (killed / "log.jsonl").read_text() == (tmp_path / "whole" / "log.jsonl").read_text()
    for model in ("model-best", "model-last"):
        weights = [(folder / model / "ner" / "model").read_bytes() for folder in (killed, tmp_path / "whole")]
        assert weights[0] == weights[1], model
    records = [json.loads((folder / "distillation.json").read_text()) for folder in (killed, tmp_path / "whole")]
    assert records[0]["training"]["best_dev_f"] == records[1]["training"]["best_dev_f"]
    assert records[0]["calibration"] == records[1]["calibration"]


@pytest.mark.parametrize("steps", ["0", "-5"])
def test_the_command_refuses_distill_max_steps_0_or_below_in_one_sentence(steps, tmp_path):
    """--vars.distill_max_steps 0 once meant "the config's 20000 steps": the student trained for hours."""
    for name in ("train.spacy", "dev.spacy"):
        (tmp_path / name).write_bytes(b"")
    args = [tmp_path / "teacher", tmp_path / "student.cfg", tmp_path / "student"]
    args += ["--train", tmp_path / "train.spacy", "--dev", tmp_path / "dev.spacy", "--max-steps", steps]
    code, output = run_script(*args, "--gpu-id", "cpu")
    assert code == 1, output
    assert f"distill_max_steps must be a positive number of training steps, not {steps}" in output, output
    assert "Traceback" not in output and not (tmp_path / "student").exists()


@pytest.fixture()
def corpora(tmp_path):
    """A teacher folder and three corpora of different bytes: nothing is read before the refusal."""
    (tmp_path / "teacher").mkdir()
    for name in ("train", "dev", "test"):
        (tmp_path / f"{name}.spacy").write_bytes(f"{name} documents".encode())
    return tmp_path


def distill_held_out(corpora, unlabelled):
    return distill_pipeline(
        teacher=corpora / "teacher",
        config=corpora / "student.cfg",
        output=corpora / "student",
        train=corpora / "train.spacy",
        dev=corpora / "dev.spacy",
        test=corpora / "test.spacy",
        unlabelled=unlabelled,
        labels_dir=corpora / "labels",
    )


@pytest.mark.parametrize(
    "make, split, what",
    [
        (lambda d: d / "test.spacy", "test", "is"),
        (lambda d: d / "sub" / ".." / "dev.spacy", "dev", "is"),  # the same file, spelled otherwise
        (lambda d: d / "copy.spacy", "test", "is a copy of"),  # the same bytes under another name
        (lambda d: d / "folder", "dev", "holds"),  # a folder with a copy of dev in it
    ],
)
def test_a_dev_or_test_corpus_as_unlabelled_input_is_refused_as_a_leak(corpora, make, split, what):
    (corpora / "sub").mkdir()
    (corpora / "copy.spacy").write_bytes((corpora / "test.spacy").read_bytes())
    (corpora / "folder").mkdir()
    (corpora / "folder" / "shard.spacy").write_bytes((corpora / "dev.spacy").read_bytes())
    unlabelled = make(corpora)
    with pytest.raises(SetupError) as caught:
        distill_held_out(corpora, unlabelled)
    text = str(caught.value)
    assert text.startswith(f"the unlabelled input {unlabelled} {what}"), text
    assert f"the {split} corpus {corpora / f'{split}.spacy'}" in text and f"its {split} score would leak" in text
    assert "--vars.distill_input my/unlabelled.txt" in text and "\n" not in text
    assert not (corpora / "labels").exists() and not (corpora / "student").exists()


def test_the_training_corpus_or_other_texts_as_unlabelled_input_are_not_refused(corpora, monkeypatch):
    import iob_ner.distill as distill

    def labelled(*args, **kwargs):
        raise RuntimeError("labelling started")

    monkeypatch.setattr(distill, "label_with_teacher", labelled)
    (corpora / "texts.txt").write_text("LiFePO4 cathodes\n", encoding="utf8")
    for unlabelled in (corpora / "train.spacy", corpora / "texts.txt", None):
        with pytest.raises(RuntimeError, match="labelling started"):
            distill_held_out(corpora, unlabelled)


# -- the packaged student ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_packaged_student_installs_in_a_fresh_venv_and_loads_by_name(sample, tmp_path):
    from iob_ner.pipeline.packaging import package_pipeline

    distill_sample(sample, tmp_path, settings=StudentSettings(max_steps=40, eval_frequency=20))
    wheel, _ = package_pipeline(
        model=tmp_path / "student" / "model-best", output_dir=tmp_path / "packages", name="student", version="0.1.0"
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "-q", str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-3000:]
    text = "LiFePO4 nanoparticles were prepared by a sol-gel route ."
    check = (
        f"import spacy; nlp = spacy.load('en_student'); doc = nlp({text!r}); "
        "print(nlp.pipe_names, sorted(e.label_ for e in doc.ents), 'torch' in __import__('sys').modules)"
    )
    result = subprocess.run(
        [python, "-c", check], cwd=tmp_path, capture_output=True, text=True, env={"PATH": os.environ["PATH"]}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    here = spacy.load(tmp_path / "student" / "model-best")
    assert result.stdout.strip() == f"['ner'] {sorted(e.label_ for e in here(text).ents)} False"


def test_project_yml_has_the_distill_command_and_workflow():
    """weasel refuses a workflow named like a command: the project must still load."""
    from weasel.util import load_project_config

    project = load_project_config(ROOT)
    assert "distill" in {c["name"] for c in project["commands"]}
    assert project["workflows"]["all-distill"][-1] == "distill"
    assert project["workflows"]["all-distill"][:-1] == project["workflows"]["all"]


def test_the_benchmark_runs_gold_hard_and_each_soft_size():
    from support.paths import load_benchmark

    runs = load_benchmark("distill/benchmark_distill.py").conditions("0,25000,all")
    assert [(r["name"], r["mode"], r["unlabelled"]) for r in runs] == [
        ("gold", "gold", 0),
        ("hard", "hard", None),
        ("soft-0", "soft", 0),
        ("soft-25000", "soft", 25000),
        ("soft-all", "soft", None),
    ]


def _schedule(jobs: int, label_threads: int, threads: int, cores: int, monkeypatch):
    """run_all with steps that record when they start and end (threads of their own, as the real ones are)."""
    import threading
    import time

    from support.paths import load_benchmark

    bench = load_benchmark("distill/benchmark_distill.py")
    monkeypatch.setattr(bench.os, "cpu_count", lambda: cores)
    events, lock = [], threading.Lock()

    def step(name, result):
        with lock:
            events.append(("start", name))
        time.sleep(0.05)
        with lock:
            events.append(("end", name))
        return result

    def student(run, labelling):
        if labelling is not None:
            assert labelling.result() == {"docs": 3}
        return step(run["name"], run["name"])

    label = lambda: step("label", {"docs": 3})  # noqa: E731
    runs = bench.conditions("0,all")
    labelling, results = bench.run_all(runs, student, label, label_threads, jobs, threads)
    assert labelling == {"docs": 3}
    assert results == ["gold", "hard", "soft-0", "soft-all"]
    return events


def test_the_benchmarks_runs_that_learn_from_the_teacher_start_after_its_labelling(monkeypatch):
    events = _schedule(jobs=2, label_threads=1, threads=1, cores=2, monkeypatch=monkeypatch)
    labelled = events.index(("end", "label"))
    for name in ("hard", "soft-0", "soft-all"):
        assert events.index(("start", name)) > labelled
    # the gold-only student needs no labels: it trains while the teacher labels
    assert events.index(("start", "gold")) < labelled
    running, most = 0, 0
    for kind, _ in events:
        running += 1 if kind == "start" else -1
        most = max(most, running)
    assert most == 2


def test_the_benchmarks_labelling_runs_alone_when_its_threads_and_a_students_exceed_the_cores(monkeypatch):
    events = _schedule(jobs=2, label_threads=2, threads=1, cores=2, monkeypatch=monkeypatch)
    assert events[:2] == [("start", "label"), ("end", "label")]


def test_the_speed_rounds_alternate_teacher_and_student_and_an_older_record_says_one_pass(sample, monkeypatch):
    from iob_ner.distill import compare as compare_module

    nlps = {"teacher": spacy.load(sample / "teacher"), "student": spacy.load(sample / "teacher")}
    gold = list(read_docs(sample / "test.spacy", spacy.blank("en").vocab))
    order = []
    predict = compare_module.predict_gold

    def recorded(nlp, texts, batch_size):
        order.append(next(name for name, candidate in nlps.items() if candidate is nlp))
        return predict(nlp, texts, batch_size=batch_size)

    monkeypatch.setattr(compare_module, "predict_gold", recorded)
    seconds = compare_module.timed_rounds(nlps, gold, 8, 3)
    assert order == ["teacher", "student"] * 3 and all(len(s) == 3 and min(s) > 0 for s in seconds.values())
    old = {"speedup": 12.34}
    assert (
        compare_module.speedup_text(old) == "12.3x as fast (one pass of each: rerun distill for a median over rounds)"
    )
