"""Load-test `serve` on loopback: the same server with micro-batching on and off, side by side.

Starts the serve command (`serve_script`) on a free 127.0.0.1 port for each setting, sends a fixed number of requests from
`concurrency` clients at once (a bounded asyncio client, never anything but loopback), each request one
sentence of `texts`, with malformed requests of every kind mixed in (each must get a 4xx). Stops at
`time_cap_s`. Prints requests/s, words/s, p50/p95/p99 latency, answers by status, and the server's
memory (RSS) before the first request, after the first 1,000 and at the end.
"""

import asyncio
import json
import random
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy

from ..util.errors import SetupError
from ..util.runtime import cpu_name

ANSI = re.compile(r"\x1b\[[0-9;]*m")  # wasabi's colours, out of a message quoted in another
MEMORY_MARK = 1000  # RSS is read after this many requests, and again at the end


@dataclass
class Request:
    kind: str  # "good" or what is wrong with it
    body: bytes
    words: int = 0


def malformed_requests(max_chars: int, max_texts: int, max_body_bytes: int) -> List[Request]:
    """One request of each way to get it wrong; each must be answered with a 4xx."""
    return [
        Request("not JSON", b'{"text": "unclosed'),
        Request("not UTF-8", b'{"text": "caf\xe9"}'),
        Request("wrong type", b'{"text": 42}'),
        Request("unknown field", b'{"txt": "a text"}'),
        Request("empty body", b""),
        Request("text too long", json.dumps({"text": "word " * (max_chars // 5 + 1)}).encode()),
        Request("too many texts", json.dumps({"texts": ["a text"] * (max_texts + 1)}).encode()),
        Request("body too large", b'{"text": "' + b"x" * max_body_bytes + b'"}'),
    ]


def read_sentences(path: Path) -> List[str]:
    """Request texts: the sentences of a .spacy corpus, or the non-empty lines of a text file."""
    if path.is_dir():
        raise SetupError(f"{path} is a folder: give a .spacy corpus or a text file with one text a line")
    try:
        if path.suffix == ".spacy":
            # here: spaCy imports weasel, which imports httpx, and the command says "needs httpx" where the
            # serving stack is missing (scripts/loadtest.py) before anything imports it
            import spacy
            from spacy.tokens import DocBin

            docs = DocBin().from_disk(path).get_docs(spacy.blank("en").vocab)
            texts = [
                sent.text.strip()
                for doc in docs
                for sent in (doc.sents if doc.has_annotation("SENT_START") else [doc[:]])
            ]
        else:
            texts = [line.strip() for line in path.read_text(encoding="utf8").splitlines()]
    except UnicodeDecodeError as err:
        raise SetupError(f"{path} is not UTF-8 text (byte {err.start}): give a .spacy corpus or a text file") from None
    except ValueError as err:  # DocBin's E1014 and friends: not a .spacy file
        raise SetupError(f"{path} cannot be read as a .spacy corpus ({str(err).splitlines()[0][:160]})") from None
    texts = [text for text in texts if text]
    if not texts:
        raise SetupError(f"{path} holds no text to send")
    return texts


def request_mix(texts: List[str], good: int, bad: int, limits: Dict[str, int], seed: int = 0) -> List[Request]:
    """`good` one-sentence requests and `bad` malformed ones (every kind in turn), shuffled the same each run."""
    sentences = [Request("good", json.dumps({"text": text}).encode(), len(text.split())) for text in texts]
    kinds = malformed_requests(**limits)
    mix = [sentences[i % len(sentences)] for i in range(good)] + [kinds[i % len(kinds)] for i in range(bad)]
    random.Random(seed).shuffle(mix)
    return mix


# -- the server ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    serve_script: Path, model: str, port: int, max_batch_size: int, max_wait_ms: float, gpu_id: str, wait_s: float = 300
) -> subprocess.Popen:
    """The serve command (scripts/serve.py) in a child process, returned once /health answers."""
    import httpx  # here: part of the optional serving stack (requirements-serve.txt)

    server = subprocess.Popen(
        [
            sys.executable,
            str(serve_script),
            model,
            "--port",
            str(port),
            "--gpu-id",
            gpu_id,
            "--max-batch-size",
            str(max_batch_size),
            "--max-wait-ms",
            str(max_wait_ms),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            said = [line for line in ANSI.sub("", server.stdout.read()).splitlines() if line.strip()]
            raise SetupError(f"the server stopped before it answered ({' '.join(said[-3:])[-600:]})")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    server.kill()
    raise SetupError(f"the server did not answer on port {port} within {wait_s:g} s")


def stop_server(server: subprocess.Popen) -> str:
    server.send_signal(signal.SIGINT)
    try:
        return server.communicate(timeout=60)[0]
    except subprocess.TimeoutExpired:
        server.kill()
        return server.communicate()[0]


# -- the clients ---------------------------------------------------------------------------------------


@dataclass
class Tally:
    statuses: Dict[str, Dict[str, int]] = field(default_factory=dict)  # kind -> status -> count
    latencies: List[float] = field(default_factory=list)  # good requests answered 200, seconds
    words: int = 0
    sent: int = 0
    rss: Dict[str, Optional[int]] = field(default_factory=dict)

    def add(self, request: Request, status: str, seconds: float) -> None:
        by_status = self.statuses.setdefault(request.kind, {})
        by_status[status] = by_status.get(status, 0) + 1
        if request.kind == "good" and status == "200":
            self.latencies.append(seconds)
            self.words += request.words


async def _health_rss(client, url: str) -> Optional[int]:
    return (await client.get(f"{url}/health")).json().get("rss_bytes")


async def drive(
    url: str, mix: List[Request], concurrency: int, time_cap_s: float, timeout_s: float
) -> Tuple[Tally, float]:
    """Send `mix` from `concurrency` clients; (tally, wall seconds)."""
    import httpx  # here: part of the optional serving stack (requirements-serve.txt)

    tally = Tally()
    todo = iter(mix)
    stop_at = time.monotonic() + time_cap_s
    limits = httpx.Limits(max_connections=concurrency + 1, max_keepalive_connections=concurrency + 1)
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:
        tally.rss["before"] = await _health_rss(client, url)

        async def client_loop() -> None:
            for request in todo:
                if time.monotonic() > stop_at:
                    return
                started = time.perf_counter()
                try:
                    answer = await client.post(
                        f"{url}/ner", content=request.body, headers={"content-type": "application/json"}
                    )
                    status = str(answer.status_code)
                except httpx.HTTPError as err:
                    status = f"no answer ({type(err).__name__})"
                tally.add(request, status, time.perf_counter() - started)
                tally.sent += 1
                if tally.sent == MEMORY_MARK:
                    tally.rss[f"after {MEMORY_MARK}"] = await _health_rss(client, url)

        started = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        wall = time.perf_counter() - started
        tally.rss["after all"] = await _health_rss(client, url)
    return tally, wall


# -- figures -------------------------------------------------------------------------------------------


def figures(tally: Tally, wall: float, planned: int) -> dict:
    """What one run measured: rates, latency percentiles, answers by kind and status, errors, memory."""
    answered = sum(sum(by.values()) for by in tally.statuses.values())
    server_errors = sum(n for by in tally.statuses.values() for status, n in by.items() if status[0] not in "24")
    malformed_not_4xx = sum(
        n for kind, by in tally.statuses.items() if kind != "good" for status, n in by.items() if status[0] != "4"
    )
    good = tally.statuses.get("good", {})
    latency = (numpy.percentile(tally.latencies, [50, 95, 99]) * 1000).round(1).tolist() if tally.latencies else []
    rss = tally.rss
    mark, end = rss.get(f"after {MEMORY_MARK}"), rss.get("after all")
    return {
        "planned": planned,
        "sent": tally.sent,
        "wall_s": round(wall, 2),
        "requests_per_s": round(answered / wall, 1),
        "good_per_s": round(good.get("200", 0) / wall, 1),
        "words_per_s": round(tally.words / wall, 1),
        "latency_ms": dict(zip(("p50", "p95", "p99"), latency)),
        "statuses": tally.statuses,
        "server_errors": server_errors,
        "malformed_not_4xx": malformed_not_4xx,
        "good_not_200": sum(n for status, n in good.items() if status != "200"),
        "rss_bytes": rss,
        "rss_growth_after_mark": round(end / mark - 1, 4) if mark and end else None,
    }


def one_run(
    *,
    serve_script: Path,
    model: str,
    mix: List[Request],
    concurrency: int,
    max_batch_size: int,
    max_wait_ms: float,
    gpu_id: str,
    time_cap_s: float,
    timeout_s: float,
) -> dict:
    port = free_port()
    server = start_server(serve_script, model, port, max_batch_size, max_wait_ms, gpu_id)
    try:
        tally, wall = asyncio.run(drive(f"http://127.0.0.1:{port}", mix, concurrency, time_cap_s, timeout_s))
    finally:
        log = stop_server(server)
    return {
        "max_batch_size": max_batch_size,
        "max_wait_ms": max_wait_ms,
        **figures(tally, wall, len(mix)),
        "server_log_tail": log[-600:],
    }


def loadtest(
    *,
    serve_script: Path,
    model: str,
    texts: Path,
    requests: int = 10_000,
    malformed: int = 1_000,
    unbatched_requests: int = 1_000,
    concurrency: int = 16,
    max_batch_size: int = 32,
    max_wait_ms: float = 5.0,
    gpu_id: str = "auto",
    time_cap_s: float = 900,
    timeout_s: float = 60,
) -> dict:
    """Batched, then unbatched (max_batch_size 1), the same server and clients; the figures of both."""
    if min(requests, concurrency, max_batch_size) < 1 or malformed < 0 or unbatched_requests < 0:
        raise SetupError("requests, concurrency and max_batch_size must be at least 1")
    sentences = read_sentences(texts)
    limits = {"max_chars": 100_000, "max_texts": 64, "max_body_bytes": 1_000_000}  # serve.py's defaults
    common = {
        "serve_script": serve_script,
        "model": model,
        "concurrency": concurrency,
        "max_wait_ms": max_wait_ms,
        "gpu_id": gpu_id,
        "time_cap_s": time_cap_s,
        "timeout_s": timeout_s,
    }
    runs = {
        "batched": one_run(
            mix=request_mix(sentences, requests, malformed, limits), max_batch_size=max_batch_size, **common
        )
    }
    result = {
        "model": model,
        "texts": str(texts),
        "sentences": len(sentences),
        "concurrency": concurrency,
        "cpu": cpu_name(),
        "date": time.strftime("%Y-%m-%d"),
        "runs": runs,
    }
    if unbatched_requests:
        result.update(compare_batching(runs, sentences, requests, malformed, unbatched_requests, limits, common))
    return result


def compare_batching(
    runs: Dict[str, dict],
    sentences: List[str],
    requests: int,
    malformed: int,
    unbatched_requests: int,
    limits: Dict[str, int],
    common: dict,
) -> dict:
    """Batching on against off, on the same good work: the same good requests, no malformed ones, in both.

    The batched run above may hold malformed requests or another number of good ones; its words/s over
    an unbatched run's would then compare different work (issue 21: "0.82x" from 100 good and 1,000
    malformed requests against 1,000 good ones). So the comparison has runs of its own where needed, and the
    ratio is given only when both answered every request of the same mix with 200.
    """
    n = min(requests, unbatched_requests)
    mix = request_mix(sentences, n, 0, limits)
    runs["unbatched"] = one_run(mix=mix, max_batch_size=1, **common)
    same = malformed == 0 and requests == n
    if not same:
        runs["batched_same_work"] = one_run(mix=mix, max_batch_size=runs["batched"]["max_batch_size"], **common)
    name = "batched" if same else "batched_same_work"
    batched = runs[name]
    good = [run["statuses"].get("good", {}).get("200", 0) for run in (batched, runs["unbatched"])]
    if good != [n, n] or not runs["unbatched"]["words_per_s"]:
        why = f"the two runs did not both answer all {n} requests with 200 (answered {good[0]} and {good[1]})"
        return {"batched_over_unbatched_words_per_s": None, "comparison_note": why}
    return {
        "batched_over_unbatched_words_per_s": round(batched["words_per_s"] / runs["unbatched"]["words_per_s"], 2),
        "comparison_note": f"the same {n} good requests, no malformed ones, with batching on ({name}) and off",
    }
