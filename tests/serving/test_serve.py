"""serve: the real server on a free loopback port. Entities equal nlp(text).ents, every limit and malformed
body gets its 4xx and the server goes on, micro-batching batches, timeouts answer 503, Ctrl-C finishes
the queued requests. Needs requirements-serve.txt (CI installs it)."""

import asyncio
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import spacy
from spacy.language import Language

pytest.importorskip("fastapi", reason="serving is optional: pip install -r requirements-serve.txt")
pytest.importorskip("uvicorn", reason="serving is optional: pip install -r requirements-serve.txt")
pytest.importorskip("fastapi_offline", reason="serving is optional: pip install -r requirements-serve.txt")
httpx = pytest.importorskip("httpx", reason="serving is optional: pip install -r requirements-serve.txt")

from support.paths import ROOT  # noqa: E402
from support.pipelines import SCORED_TEXTS, make_pipeline, scored_entities  # noqa: E402
from support.serving import post, serving  # noqa: E402

from iob_ner.serving.app import Batching, Limits  # noqa: E402
from iob_ner.serving.loadtest import free_port, malformed_requests, request_mix  # noqa: E402
from iob_ner.serving.server import pipeline_runner  # noqa: E402


@Language.component("slow_on_marker")
def slow_on_marker(doc):
    """SLOW: a text that keeps the pipeline busy for a second."""
    if "SLOW" in doc.text:
        time.sleep(1.0)
    return doc


def test_entities_and_scores_equal_the_pipelines_own(scored_model):
    nlp = spacy.load(scored_model)
    with serving(nlp, Limits()) as url:
        for text in SCORED_TEXTS:
            got = post(url, {"text": text}).json()["entities"]
            doc = nlp(text)
            assert [(e["start"], e["end"], e["label"]) for e in got] == [
                (e.start_char, e.end_char, e.label_) for e in doc.ents
            ]
            assert [e["score"] for e in got] == [round(s, 4) for *_, s in scored_entities(nlp, text)]
            assert all(text[e["start"] : e["end"]] == e["text"] for e in got)
        many = post(url, {"texts": SCORED_TEXTS}).json()["results"]
        assert [r["entities"] for r in many] == [post(url, {"text": t}).json()["entities"] for t in SCORED_TEXTS]
        assert sum(len(r["entities"]) for r in many) > 0  # the comparison is not between empty lists
        info = httpx.get(f"{url}/info").json()
        assert info["labels"] == sorted(nlp.get_pipe("ner").labels) and info["scores"] is True
        assert info["score_samples"] == 0
        assert httpx.get(f"{url}/docs").status_code == 200
        assert "/ner" in httpx.get(f"{url}/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    "body, status, says",
    [
        (b'{"text": "unclosed', 422, "not JSON"),
        (b'{"text": "caf\xe9"}', 400, "not UTF-8"),
        ({"text": 42}, 422, "valid string"),
        ({"texts": "one string"}, 422, "valid list"),
        ({"txt": "typo"}, 422, "Extra inputs"),
        ({"text": "a", "texts": ["b"]}, 422, "either 'text'"),
        ({}, 422, "either 'text'"),
        ([1, 2], 422, "dictionary"),
        (b"", 422, "not JSON"),
        ({"text": "word " * 41}, 413, "the limit is 200"),
        ({"texts": ["a", "b", "c", "d"]}, 413, "4 texts"),
        (b'{"text": "' + b"x" * 3_000 + b'"}', 413, "limit is 2,000"),
        (b'{"text": "ZnO \\ud800 films"}', 422, "unpaired surrogate \\ud800 at character 4"),
        (b'{"texts": ["ok", "\\udfff"]}', 422, "text 1 holds an unpaired surrogate"),
    ],
)
def test_each_limit_and_malformed_body_gets_its_4xx_and_the_server_goes_on(body, status, says):
    with serving(make_pipeline(False)) as url:
        answer = post(url, body)
        assert answer.status_code == status and says in answer.json()["detail"], answer.text
        assert post(url, {"text": "ZnO by sputtering"}).json()["entities"][0]["label"] == "MAT"


def test_a_chunked_body_over_the_limit_is_refused_without_content_length():
    def chunks():
        for _ in range(10):
            yield b"x" * 500

    with serving(make_pipeline(False)) as url:
        answer = httpx.post(f"{url}/ner", content=chunks(), timeout=30)
        assert answer.status_code == 413 and "exceeds the limit of 2,000 bytes" in answer.json()["detail"]
        assert post(url, {"text": "NiO"}).status_code == 200


