"""predict's Ray engine (iob_ner.inference.ray_engine) on a local Ray of 2 CPUs: the same outputs as the local
engine, byte for byte, on 10,000 documents; an interrupted run resumed from its finished shards gives the
same outputs without recomputing them; bad documents are named, skipped and counted as predict does.

The pipeline is tests/support/pipelines.py's tiny token_ner on spaCy's CPU tok2vec, trained in seconds: it
finds entities (checked, so that equal outputs are not trivially equal) at thousands of documents a second.
Ray starts once for the module (ray.init in a fixture), as a caller that already runs Ray would.
"""

import json
import random
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the Ray engine's tests need Ray: pip install -r requirements-ray.txt")

from iob_ner.inference import predict  # noqa: E402
from iob_ner.inference.ray_engine.cluster import check_reachable  # noqa: E402
from iob_ner.inference.ray_engine.shards import ShardStore, shard_folder  # noqa: E402

WORDS = (
    "LiFePO4 ZnO TiO2 NiO CuO films grown by pulsed laser deposition we measured X-ray diffraction "
    "Raman spectroscopy sol-gel synthesis was studied the weather is nice today ."
).split()
DOCUMENTS = 10_000
SHARD = 1280  # 8 shards of 20 batches of 64, the last one short: one window of 2 actors x 4 shards


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from support.pipelines import trained_nlp

    nlp, _ = trained_nlp(60)
    path = tmp_path_factory.mktemp("ray-model") / "model"
    nlp.to_disk(path)
    return path


def synthetic_jsonl(path: Path, n: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with path.open("w", encoding="utf8") as out:
        for i in range(n):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 25)))
            out.write(json.dumps({"id": f"doc{i}", "text": text}) + "\n")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray-corpus")
    return synthetic_jsonl(folder / "in.jsonl", DOCUMENTS)


@pytest.fixture(scope="module")
def local_outputs(model, corpus, tmp_path_factory):
    """The local engine's outputs: the reference every Ray run must equal."""
    folder = tmp_path_factory.mktemp("ray-local")
    result = predict(model=model, source=corpus, output=folder / "out.jsonl", iob_output=folder / "out.tsv")
    return result, (folder / "out.jsonl").read_bytes(), (folder / "out.tsv").read_bytes()


def run_ray(model, source, folder: Path, **options) -> dict:
    return predict(
        model=model,
        source=source,
        output=folder / "out.jsonl",
        iob_output=folder / "out.tsv",
        engine="ray",
        actors=2,
        shard_size=SHARD,
        **options,
    )


def outputs(folder: Path):
    return (folder / "out.jsonl").read_bytes(), (folder / "out.tsv").read_bytes()


def test_ray_engine_writes_the_local_engines_outputs_byte_for_byte(local_ray, model, corpus, local_outputs, tmp_path):
    reference, jsonl, iob = local_outputs
    result = run_ray(model, corpus, tmp_path)
    assert outputs(tmp_path) == (jsonl, iob)
    assert result["documents"] == reference["documents"] == DOCUMENTS
    assert result["entities"] == reference["entities"] > DOCUMENTS  # real entities: equality is not vacuous
    assert any(e.get("score") for e in json.loads(jsonl.splitlines()[0])["entities"])
    assert result["shards"] == 8 and result["shards_computed"] == 8 and result["shards_reused"] == 0
    assert "2 CPU actor(s)" in result["device"]
    assert not shard_folder(tmp_path / "out.jsonl").exists()  # the shards are gone once whole


