"""The HTTP service of `spacy project run serve`: a FastAPI application around one loaded pipeline.

Requests are micro-batched: the texts of concurrent requests wait in one queue, at most `max_wait_ms`,
and go through `nlp.pipe` together (up to `max_batch_size` texts), because a transformer processes 16
texts in one call far faster than in 16 calls. One worker thread owns the pipeline, so nothing runs
it concurrently. Each batch runs inside `nlp.memory_zone()`: the strings and lexemes that new texts add
to the vocab are freed after the batch, so memory stays flat over millions of requests.

Limits answer with a 4xx and one sentence, and the server goes on: body size (413), texts per request
(413), characters per text (413), a body that is not UTF-8 (400), not JSON, too deeply nested, not of
the documented shape or holding an unpaired surrogate (422), a body that does not arrive within
`timeout_s` (408). A request that waits longer than `timeout_s` for the pipeline gets 503 (with
Retry-After), as does one that finds the queue full. On shutdown (SIGTERM, Ctrl-C) uvicorn stops
accepting and the queued requests are finished before the process ends.
"""

import asyncio
import re
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, model_validator

from ..inference.json_documents import NotJson, parse_json
from .web import add_page, offline_docs_app

Run = Callable[[List[str]], List[List[dict]]]  # texts -> the entities of each
UNPAIRED_SURROGATE = re.compile("[\ud800-\udfff]")
EXAMPLE_TEXT = "ZnO films were grown by pulsed laser deposition on sapphire at 600 °C."  # no corpus: this


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1_000_000
    max_texts: int = 64
    max_chars: int = 100_000
    timeout_s: float = 30.0
    max_queue: int = 4096  # texts waiting; a request that would exceed it gets 503 at once


@dataclass(frozen=True)
class Batching:
    max_batch_size: int = 32  # 1: batching off, one nlp.pipe call per text
    max_wait_ms: float = 5.0


class NerRequest(BaseModel):
    """One text (`text`) or a list of them (`texts`), not both."""

    model_config = ConfigDict(extra="forbid")
    text: Optional[StrictStr] = Field(None, description='One text; the answer is {"entities": [...]}')
    texts: Optional[List[StrictStr]] = Field(
        None, description='Several texts; the answer is {"results": [{"entities": [...]}, ...]}'
    )

    @model_validator(mode="after")
    def one_of(self) -> "NerRequest":
        if (self.text is None) == (self.texts is None):
            raise ValueError("give either 'text' (a string) or 'texts' (a list of strings)")
        return self


# -- what the answers look like (for /docs and /openapi.json: the handlers build plain dicts) ---------


class Entity(BaseModel):
    text: str = Field(description="The entity's characters: the request's text[start:end]")
    label: str
    start: int = Field(description="Offset of the first character, in Unicode code points (Python's str)")
    end: int = Field(description="Offset after the last character")
    score: Optional[float] = Field(
        None, description="Calibrated probability (token_ner pipelines; absent for spaCy's ner)"
    )


class Entities(BaseModel):
    entities: List[Entity]


class NerAnswer(BaseModel):
    """{"entities": [...]} for `text`, {"results": [{"entities": [...]}, ...]} for `texts` (in their order)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"entities": [{"text": "ZnO", "label": "MAT", "start": 0, "end": 3, "score": 0.97}]}]
        }
    )
    entities: Optional[List[Entity]] = Field(None, description="For a request with `text`")
    results: Optional[List[Entities]] = Field(None, description="For a request with `texts`, one per text")


class Problem(BaseModel):
    """A refusal: one sentence that says why."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"detail": "text 0 has 120,000 characters; the limit is 100,000"}]}
    )
    detail: str