def test_a_text_the_pipeline_fails_on_fails_only_its_own_request():
    with serving(make_pipeline(True), batching=Batching(max_batch_size=8, max_wait_ms=200)) as url:

        async def both():
            async with httpx.AsyncClient(timeout=30) as client:
                return await asyncio.gather(
                    client.post(f"{url}/ner", json={"text": "BOOM ZnO"}),
                    client.post(f"{url}/ner", json={"texts": ["ZnO", "NiO by sputtering"]}),
                )

        failed, fine = asyncio.run(both())
        assert failed.status_code == 500 and "BOOM" in failed.json()["detail"]
        assert [[e["text"] for e in r["entities"]] for r in fine.json()["results"]] == [["ZnO"], ["NiO", "sputtering"]]
        assert post(url, {"text": "ZnO"}).status_code == 200


def test_concurrent_requests_run_in_batches_with_the_same_answers():
    texts = [f"sample {i} of ZnO by sputtering on NiO" for i in range(24)]
    with serving(make_pipeline(False), Limits(), Batching(max_batch_size=8, max_wait_ms=300)) as url:

        async def all_at_once():
            async with httpx.AsyncClient(timeout=30) as client:
                return await asyncio.gather(*(client.post(f"{url}/ner", json={"text": t}) for t in texts))

        answers = asyncio.run(all_at_once())
        health = httpx.get(f"{url}/health").json()
    nlp = make_pipeline(False)
    assert [a.json()["entities"] for a in answers] == [
        [{"text": e.text, "label": e.label_, "start": e.start_char, "end": e.end_char} for e in nlp(t).ents]
        for t in texts
    ]
    # batched, not one call each (at least two texts a call on average, even on a loaded machine)
    assert health["texts"] == 24 and health["batches"] <= 12, health


def test_a_request_that_waits_too_long_gets_503_and_the_server_goes_on():
    nlp = make_pipeline(False)
    nlp.add_pipe("slow_on_marker")
    with serving(nlp, Limits(timeout_s=0.3), Batching(max_batch_size=1)) as url:
        assert post(url, {"text": "SLOW ZnO"}).status_code == 503
        time.sleep(1.0)
        assert post(url, {"text": "ZnO"}).json()["entities"][0]["text"] == "ZnO"


def test_a_full_queue_answers_503_at_once():
    nlp = make_pipeline(False)
    nlp.add_pipe("slow_on_marker")
    with serving(nlp, Limits(max_queue=2, max_texts=3), Batching(max_batch_size=1)) as url:

        async def flood():
            async with httpx.AsyncClient(timeout=30) as client:
                first = asyncio.ensure_future(client.post(f"{url}/ner", json={"text": "SLOW"}))
                await asyncio.sleep(0.3)  # the worker is busy with SLOW; the queue is empty
                return await client.post(f"{url}/ner", json={"texts": ["a", "b", "c"]}), await first

        refused, slow = asyncio.run(flood())
        assert refused.status_code == 503 and "queue is full" in refused.json()["detail"]
        assert refused.headers["retry-after"] == "1" and slow.status_code == 200


def test_new_words_do_not_grow_the_vocab(scored_model):
    """Each batch runs in nlp.memory_zone(): strings that requests bring are freed after it."""
    nlp = spacy.load(scored_model)
    run = pipeline_runner(nlp)
    run(["warm up ZnO"])
    before = len(nlp.vocab.strings)
    for i in range(50):
        run([f"unseenword{i}x grown by method{i}y"])
    assert len(nlp.vocab.strings) == before


def test_serve_command_finishes_queued_requests_on_ctrl_c(scored_model):
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "scripts" / "serve.py"),
            str(scored_model),
            "--port",
            str(port),
            "--gpu-id",
            "cpu",
            "--max-wait-ms",
            "300",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)

        async def then_ctrl_c():
            async with httpx.AsyncClient(timeout=30) as client:
                sent = [asyncio.ensure_future(client.post(f"{url}/ner", json={"text": t})) for t in SCORED_TEXTS]
                await asyncio.sleep(0.1)  # in the queue: the batch waits up to 300 ms for more
                server.send_signal(signal.SIGINT)
                return await asyncio.gather(*sent)

        answers = asyncio.run(then_ctrl_c())
        output = server.communicate(timeout=60)[0]
    finally:
        server.kill()
    assert [a.status_code for a in answers] == [200] * len(SCORED_TEXTS)
    assert server.returncode == 0 and "Stopped: the queued requests were answered" in output, output


SLOW_TEXT = "ZnO films grown by pulsed laser deposition. " * 500  # about half a second on a CPU


def wait_until_answering(url: str, process: subprocess.Popen, wait_s: float = 60) -> None:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("the server did not answer /health")


