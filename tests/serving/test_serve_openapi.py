"""serve's self-description, on the real server (tests/support/serving.py's): /openapi.json names each operation,
tags it and documents the answers' shapes, and the example Swagger UI's "Try it out" sends answers 200;
/info has an example text and the label descriptions of a labels.json (none without one, one sentence naming
a broken one); /health and /info give memory in bytes and for people."""

import json

import pytest
import spacy

pytest.importorskip("fastapi_offline", reason="serving is optional: pip install -r requirements-serve.txt")
httpx = pytest.importorskip("httpx", reason="serving is optional: pip install -r requirements-serve.txt")

from support.paths import ROOT  # noqa: E402
from support.pipelines import make_pipeline  # noqa: E402
from support.serving import SMALL, serving  # noqa: E402

from iob_ner.serving.app import EXAMPLE_TEXT, human_bytes  # noqa: E402
from iob_ner.serving.server import example_text, label_descriptions, pipeline_info  # noqa: E402
from iob_ner.util.errors import SetupError  # noqa: E402


def resolve(spec: dict, schema: dict) -> dict:
    ref = schema.get("$ref", "")
    return resolve(spec, spec["components"]["schemas"][ref.rsplit("/", 1)[1]]) if ref else schema


def test_the_documented_example_of_post_ner_answers_200_with_the_documented_shape(scored_model):
    nlp = spacy.load(scored_model)
    with serving(nlp, SMALL) as url:
        spec = httpx.get(f"{url}/openapi.json").json()
        operations = {(path, method): op for path, ops in spec["paths"].items() for method, op in ops.items()}
        ner = operations[("/ner", "post")]
        assert ner["operationId"] == "find_entities" and ner["tags"] == ["entities"] and ner["summary"]
        assert operations[("/health", "get")]["operationId"] == "health"
        assert operations[("/info", "get")]["operationId"] == "info"
        for path, fields in (("/info", {"labels", "descriptions", "example", "limits"}), ("/health", {"rss_mb"})):
            schema = operations[(path, "get")]["responses"]["200"]["content"]["application/json"]["schema"]
            assert fields <= set(resolve(spec, schema)["properties"]), path
        info = httpx.get(f"{url}/info").json()
        assert set(resolve(spec, {"$ref": "#/components/schemas/Info"})["properties"]) == set(info)
        assert all(op.get("tags") and op.get("summary") for op in operations.values()), operations
        content = ner["requestBody"]["content"]["application/json"]
        examples = [e["value"] for e in content["examples"].values()] + content["schema"]["examples"]
        assert examples and all("string" not in json.dumps(e) for e in examples)
        answer_schema = resolve(spec, ner["responses"]["200"]["content"]["application/json"]["schema"])
        assert {"entities", "results"} <= set(answer_schema["properties"])  # not {"additionalProp1": {}}
        entity = resolve(spec, answer_schema["properties"]["entities"]["anyOf"][0]["items"])
        assert {"text", "label", "start", "end", "score"} <= set(entity["properties"])
        for example in examples:  # as Swagger UI's "Try it out" sends it
            answer = httpx.post(f"{url}/ner", json=example, timeout=30)
            assert answer.status_code == 200, (example, answer.text)
            body = answer.json()
            assert set(body) == ({"entities"} if "text" in example else {"results"})
        assert resolve(spec, ner["responses"]["413"]["content"]["application/json"]["schema"])["properties"] == {
            "detail": {"title": "Detail", "type": "string"}
        }


def test_in_swagger_ui_try_it_out_then_execute_answers_200(tmp_path):
    """What the careless user did at /docs, in a headless Chromium: open POST /ner, "Try it out", "Execute"."""
    from support.browser import Browser, find_browser

    if find_browser() is None:
        pytest.skip("no Chromium: apt-get install chromium")
    browser = Browser(tmp_path / "profile")
    op = "#operations-entities-find_entities"
    try:
        with serving(make_pipeline(False)) as url:
            browser.open(f"{url}/docs", "document.querySelectorAll('.opblock').length > 0")
            titles = browser.js("[...document.querySelectorAll('.opblock-tag')].map(e => e.textContent.trim())")
            assert titles == ["entities", "service"]  # not "default"
            browser.click(f"{op} .opblock-summary-control")
            browser.wait_for(f"!!document.querySelector('{op} .try-out__btn')")
            browser.click(f"{op} .try-out__btn")
            browser.wait_for(f"!!document.querySelector('{op} textarea.body-param__text')")
            sent = json.loads(browser.js(f"document.querySelector('{op} textarea.body-param__text').value"))
            browser.click(f"{op} .execute")
            status = f"document.querySelector('{op} .live-responses-table tbody .response-col_status')"
            browser.wait_for(f"!!{status}")
            assert sent == {"text": EXAMPLE_TEXT} and browser.js(f"{status}.textContent.trim()") == "200"
    finally:
        browser.close()


