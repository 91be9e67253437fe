"""crossval and data-curve: folds and subsets made right, errors in one sentence, and a real run of each
on the sample (few steps) whose reports agree with their per-run figures."""

import json
import statistics
from collections import Counter

import matplotlib.image
import pytest

from iob_ner.corpus.splits import SplitError, missing_labels
from iob_ner.experiments.crossval import make_folds, summarise
from iob_ner.experiments.data_curve import nested_subsets, reading


def labels(n, names="ABC"):
    return [Counter({names[i % len(names)]: 1}) for i in range(n)]


def test_folds_need_at_least_as_many_documents_and_two_folds():
    with pytest.raises(
        SplitError, match="5 folds need at least 5 documents, and train \\+ dev hold 3: lower --vars.folds"
    ):
        make_folds(labels(3), 5, 0)
    with pytest.raises(SplitError, match="folds must be 2 or more, not 1"):
        make_folds(labels(30), 1, 0)


def test_each_label_with_k_documents_is_in_every_fold():
    docs = labels(23) + [Counter({"RARE": 1}) for _ in range(5)]
    folds = make_folds(docs, 5, 3)
    assert missing_labels(docs, folds, 5) == [] and set(folds) == set(range(5))


def test_data_curve_subsets_are_nested_stratified_and_end_with_every_document():
    docs = labels(40)
    subsets = nested_subsets(docs, 0)
    assert [len(s) for s in subsets] == [10, 20, 30, 40]
    for small, big in zip(subsets, subsets[1:]):
        assert set(small) < set(big)
    assert all({next(iter(docs[i])) for i in subset} == set("ABC") for subset in subsets)
    with pytest.raises(SplitError, match="needs at least 4 training documents, not 3"):
        nested_subsets(labels(3), 0)


@pytest.mark.parametrize(
    "fs,start",
    [
        ([0.50, 0.60, 0.70, 0.75], "still rising (+0.050 dev F from 75 % to 100 %)"),
        ([0.70, 0.80, 0.805, 0.81], "flat since 75 %"),
        ([0.80, 0.805, 0.80, 0.802], "flat since 25 %"),
        ([0.40, 0.37, 0.333, 0.333], "not rising: dev F was higher with 25 % of the documents (0.400 against 0.333)"),
    ],
)
def test_the_curve_reading(fs, start):
    assert reading(fs).startswith(start)


def test_summary_is_the_mean_and_sample_sd_of_the_folds():
    results = [{"typed_f": f, "untyped_f": f + 0.1, "per_label_f": {"A": f, "B": None}} for f in (0.5, 0.7, 0.6)]
    summary = summarise(results)
    assert summary["typed_f"]["mean"] == pytest.approx(0.6) and summary["typed_f"]["sd"] == pytest.approx(0.1)
    assert summary["per_label_f"]["A"]["n"] == 3 and summary["per_label_f"]["B"] is None


@pytest.mark.slow
def test_crossval_and_data_curve_run_on_the_sample(tmp_path):
    from support.project import copy_project, run_project

    from iob_ner.util.runtime import resolve_transformer
    from iob_ner.util.tiny import make_tiny_bert

    project = copy_project(tmp_path / "p")
    run_project(project, "convert")
    run_project(project, "create-config")
    # the tiny random BERT: the folds, shares, reports and plots are tested here, not the learning
    tiny = make_tiny_bert(resolve_transformer("embedded"), tmp_path / "tiny-bert")
    steps = ["--vars.max_steps", "6", "--vars.eval_frequency", "3", "--vars.transformer", str(tiny)]
    output = run_project(project, "crossval", ".", "--vars.folds", "3", *steps)
    record = json.loads((project / "training" / "crossval" / "crossval.json").read_text())
    assert [r["fold"] for r in record["results"]] == [0, 1, 2]
    assert sum(r["documents"] for r in record["results"]) == record["documents"] == 50  # 42 train + 8 dev
    assert record["summary"]["typed_f"]["mean"] == pytest.approx(
        statistics.fmean(r["typed_f"] for r in record["results"])
    )
    report = (project / "training" / "crossval" / "report.md").read_text()
    assert (
        f"**Typed F {record['summary']['typed_f']['mean']:.3f} ± {record['summary']['typed_f']['sd']:.3f}**" in report
    )
    assert "3 folds, 50 documents" in " ".join(output.split())
    output = run_project(project, "data-curve", ".", *steps)
    curve = json.loads((project / "training" / "data-curve" / "data-curve.json").read_text())
    assert [p["share"] for p in curve["points"]] == [25, 50, 75, 100] and curve["points"][-1]["documents"] == 42
    assert [p["steps"] for p in curve["points"]][-1] == 6
    assert (project / "training" / "data-curve" / "report.md").read_text().count(curve["reading"]) == 1
    for png in ("crossval/crossval.png", "data-curve/data-curve.png"):
        image = matplotlib.image.imread(project / "training" / png)
        assert image.shape[0] > 100 and image.std() > 0
    assert not list((project / "training" / "crossval" / "runs").glob("*/model-best"))  # models not kept