def test_an_interrupted_run_resumes_from_its_finished_shards(
    local_ray, model, corpus, local_outputs, tmp_path, monkeypatch
):
    _, jsonl, iob = local_outputs
    write = ShardStore.write

    def write_then_stop(self, shard, rows, problems):
        if self.written == 4:
            raise KeyboardInterrupt  # Ctrl-C after four shards are on disk
        write(self, shard, rows, problems)

    monkeypatch.setattr(ShardStore, "write", write_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_ray(model, corpus, tmp_path)
    monkeypatch.setattr(ShardStore, "write", write)
    assert not (tmp_path / "out.jsonl").exists()
    shards = shard_folder(tmp_path / "out.jsonl")
    finished = sorted(shards.glob("shard-*.done"))
    assert len(finished) == 4
    # One finished shard cut short as by a crash mid-write elsewhere: it must be recomputed, not trusted.
    data = finished[-1].with_suffix(".jsonl")
    data.write_bytes(data.read_bytes()[:100])
    result = run_ray(model, corpus, tmp_path)
    assert result["shards_reused"] == 3 and result["shards_computed"] == 5
    assert outputs(tmp_path) == (jsonl, iob)
    assert not shards.exists()


def test_shards_of_another_model_are_not_reused(local_ray, model, corpus, tmp_path, monkeypatch, capsys):
    small = synthetic_jsonl(tmp_path / "small.jsonl", 300, seed=1)
    monkeypatch.setattr(ShardStore, "close", lambda self: None)  # keep the shards
    options = dict(shard_size=128)
    first = predict(model=model, source=small, output=tmp_path / "out.jsonl", engine="ray", actors=1, **options)
    assert first["shards_computed"] == first["shards"] == 3
    other = tmp_path / "other-model"
    import shutil

    shutil.copytree(model, other)
    (other / "meta.json").write_text((other / "meta.json").read_text().replace('"version"', '"version" ', 1))
    changed = predict(model=other, source=small, output=tmp_path / "out.jsonl", engine="ray", actors=1, **options)
    assert changed["shards_reused"] == 0 and changed["shards_computed"] == 3
    assert "holds shards of another input, pipeline or setting: starting over" in capsys.readouterr().out


def test_a_long_text_streams_through_the_actors_as_through_the_local_engine(local_ray, model, tmp_path):
    # 100 short documents and one of ~30,000 characters in the second batch, in passes of 2,000 characters:
    # the actors cut it into the same pieces as the local engine, byte for byte
    source = synthetic_jsonl(tmp_path / "in.jsonl", 100)
    rng = random.Random(1)
    long_text = " . ".join(" ".join(rng.choice(WORDS) for _ in range(20)) for _ in range(200))
    lines = source.read_text(encoding="utf8").splitlines()
    lines.insert(70, json.dumps({"id": "long", "text": long_text}))
    source.write_text("\n".join(lines) + "\n", encoding="utf8")
    local = predict(
        model=model, source=source, output=tmp_path / "out.jsonl", iob_output=tmp_path / "out.tsv", batch_chars=2000
    )
    (tmp_path / "ray").mkdir()
    result = run_ray(model, source, tmp_path / "ray", batch_chars=2000)
    assert outputs(tmp_path / "ray") == outputs(tmp_path)
    assert result["documents"] == local["documents"] == 101 and local["entities"] > 400


def test_bad_documents_are_named_skipped_and_counted_as_predict_does(local_ray, model, tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    good = [
        json.dumps({"id": f"g{i}", "text": f"ZnO films grown by laser deposition {i}"}).encode() for i in range(300)
    ]
    lines = (
        good[:100]
        + [
            b'{"text": broken',
            b'{"id": "x", "text": "caf\xe9 ZnO"}',
            b'{"id": "e", "text": "  "}',
            b'{"title": "no text"}',
        ]
        + good[100:]
    )
    source.write_bytes(b"\n".join(lines) + b"\n")
    local = predict(model=model, source=source, output=tmp_path / "local.jsonl")
    capsys.readouterr()
    # One actor, so a window of 4 shards of 64: the 300 documents take two windows (two actor pools).
    result = predict(model=model, source=source, output=tmp_path / "ray.jsonl", engine="ray", actors=1, shard_size=64)
    assert result["shards"] == 5
    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()
    assert result["documents"] == 300 and result["skipped"] == local["skipped"] == 4
    assert (
        result["skipped_reasons"]
        == local["skipped_reasons"]
        == {"not JSON": 1, "not UTF-8": 1, "empty": 1, 'no "text"': 1}
    )
    out = " ".join(capsys.readouterr().out.split())
    assert f"{source}:101: skipped, not JSON" in out and f"{source}:102: skipped, not UTF-8" in out


def test_parquet_input_gives_the_jsonl_inputs_records_and_parquet_output_holds_them(model, tmp_path):
    """Parquet in and out are predict's reader and writer, which the Ray engine shares: tested locally (fast)."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    source = synthetic_jsonl(tmp_path / "in.jsonl", 500, seed=2)
    rows = [json.loads(line) for line in source.read_text().splitlines()]
    rows.insert(7, {"id": "blank", "text": " "})
    rows.insert(9, {"id": "none", "text": None})
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in.parquet", row_group_size=128)
    local = predict(model=model, source=source, output=tmp_path / "local.jsonl")
    result = predict(model=model, source=tmp_path / "in.parquet", output=tmp_path / "out.parquet")
    assert result["skipped_reasons"] == {"empty": 1, 'no "text"': 1} and result["documents"] == 500
    table = pq.read_table(tmp_path / "out.parquet").to_pylist()
    want = [json.loads(line) for line in (tmp_path / "local.jsonl").read_text().splitlines()]
    assert len(table) == local["documents"] == 500
    for got, record in zip(table, want):
        assert got["id"] == record["id"] and got["text"] == record["text"]
        assert [{k: v for k, v in e.items() if v is not None} for e in got["entities"]] == record["entities"]


@pytest.mark.parametrize(
    "address, says",
    [
        ("127.0.0.1:1", "cannot reach Ray at 127.0.0.1:1"),
        ("ray://127.0.0.1:1", "cannot reach Ray at ray://127.0.0.1:1"),
        ("head-node", "is not HOST:PORT"),
    ],
)
def test_an_address_nothing_answers_on_fails_at_once_instead_of_retrying_for_minutes(address, says):
    from iob_ner.util.runtime import SetupError

    with pytest.raises(SetupError, match=says.replace("/", "/").replace(".", r"\.")):
        check_reachable(address, timeout_s=2)


def test_ray_engine_skips_a_deeply_nested_line_and_leaves_no_shards_when_nothing_was_read(local_ray, model, tmp_path):
    """Issue 21, causes 6 and 9: a RecursionError once ended the run and left the shard folder behind."""
    from iob_ner.inference.inputs import NothingRead

    source = tmp_path / "in.jsonl"
    nested = '{"text": "ZnO", "deep": ' + "[" * 100_000 + "]" * 100_000 + "}"
    source.write_text('{"text": "ZnO films"}\n' + nested + "\n", encoding="utf8")
    result = run_ray(model, source, tmp_path)
    assert result["documents"] == 1 and result["skipped_reasons"] == {"not JSON": 1}
    assert not shard_folder(tmp_path / "out.jsonl").exists()
    source.write_text(nested + "\n", encoding="utf8")
    before = outputs(tmp_path)
    with pytest.raises(NothingRead, match="no document of .* could be read .1 not JSON"):
        run_ray(model, source, tmp_path)
    assert outputs(tmp_path) == before and not shard_folder(tmp_path / "out.jsonl").exists()