class Health(BaseModel):
    status: str
    queued: int = Field(description="Texts waiting for the pipeline")
    requests: int
    refused: int = Field(description="Requests answered with a 4xx or 5xx sentence")
    batches: int
    texts: int
    rss_bytes: Optional[int] = Field(description="Resident memory of the server process, in bytes")
    rss_mb: Optional[float] = Field(description="The same in MB (10^6 bytes), one decimal")
    rss: Optional[str] = Field(description='The same for people, e.g. "812 MB"')
    uptime_s: float


class Info(BaseModel):
    """What /info answers (pipeline_info's fields, the example and the service's settings)."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(description="The pipeline folder or package served")
    name: str
    version: str
    pipeline: List[str] = Field(description="The pipeline's components")
    labels: List[str]
    colors: Dict[str, str] = Field(description="label -> the colour of training/errors.html")
    descriptions: Dict[str, str] = Field(description="label -> description, from labels.json (empty without)")
    example: str = Field(description="A short text to try (from the test corpus where the server has it)")
    scores: bool = Field(description="Whether entities carry a calibrated probability")
    score_samples: int
    device: str
    spacy: str
    limits: Dict[str, Any] = Field(description="The Limits, and max_body: max_body_bytes for people")
    batching: Dict[str, Any]


class RequestError(Exception):
    """A request the service refuses: its HTTP status and one sentence."""

    def __init__(self, status: int, detail: str, headers: Optional[Dict[str, str]] = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


# -- reading a request ---------------------------------------------------------------------------------


def parse_body(body: bytes, limits: Limits) -> Tuple[List[str], bool]:
    """(texts, single) from a request body, or RequestError with the status and the reason."""
    try:
        decoded = body.decode("utf8")
    except UnicodeDecodeError as err:
        raise RequestError(400, f"the body is not UTF-8 (byte {err.start})") from None
    try:
        payload = parse_json(decoded)
    except NotJson as err:  # deep nesting included: 2 KB of [[[[...]]]] would otherwise be a 500
        raise RequestError(422, f"the body is {err}") from None
    try:
        request = NerRequest.model_validate(payload)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise RequestError(422, f"{where}: {first['msg']}") from None
    texts = [request.text] if request.text is not None else list(request.texts or [])
    if len(texts) > limits.max_texts:
        raise RequestError(413, f"{len(texts)} texts in one request; the limit is {limits.max_texts}")
    for i, text in enumerate(texts):
        if len(text) > limits.max_chars:
            raise RequestError(413, f"text {i} has {len(text):,} characters; the limit is {limits.max_chars:,}")
        surrogate = UNPAIRED_SURROGATE.search(text)
        if surrogate:  # a JSON escape such as \ud800 alone: valid JSON, but no text (and no UTF-8 answer)
            raise RequestError(
                422,
                f"text {i} holds an unpaired surrogate \\u{ord(surrogate.group()):04x} at "
                f"character {surrogate.start()}",
            )
    return texts, request.text is not None


async def read_body(receive_chunks, declared: Optional[str], limit: int) -> bytes:
    """The body, refused (413) as soon as it is known to exceed `limit`: from Content-Length when the
    client sends one, else while it streams in (a chunked upload is never read past the limit)."""
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise RequestError(400, f"Content-Length {declared!r} is not a number") from None
        if size > limit:
            raise RequestError(413, f"the body has {size:,} bytes; the limit is {limit:,}")
    from starlette.requests import ClientDisconnect  # here: the serving stack is optional, this module is not

    parts, size = [], 0
    try:
        async for chunk in receive_chunks:
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"the body exceeds the limit of {limit:,} bytes")
            parts.append(chunk)
    except ClientDisconnect:  # nobody to answer; without this, a traceback in the log per dropped client
        raise RequestError(400, "the client disconnected before the body was complete") from None
    return b"".join(parts)


# -- micro-batching ------------------------------------------------------------------------------------


@dataclass
class Pending:
    text: str
    future: asyncio.Future


class MicroBatcher:
    """Collects texts from concurrent requests and runs them through `run` together, in one thread."""

    def __init__(self, run: Run, batching: Batching, max_queue: int) -> None:
        self.run, self.batching, self.max_queue = run, batching, max_queue
        self.queue: "asyncio.Queue[Pending]" = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nlp")
        self.batches = 0
        self.texts = 0
        self._task: Optional[asyncio.Task] = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self) -> None:
        """Finish what is queued, then stop the worker."""
        await self.queue.join()
        if self._task is not None:
            self._task.cancel()
        self.executor.shutdown(wait=True)

    async def submit(self, texts: List[str]) -> List[List[dict]]:
        if self.queue.qsize() + len(texts) > self.max_queue:
            raise RequestError(
                503, f"the queue is full ({self.queue.qsize()} texts waiting); retry later", {"Retry-After": "1"}
            )
        loop = asyncio.get_running_loop()
        pending = [Pending(text, loop.create_future()) for text in texts]
        for item in pending:
            self.queue.put_nowait(item)
        return list(await asyncio.gather(*(item.future for item in pending)))

    async def _collect(self) -> List[Pending]:
        """One batch: the first text waiting, and whatever else comes within max_wait_ms, up to the size."""
        batch = [await self.queue.get()]
        deadline = time.monotonic() + self.batching.max_wait_ms / 1000
        while len(batch) < self.batching.max_batch_size:
            if not self.queue.empty():
                batch.append(self.queue.get_nowait())
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), left))
            except asyncio.TimeoutError:
                break
        return batch

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            live = [item for item in batch if not item.future.done()]  # timed-out requests are not run
            try:
                if live:
                    results = await loop.run_in_executor(self.executor, self._run_each, [i.text for i in live])
                    for item, result in zip(live, results):
                        if not item.future.done():
                            (item.future.set_exception if isinstance(result, Exception) else item.future.set_result)(
                                result
                            )
                    self.batches += 1
                    self.texts += len(live)
            finally:
                for _ in batch:
                    self.queue.task_done()

    def _run_each(self, texts: List[str]) -> List[Any]:
        """The batch's results; when the batch fails, each text alone, so one bad text fails only its request."""
        try:
            return list(self.run(texts))
        except Exception:
            results: List[Any] = []
            for text in texts:
                try:
                    results += self.run([text])
                except Exception as err:  # the request gets a 500 with the reason; the server goes on
                    results.append(
                        RequestError(
                            500,
                            f"the pipeline failed on this text ({type(err).__name__}: "
                            f"{str(err).splitlines()[0][:200] if str(err) else ''})",
                        )
                    )
            return results