def slow_requests(url: str, count: int):
    """`count` slow requests in threads, returned once the server has received them all (one running, the
    others queued, with batches of 1): their status codes (or errors) and the threads."""
    answers = []

    def ask(i):
        try:
            answers.append(httpx.post(f"{url}/ner", json={"text": f"{i} {SLOW_TEXT}"}, timeout=60).status_code)
        except httpx.TransportError as err:
            answers.append(repr(err))

    clients = [threading.Thread(target=ask, args=(i,)) for i in range(count)]
    for client in clients:
        client.start()
    deadline = time.monotonic() + 20
    while httpx.get(f"{url}/health", timeout=5).json()["requests"] < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return answers, clients


def test_ctrl_c_on_spacy_project_run_serve_finishes_the_queued_requests(scored_model, tmp_path):
    """A terminal's Ctrl-C reaches spaCy's process and serve's together, and weasel kills its command 0.25 s
    after: the server still answers every queued request, says so, and leaves no process on the port."""
    import os
    import socket

    project = tmp_path / "project"
    project.mkdir()
    (project / "project.yml").write_text((ROOT / "project.yml").read_text(encoding="utf8"), encoding="utf8")
    for name in ("scripts", "src"):
        (project / name).symlink_to(ROOT / name)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model-best").symlink_to(scored_model)
    port = free_port()
    spacy_run = subprocess.Popen(
        [sys.executable, "-m", "spacy", "project", "run", "serve", "."]
        + ["--vars.model_dir", str(tmp_path / "model"), "--vars.serve_port", str(port)]
        + ["--vars.serve_max_batch_size", "1", "--vars.gpu_id", "cpu"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(url, spacy_run)
        answers, clients = slow_requests(url, 6)
        os.killpg(spacy_run.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        for client in clients:
            client.join(timeout=60)
        output = spacy_run.communicate(timeout=60)[0]  # to the end: every process that writes to it ended
    finally:
        if spacy_run.poll() is None:
            os.killpg(spacy_run.pid, signal.SIGKILL)
    assert answers == [200] * 6, output[-3000:]
    assert "Stopped: the queued requests were answered" in output, output[-3000:]
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):  # no server left behind on the port
        probe.connect(("127.0.0.1", port))


def test_a_server_whose_command_is_killed_finishes_the_queued_requests_and_leaves_no_process(scored_model):
    """kill -9 of the command (or a closed terminal): the server it started in a session of its own answers
    what is queued, says so, and ends; nothing is left listening."""
    import socket

    port = free_port()
    command = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "serve.py"), str(scored_model), "--port", str(port)]
        + ["--gpu-id", "cpu", "--max-batch-size", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(url, command)
        answers, clients = slow_requests(url, 4)
        command.kill()
        for client in clients:
            client.join(timeout=60)
        output = command.communicate(timeout=60)[0]  # to the end: the server writes to it too
    finally:
        command.kill()
    assert answers == [200] * 4, output[-3000:]
    said = " ".join(output.split())
    assert "finishes the queued requests and stops" in said and "Stopped: the queued requests were answered" in said
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", port))


def test_serve_command_names_a_missing_model_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "serve.py"), str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    said = " ".join(result.stdout.split())  # wasabi wraps long lines
    assert result.returncode == 1 and "is neither a pipeline folder nor an installed pipeline package" in said
    assert "Traceback" not in result.stdout + result.stderr


def test_request_mix_holds_every_malformed_kind_and_the_good_texts():
    limits = {"max_chars": 200, "max_texts": 3, "max_body_bytes": 2_000}
    mix = request_mix(["a b", "c"], good=10, bad=16, limits=limits)
    kinds = {r.kind for r in mix}
    assert len(mix) == 26 and kinds == {"good"} | {r.kind for r in malformed_requests(**limits)}
    assert sum(r.words for r in mix) == 5 * 2 + 5 * 1


def test_a_body_shorter_than_its_content_length_gets_408_not_a_hung_connection():
    import socket

    with serving(make_pipeline(False), Limits(timeout_s=1)) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(
                b"POST /ner HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Content-Length: 5000\r\n\r\n{"text": "only this"}'
            )
            answer = b""
            while b"did not arrive" not in answer:  # headers and body may come in separate segments
                chunk = client.recv(4096)
                if not chunk:
                    break
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 1 s" in answer, answer
        assert post(url, {"text": "ZnO"}).status_code == 200


@pytest.mark.parametrize(
    "args, says",
    [
        (["--port", "70000"], "port must be between 1 and 65535, not 70000"),
        (["--min-score", "2"], "min_score must be a probability between 0 and 1, not 2"),
    ],
)
def test_serve_refuses_impossible_settings_in_one_line(scored_model, args, says):
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "serve.py"), str(scored_model), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    said = " ".join(result.stdout.split())
    assert result.returncode == 1 and says in said and "Traceback" not in result.stdout + result.stderr, said