def test_health_and_info_give_memory_in_bytes_and_for_people():
    with serving(make_pipeline(False)) as url:
        health = httpx.get(f"{url}/health").json()
        info = httpx.get(f"{url}/info").json()
    assert health["rss_bytes"] > 1_000_000 and health["rss_mb"] == round(health["rss_bytes"] / 1e6, 1)
    assert health["rss"].endswith(" MB") or health["rss"].endswith(" GB")
    assert info["limits"]["max_body_bytes"] == SMALL.max_body_bytes and info["limits"]["max_body"] == "2.0 kB"
    assert [human_bytes(n) for n in (0, 999, 2_000, 812_400_000, 1_000_000, 3_200_000_000)] == [
        "0 B",
        "999 B",
        "2.0 kB",
        "812 MB",
        "1.0 MB",
        "3.2 GB",
    ]


def test_info_has_an_example_text_and_the_label_descriptions_of_labels_json(tmp_path):
    from spacy.tokens import DocBin

    nlp = make_pipeline(False)
    labels = tmp_path / "labels.json"
    assert label_descriptions(labels) == {} and label_descriptions(None) == {}  # no file: none, no error
    labels.write_text(json.dumps({"MAT": "A material: compound, element or alloy", "NOT_A_LABEL": "left out"}))
    corpus = tmp_path / "test.spacy"
    long_doc, short_doc = nlp.make_doc("ZnO " * 100), nlp.make_doc("TiO2 and ZnO films were annealed.")
    short_doc.ents = [short_doc.char_span(0, 4, "MAT"), short_doc.char_span(9, 12, "MAT")]
    long_doc.ents = [long_doc.char_span(0, 3, "MAT")]
    DocBin(docs=[long_doc, nlp.make_doc("No entity in this text at all."), short_doc]).to_disk(corpus)
    assert example_text(nlp, corpus) == "TiO2 and ZnO films were annealed."  # short, with entities
    assert example_text(nlp, tmp_path / "missing.spacy") == EXAMPLE_TEXT
    info = pipeline_info(nlp, "test", "CPU", label_descriptions(labels), example_text(nlp, corpus))
    assert info["example"] == "TiO2 and ZnO films were annealed."
    assert info["labels"] == ["MAT", "PRO"]
    assert info["descriptions"] == {"MAT": "A material: compound, element or alloy"}  # only the pipeline's labels
    assert pipeline_info(nlp, "test", "CPU")["descriptions"] == {}


@pytest.mark.parametrize(
    "content, says",
    [("{not json", "is not a JSON object of label descriptions"), ('["MAT"]', "must be one JSON object")],
)
def test_a_broken_labels_json_is_one_sentence_naming_the_file(tmp_path, content, says):
    labels = tmp_path / "labels.json"
    labels.write_text(content)
    with pytest.raises(SetupError) as err:
        label_descriptions(labels)
    assert str(labels) in str(err.value) and says in str(err.value) and "\n" not in str(err.value)


def test_serve_names_a_broken_labels_json_in_one_line_before_loading_the_model(tmp_path):
    import subprocess
    import sys

    labels = tmp_path / "labels.json"
    labels.write_text("{broken")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "serve.py"), str(tmp_path / "no-model"), "--labels", str(labels)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    said = " ".join(result.stdout.split())
    assert result.returncode == 1 and str(labels) in said and "Traceback" not in result.stderr, (said, result.stderr)


def test_serve_command_reads_labels_json_and_the_example_corpus(scored_model, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from spacy.tokens import DocBin

    from iob_ner.serving.loadtest import free_port

    nlp = spacy.load(scored_model)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"MAT": "A material", "Smt": "a typo: no such label"}))
    doc = nlp.make_doc("NiO was studied by Raman spectroscopy")
    doc.ents = [doc.char_span(0, 3, "MAT")]
    DocBin(docs=[doc]).to_disk(tmp_path / "test.spacy")
    port = free_port()
    command = [sys.executable, str(ROOT / "scripts" / "serve.py"), str(scored_model), "--port", str(port)]
    command += ["--gpu-id", "cpu", "--labels", str(labels), "--example-from", str(tmp_path / "test.spacy")]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    info = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and server.poll() is None:
            try:
                info = httpx.get(f"http://127.0.0.1:{port}/info", timeout=1).json()
                break
            except httpx.TransportError:
                time.sleep(0.2)
    finally:
        server.send_signal(signal.SIGINT)
        said = " ".join(server.communicate(timeout=60)[0].split())
    assert info is not None, said
    assert info["descriptions"] == {"MAT": "A material"} and info["example"] == doc.text
    assert f"{labels} describes label(s) the pipeline does not have, left out: Smt" in said, said