# -- memory ----------------------------------------------------------------------------------------


def rss_bytes() -> Optional[int]:
    """This process's resident memory (Linux /proc), for /health and the load test."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def human_bytes(size: Optional[int]) -> Optional[str]:
    """812000000 -> "812 MB" (powers of 1000, as rss_mb): memory in /health and /info for people."""
    if size is None:
        return None
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" or size >= 100 else f"{size:.1f} {unit}"
        size /= 1000
    return None  # not reached


def memory(size: Optional[int]) -> Dict[str, Any]:
    """The raw bytes (the key clients read), MB and words, side by side."""
    return {"rss_bytes": size, "rss_mb": None if size is None else round(size / 1e6, 1), "rss": human_bytes(size)}


# -- the application -----------------------------------------------------------------------------------


def create_app(run: Run, info: Dict[str, Any], *, limits: Limits = Limits(), batching: Batching = Batching()):
    """The FastAPI application: POST /ner, GET /health, GET /info, the page at /, OpenAPI docs at /docs."""
    from fastapi import FastAPI, Request  # here: the serving stack is optional (requirements-serve.txt)
    from fastapi.responses import JSONResponse

    state: Dict[str, Any] = {"requests": 0, "refused": 0, "started": time.time()}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher = MicroBatcher(run, batching, limits.max_queue)
        batcher.start()
        state["batcher"] = batcher
        yield
        await batcher.stop()

    app = offline_docs_app(
        title="iob-ner",
        summary="Named entities from a spaCy pipeline trained by this project",
        version=str(info.get("version", "")),
        lifespan=lifespan,
    )

    @app.exception_handler(RequestError)
    async def refused(request: Request, err: RequestError) -> JSONResponse:
        state["refused"] += 1
        return JSONResponse({"detail": err.detail}, status_code=err.status, headers=err.headers)

    example = str(info.get("example") or EXAMPLE_TEXT)
    request_schema = NerRequest.model_json_schema()
    request_schema["examples"] = [{"text": example}, {"texts": [example, "A second text."]}]

    @app.post(
        "/ner",
        summary="Find the entities of a text or of several",
        operation_id="find_entities",
        tags=["entities"],
        response_model=None,  # the handler builds the answer; NerAnswer documents it
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": request_schema,
                        # what Swagger UI's "Try it out" fills in: a request that answers 200
                        "examples": {
                            "text": {"summary": "One text", "value": {"text": example}},
                            "texts": {"summary": "Several texts", "value": {"texts": [example, "A second text."]}},
                        },
                    }
                },
            }
        },
        responses={
            200: {"model": NerAnswer, "description": "The entities of each text"},
            400: {"model": Problem, "description": "not UTF-8, or the client disconnected"},
            408: {"model": Problem, "description": "the body did not arrive in time"},
            413: {"model": Problem, "description": "over a limit"},
            422: {"model": Problem, "description": "not JSON, not the documented shape, or an unpaired surrogate"},
            500: {"model": Problem, "description": "the pipeline failed on this text (only this request fails)"},
            503: {"model": Problem, "description": "timed out or queue full; retry"},
        },
    )
    async def ner(request: Request) -> Dict[str, Any]:
        """Entities with character offsets, labels and (token_ner) calibrated scores."""
        state["requests"] += 1
        try:  # a client that announces more bytes than it sends would hold the connection for ever
            body = await asyncio.wait_for(
                read_body(request.stream(), request.headers.get("content-length"), limits.max_body_bytes),
                limits.timeout_s,
            )
        except asyncio.TimeoutError:
            raise RequestError(408, f"the body did not arrive within {limits.timeout_s:g} s") from None
        texts, single = parse_body(body, limits)
        try:
            found = await asyncio.wait_for(state["batcher"].submit(texts), limits.timeout_s)
        except asyncio.TimeoutError:
            raise RequestError(
                503, f"no answer within {limits.timeout_s:g} s; retry later", {"Retry-After": "1"}
            ) from None
        return {"entities": found[0]} if single else {"results": [{"entities": e} for e in found]}

    @app.get(
        "/health",
        summary="Liveness, queue, counts and memory",
        operation_id="health",
        tags=["service"],
        response_model=None,
        responses={200: {"model": Health, "description": "The server is up"}},
    )
    async def health() -> Dict[str, Any]:
        """Liveness, queue length, counts and resident memory."""
        batcher = state.get("batcher")
        return {
            "status": "ok",
            "queued": batcher.queue.qsize() if batcher else 0,
            "requests": state["requests"],
            "refused": state["refused"],
            "batches": batcher.batches if batcher else 0,
            "texts": batcher.texts if batcher else 0,
            **memory(rss_bytes()),
            "uptime_s": round(time.time() - state["started"], 1),
        }

    @app.get(
        "/info",
        summary="The pipeline, its labels and the service's limits",
        operation_id="info",
        tags=["service"],
        response_model=None,
        responses={200: {"model": Info, "description": "The pipeline and the service's settings"}},
    )
    async def about() -> Dict[str, Any]:
        """The pipeline (name, version, components, labels, their colours and descriptions, device), an example
        text, and the service's limits (max_body: max_body_bytes for people) and batching."""
        shown = {**asdict(limits), "max_body": human_bytes(limits.max_body_bytes)}
        return {"example": example, "descriptions": {}, **info, "limits": shown, "batching": asdict(batching)}

    add_page(app)
    return app
