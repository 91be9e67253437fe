"""The real corpora beside the project (../shared/data) convert with their published entity counts."""

import pytest
from support.paths import SHARED_DATA

from iob_ner.corpus.convert import convert_iob

pytestmark = pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is not beside this checkout")


@pytest.mark.parametrize("split,entities", [("train", 20386), ("dev", 2342), ("test", 2502)])
def test_matscholar_keeps_every_entity(tmp_path, split, entities):
    report = convert_iob(SHARED_DATA / "matscholar-raw" / f"{split}.txt", tmp_path / split, write_json=False)
    assert sum(report.entities.values()) == entities
    assert report.separator == "whitespace" and report.columns == 2


def test_matscholar_repairs_are_reported():
    from iob_ner.iob.reader import read_iob
    from iob_ner.iob.report import ReadReport

    train, dev = ReadReport(path="train"), ReadReport(path="dev")
    list(read_iob(SHARED_DATA / "matscholar-raw" / "train.txt", report=train))
    list(read_iob(SHARED_DATA / "matscholar-raw" / "dev.txt", report=dev))
    assert train.repairs["empty_token"]["count"] == 3
    assert dev.repairs["empty_tag"]["count"] == 32
    assert dev.repairs["entity_starts_inside"]["count"] == 1


@pytest.mark.parametrize(
    "split,sentences,tokens,entities",
    [("train", 5424, 135701, 5134), ("dev", 923, 23969, 787), ("test", 940, 24497, 960)],
)
def test_ncbi_disease_exact_counts(tmp_path, split, sentences, tokens, entities):
    report = convert_iob(SHARED_DATA / "ncbi-disease" / f"{split}.tsv", tmp_path / split)
    assert (report.sentences, report.tokens, dict(report.entities)) == (sentences, tokens, {"Disease": entities})
    assert report.repairs == {}