def test_serve_names_a_port_in_use_before_loading_the_model(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "serve.py"), str(tmp_path / "nowhere"), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    said = " ".join(result.stdout.split())
    assert result.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in said and "Serving" not in said
    assert "--vars.serve_port" in said  # what a user of `spacy project run serve` can pass
    assert "neither a pipeline folder" not in said  # refused before the model is even looked at


@pytest.mark.parametrize(
    "content, says",
    [
        (b"\x97\x00binary", "is not UTF-8 text (byte 0)"),
        (b"not a docbin", "cannot be read as a .spacy corpus"),
    ],
)
def test_loadtest_names_unreadable_texts_in_one_sentence(tmp_path, content, says):
    from iob_ner.serving.loadtest import read_sentences
    from iob_ner.util.runtime import SetupError

    path = tmp_path / ("texts.spacy" if "docbin" in says or "corpus" in says else "texts.txt")
    path.write_bytes(content)
    with pytest.raises(SetupError, match=re.escape(says)):
        read_sentences(path)
    with pytest.raises(SetupError, match="is a folder"):
        read_sentences(tmp_path)


def test_deeply_nested_json_gets_422_not_a_500():
    """3 KB of [[[...]]] made json.loads raise RecursionError: a 500 with a traceback in the log."""
    with serving(make_pipeline(False), Limits()) as url:
        answer = post(url, b'{"text": "a", "x": ' + b"[" * 1_500 + b"]" * 1_500 + b"}")
        assert answer.status_code == 422 and "too deeply" in answer.json()["detail"]
        assert post(url, {"text": "ZnO"}).status_code == 200


@pytest.mark.parametrize(
    "script, args, says",
    [
        ("serve.py", [], "serving needs uvicorn"),
        ("loadtest.py", ["--texts", str(ROOT / "README.md")], "needs httpx"),
    ],
)
def test_without_the_serving_stack_the_commands_say_what_to_install(script, args, says):
    """As after `pip install -r requirements.txt` alone: the optional packages made unimportable."""
    code = (
        "import runpy, sys\n"
        "for name in ('uvicorn', 'fastapi', 'starlette', 'httpx'):\n"
        "    sys.modules[name] = None\n"
        f"sys.argv = {[script, *args]!r}\n"
        f"runpy.run_path({str(ROOT / 'scripts' / script)!r}, run_name='__main__')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT / "scripts"
    )
    said = " ".join(result.stdout.split())
    assert result.returncode == 1 and says in said and "requirements-serve.txt" in said, said + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_requests_are_not_exported_to_the_otlp_collector_that_transformers_assumes(monkeypatch):
    """Where OpenTelemetry's OTLP exporter is installed (wandb brings it), importing transformers makes its
    OTLP exporters to localhost:4318 the global providers, and FastAPI records each request with them: the
    service would post its metrics there every second. A real listener on localhost:4318 counts the posts:
    some with the global providers (the problem is real here), none with the service's own settings."""
    import http.server

    import spacy_transformers  # noqa: F401 (imports transformers, as serving a transformer pipeline does)
    from opentelemetry import metrics, trace

    from iob_ner.serving import web

    resource = getattr(trace.get_tracer_provider(), "resource", None)
    if resource is None or resource.attributes.get("service.name") != "transformers":
        pytest.skip("no OTLP exporter installed: transformers set no global OpenTelemetry provider here")
    posts = []

    class Collector(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            posts.append(self.path)
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    try:
        collector = http.server.ThreadingHTTPServer(("127.0.0.1", 4318), Collector)
    except OSError:
        pytest.skip("localhost:4318 is taken")
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    nlp = spacy.blank("en")
    try:
        counts = {}
        # the service's first: an exporter, once given measurements, sends them again at every interval
        for name, settings in (("service's settings", web.telemetry_settings), ("global providers", lambda: {})):
            monkeypatch.setattr(web, "telemetry_settings", settings)
            posts.clear()
            with serving(nlp, Limits()) as url:
                assert post(url, {"text": "a text"}).status_code == 200
                time.sleep(2.5)  # the exporter's interval is one second
            counts[name] = len([path for path in posts if path.endswith("/v1/metrics")])
    finally:
        # the global exporter now holds this request's measurements and would post them at every interval for
        # the rest of the process, to a collector that is gone ("Transient error ... retrying", and a wait for
        # its retries as the test process exits): shut it down while the collector still answers
        getattr(metrics.get_meter_provider(), "shutdown", lambda: None)()
        collector.shutdown()
    assert counts["global providers"] > 0 and counts["service's settings"] == 0, counts
