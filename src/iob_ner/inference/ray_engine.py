"""predict's Ray engine: the same pipeline on Ray actors, over millions of documents, resumably.

    python scripts/predict.py MODEL INPUT OUTPUT.jsonl --engine ray [--actors N] [--shard-size 10240]

The driver reads the input with predict's own reader, so bad documents are named, skipped and counted
exactly as predict does, and cuts the stream into shards of `shard_size` documents (a whole number of
predict's batches, so each actor sees the very batches predict would: padding, and hence every score,
is the same). A window of shards at a time goes through Ray Data: map_batches with PipelineActor, which
loads the pipeline once per actor (one GPU each where the cluster has GPUs, else one CPU each). Each
finished shard is written whole (atomically) under `.<output name>.shards/` beside the output, with a
marker holding its counts; a rerun skips the shards that are complete. The end concatenates the shards
in order through predict's own writer: the outputs are byte for byte those of `--engine local`.

Ray starts in this process's machine when no cluster is named (no setup); with `--ray-address` or
RAY_ADDRESS it joins that cluster. The code the actors need (the iob_ner package) travels in
their runtime environment; the pipeline must be a folder every node sees or an installed package (the
wheel of `spacy project run package`, e.g. in the job's runtime_env pip list: README, "Ray").
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from wasabi import msg

from ..util.errors import SetupError
from ..util.outputs import atomic_output, remove, write_text_atomic
from ..util.runtime import ThreadDevice, select_device
from .inputs import InputProblems, NothingRead, Text, check_something_read, input_files, read_texts
from .pipeline import BATCH_CHARS, Prediction, check_settings, entity_reading, load_pipeline, predictions
from .writers import write_outputs

PACKAGE = Path(__file__).resolve().parents[1]  # iob_ner: the one piece of code the actors need
SHARDS_PER_ACTOR = 4  # shards in flight per actor: enough to keep each busy, few enough to bound memory
Skip = Tuple[str, str, str]  # where, why, kind: InputProblems.skip's arguments


# -- the actor -----------------------------------------------------------------------------------------


class Recorder(InputProblems):
    """InputProblems that also keeps each skip, so that an actor can hand them to the driver."""

    def __init__(self) -> None:
        super().__init__()
        self.skipped: Dict[str, Skip] = {}

    def skip(self, where: str, why: str, kind: Optional[str] = None) -> None:
        super().skip(where, why, kind)
        self.skipped[where] = (where, why, kind or why)


class PipelineActor:
    """Ray Data's callable class: loads the pipeline once, then turns rows (one predict batch of documents
    each, as JSON) into results (one JSON list a row: a prediction or a skip per document, in order)."""

    def __init__(
        self,
        model: str,
        use_gpu: bool,
        batch_size: int,
        max_length: int,
        min_score: float,
        iob: bool,
        batch_chars: int = BATCH_CHARS,
    ) -> None:
        msg.no_print = True  # the driver reports skips and warnings once, not once per actor
        gpu, _ = select_device(0 if use_gpu else -1)  # Ray's CUDA_VISIBLE_DEVICES makes the actor's GPU number 0
        # Ray Data calls __call__ in a thread of its own, which would start on the CPU's ops and CUDA device 0
        self.device = ThreadDevice(gpu)
        self.nlp = load_pipeline(Path(model) if Path(model).is_dir() else model)
        self.reading = entity_reading(self.nlp, min_score, words=iob)
        self.nlp.max_length = max_length
        self.batch_size, self.max_length, self.batch_chars, self.iob = batch_size, max_length, batch_chars, iob

    def __call__(self, batch: Dict[str, Sequence]) -> Dict[str, list]:
        self.device.activate()
        results = [self.process(json.loads(docs)) for docs in batch["docs"]]
        return {"shard": list(batch["shard"]), "index": list(batch["index"]), "results": results}

    def process(self, docs: List[List[str]]) -> str:
        texts = [Text(*doc) for doc in docs]
        problems = Recorder()
        found = iter(
            predictions(
                self.nlp,
                texts,
                problems,
                batch_size=self.batch_size,
                max_length=self.max_length,
                batch_chars=self.batch_chars,
                reading=self.reading,
            )
        )
        # predictions() yields the good documents in order and skips the others: zip them back.
        results = [
            {"skip": problems.skipped[t.where]} if t.where in problems.skipped else to_result(next(found), self.iob)
            for t in texts
        ]
        return json.dumps(results, ensure_ascii=False)


def to_result(prediction: Prediction, iob: bool) -> dict:
    result = {
        "record": prediction.record,
        "split": prediction.split,
        "dropped": prediction.dropped,
        "unscored": prediction.unscored,
    }
    if iob:
        result.update(words=prediction.words, spans=prediction.spans)
    return result


def from_result(result: dict) -> Prediction:
    spans = [tuple(span) for span in result.get("spans", [])]
    return Prediction(
        "",
        result["record"],
        result.get("words", []),
        spans,
        split=result["split"],
        dropped=result["dropped"],
        unscored=result["unscored"],
    )


# -- shards on disk --------------------------------------------------------------------------------------


@dataclass
class ShardStore:
    """Finished shards: shard-NNNNN.jsonl (a result a line) written whole, then shard-NNNNN.done (its
    document count, size and skips). A shard is complete when both exist and agree; manifest.json holds
    the fingerprint of the input, pipeline and settings, so a changed one never reuses stale shards."""

    folder: Path
    fingerprint: str
    reused: int = 0
    written: int = 0

    def open(self) -> None:
        manifest = self.folder / "manifest.json"
        if manifest.exists():
            try:
                same = json.loads(manifest.read_text(encoding="utf8")).get("fingerprint") == self.fingerprint
            except ValueError:
                same = False
            if not same:
                msg.warn(f"{self.folder} holds shards of another input, pipeline or setting: starting over")
                remove(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(manifest, json.dumps({"fingerprint": self.fingerprint}) + "\n")

    def data(self, shard: int) -> Path:
        return self.folder / f"shard-{shard:05d}.jsonl"

    def marker(self, shard: int) -> Path:
        return self.folder / f"shard-{shard:05d}.done"

    def complete(self, shard: int) -> Optional[dict]:
        """The shard's marker where the shard is complete, else None (never written, or cut short)."""
        try:
            done = json.loads(self.marker(shard).read_text(encoding="utf8"))
            return done if self.data(shard).stat().st_size == done["bytes"] else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write(self, shard: int, rows: Sequence[str], problems: InputProblems) -> None:
        """Write one shard from its rows' results (in order), reporting its skips as predict does."""
        skipped: List[Skip] = []
        documents = 0
        with atomic_output(self.data(shard)) as tmp, tmp.open("w", encoding="utf8") as out:
            for row in rows:
                for result in json.loads(row):
                    if "skip" in result:
                        skipped.append(tuple(result["skip"]))
                        problems.skip(*result["skip"])
                    else:
                        out.write(json.dumps(result, ensure_ascii=False) + "\n")
                        documents += 1
        done = {"documents": documents, "bytes": self.data(shard).stat().st_size, "skipped": skipped}
        write_text_atomic(self.marker(shard), json.dumps(done, ensure_ascii=False) + "\n")
        self.written += 1

    def replay(self, done: dict, problems: InputProblems) -> None:
        """A complete shard's skips, reported and counted again so that the totals are a full run's."""
        for skip in done["skipped"]:
            problems.skip(*skip)
        self.reused += 1

    def close(self) -> None:
        """The outputs are whole: the shards have served."""
        remove(self.folder)

    def predictions(self, shards: int) -> Iterator[Prediction]:
        for shard in range(shards):
            with self.data(shard).open(encoding="utf8") as lines:
                for line in lines:
                    yield from_result(json.loads(line))


def fingerprint(files: Sequence[Path], model: Path, settings: dict) -> str:
    """A digest of what decides the outputs: the input files and the pipeline (by path, size and
    modification time, not content: cheap on terabytes) and the settings."""

    def stat(path: Path) -> list:
        info = path.stat()
        return [str(path.resolve()), info.st_size, info.st_mtime_ns]

    if model.is_dir():
        pipeline = [stat(p) for p in sorted(model.rglob("*")) if p.is_file()]
    else:
        import spacy

        pipeline = [str(model), spacy.util.get_package_version(str(model))]
    state = {"inputs": [stat(p) for p in files], "pipeline": pipeline, "settings": settings}
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode("utf8")).hexdigest()


def shard_folder(output: Path) -> Path:
    """Hidden, beside the output: never read back as input from a folder (input_files skips hidden names)."""
    return output.with_name(f".{output.name}.shards")


# -- the driver --------------------------------------------------------------------------------------------


def shards_of(texts: Iterable[Text], shard_size: int, batch_size: int) -> Iterator[List[List[Text]]]:
    """Consecutive shards of `shard_size` documents, each cut into predict's batches of `batch_size`."""
    texts = iter(texts)
    while True:
        shard = list(islice(texts, shard_size))
        if not shard:
            return
        yield [shard[i : i + batch_size] for i in range(0, len(shard), batch_size)]


@dataclass
class Cluster:
    """Where the actors run: how many, with a GPU each or a CPU each, and a description to print."""

    actors: int
    use_gpu: bool
    description: str
    started_here: bool = False
    runtime_env: dict = field(default_factory=dict)


CODE = [PACKAGE]


def code_env(wheels: Sequence[Path], started: bool) -> Tuple[dict, dict]:
    """(the job's runtime_env, the actors' runtime_env) that bring this code and the wheels to the workers.

    Ray uploads local files only for a job it starts (ray.init): then py_modules carries the code and the
    pipeline wheels to every node. A Ray started by the caller (a test, a notebook) has its job already:
    the actors then find the code on this machine's path, which suits a local Ray."""
    for wheel in wheels:
        if not (wheel.is_file() and wheel.suffix == ".whl"):
            raise SetupError(f"{wheel} is not a wheel file (spacy project run package writes one in packages/)")
    if started:
        return {"py_modules": [str(p) for p in CODE + list(wheels)], "excludes": ["__pycache__"]}, {}
    if wheels:
        raise SetupError(
            "ray_wheel needs a Ray that predict starts itself; install the wheel on the "
            "cluster, or call ray.shutdown() first"
        )
    path = os.pathsep.join(filter(None, [str(PACKAGE.parent), os.environ.get("PYTHONPATH")]))
    return {}, {"env_vars": {"PYTHONPATH": path}}


def quiet_ray_data() -> None:
    """predict prints its own progress and counts: Ray Data's progress logs would drown them."""
    import logging

    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """One sentence, at once, for a cluster address nothing answers on: ray.init retries it for minutes."""
    import socket

    if address in ("auto", "local"):
        return
    where = address.split("://", 1)[-1]
    host, _, port = where.rpartition(":")
    if not host or not port.isdigit():
        raise SetupError(f"the Ray address {address!r} is not HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise SetupError(
            f"cannot reach Ray at {address} ({err.strerror or err}): is the cluster up, and is "
            f"this its head's address? Leave ray_address and RAY_ADDRESS empty for a local Ray"
        ) from None


def connect(address: Optional[str], actors: int, gpu_id: Optional[int], wheels: Sequence[Path] = ()) -> Cluster:
    """Join the cluster at `address` (or RAY_ADDRESS), else start Ray on this machine; reuse a running one."""
    try:
        import ray
    except ImportError:
        raise SetupError("the ray engine needs Ray: pip install -r requirements-ray.txt") from None
    started = not ray.is_initialized()
    address = address or os.environ.get("RAY_ADDRESS") or None
    if started and address:
        check_reachable(address)
    job_env, actor_env = code_env(wheels, started)
    if started:
        # Local: every CPU of this machine (or as many as actors asked), no dashboard, quiet logs.
        local_cpus = None if address else max(os.cpu_count() or 1, actors)
        ray.init(
            address=address or "local",
            num_cpus=local_cpus,
            include_dashboard=False,
            logging_level="ERROR",
            runtime_env=job_env,
        )
    quiet_ray_data()
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    if gpu_id is not None and gpu_id >= 0 and not gpus:
        raise SetupError(f"GPU {gpu_id} was asked for, but the Ray cluster has no GPU; drop the GPU option")
    use_gpu = gpus > 0 and gpu_id != -1
    count = actors or (gpus if use_gpu else max(cpus, 1))
    where = f"Ray at {address}" if address else ("Ray (running)" if not started else "local Ray")
    kind = "GPU" if use_gpu else "CPU"
    return Cluster(count, use_gpu, f"{where}, {count} {kind} actor(s)", started, actor_env)


def run_window(
    todo: List[Tuple[int, List[List[Text]]]],
    store: ShardStore,
    problems: InputProblems,
    cluster: Cluster,
    actor_args: dict,
    progress,
) -> None:
    """Shards through Ray Data: a row per predict batch; each shard is written as soon as it is whole."""
    import ray

    rows = [
        {"shard": shard, "index": i, "docs": json.dumps([[t.id, t.where, t.text] for t in batch], ensure_ascii=False)}
        for shard, batches in todo
        for i, batch in enumerate(batches)
    ]
    expected = {shard: len(batches) for shard, batches in todo}
    sizes = {shard: sum(len(b) for b in batches) for shard, batches in todo}
    resources = {"num_gpus": 1} if cluster.use_gpu else {"num_cpus": 1}
    if cluster.runtime_env:
        resources["runtime_env"] = cluster.runtime_env
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        PipelineActor,
        fn_constructor_kwargs=actor_args,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=cluster.actors),
        **resources,
    )
    got: Dict[int, Dict[int, str]] = {}
    results = dataset.iter_rows()
    try:
        for row in results:
            shard = int(row["shard"])
            got.setdefault(shard, {})[int(row["index"])] = row["results"]
            if len(got[shard]) == expected[shard]:
                store.write(shard, [got[shard][i] for i in range(expected[shard])], problems)
                progress.update(sizes[shard])
                del got[shard]
    finally:
        # Stop this window's execution and its actors now (an interrupt, an error): a rerun in the
        # same Ray must find the CPUs and GPUs free, not held by actors waiting for garbage collection.
        close = getattr(results, "close", None)
        if close is not None:
            close()


def run_shards(
    shards: Iterator[List[List[Text]]], store: ShardStore, problems: InputProblems, cluster: Cluster, actor_args: dict
) -> int:
    """Every shard complete on disk, the finished ones reused; returns the number of shards."""
    from tqdm import tqdm

    window = SHARDS_PER_ACTOR * cluster.actors
    todo: List[Tuple[int, List[List[Text]]]] = []
    total = 0
    with tqdm(unit="doc", desc="predict (ray)", leave=False, mininterval=2) as progress:
        for shard, batches in enumerate(shards):
            total += 1
            done = store.complete(shard)
            if done is not None:  # read again only to count the input problems: nothing is recomputed
                store.replay(done, problems)
                continue
            todo.append((shard, batches))
            if len(todo) == window:
                run_window(todo, store, problems, cluster, actor_args, progress)
                todo = []
        if todo:
            run_window(todo, store, problems, cluster, actor_args, progress)
    return total


def check_pipeline(model: Path, min_score: float, max_length: Optional[int]) -> Tuple[int, bool]:
    """Load the pipeline once in the driver to fail early and warn once, as predict does; returns the
    length limit and whether it scores. Freed at once: the actors hold the copies that work."""
    nlp = load_pipeline(model)
    reading = entity_reading(nlp, min_score)
    limit = max_length or nlp.max_length
    del nlp
    gc.collect()
    return limit, reading.spans_key is not None


def predict_ray(
    *,
    model: Path,
    source: Path,
    output: Path,
    iob_output: Optional[Path] = None,
    gpu_id: Optional[int] = None,
    batch_size: int = 64,
    lines: bool = False,
    max_length: Optional[int] = None,
    min_score: float = 0.0,
    batch_chars: int = BATCH_CHARS,
    actors: int = 0,
    shard_size: int = 10_240,
    address: Optional[str] = None,
    wheels: Sequence[Path] = (),
) -> dict:
    """predict(engine="ray"): the same outputs and counts as predict, computed by Ray actors."""
    check_settings(batch_size, max_length, min_score, batch_chars)
    if actors < 0 or shard_size < 1:
        raise SetupError("actors must be 0 (automatic) or more, and shard_size at least 1")
    shard_size = -(-shard_size // batch_size) * batch_size  # whole batches: the actors batch as predict
    limit, scored = check_pipeline(model, min_score, max_length)
    outputs = [output] + ([iob_output] if iob_output is not None else [])
    files = input_files(source, exclude=outputs)
    settings = {
        "batch_size": batch_size,
        "lines": lines,
        "limit": limit,
        "min_score": min_score,
        "batch_chars": batch_chars,
        "shard_size": shard_size,
        "iob": iob_output is not None,
    }
    store = ShardStore(shard_folder(output), fingerprint(files, model, settings))
    cluster = connect(address, actors, gpu_id, wheels)
    try:
        store.open()
        problems = InputProblems()
        texts = read_texts(files, problems, lines=lines, root=source if source.is_dir() else None)
        model_ref = str(model.resolve()) if model.is_dir() else str(model)
        actor_args = {
            "model": model_ref,
            "use_gpu": cluster.use_gpu,
            "batch_size": batch_size,
            "max_length": limit,
            "min_score": min_score,
            "iob": iob_output is not None,
            "batch_chars": batch_chars,
        }
        shards = run_shards(shards_of(texts, shard_size, batch_size), store, problems, cluster, actor_args)
    finally:
        if cluster.started_here:
            import ray

            ray.shutdown()
    try:
        counts = write_outputs(
            store.predictions(shards),
            output,
            iob_output,
            check=lambda c: check_something_read(c["documents"], source, problems, outputs),
        )
    except NothingRead:
        store.close()  # nothing to resume: every input was skipped
        raise
    store.close()
    return {
        **counts,
        "skipped": problems.count,
        "skipped_reasons": dict(problems.reasons),
        "device": cluster.description,
        "scored": scored,
        "min_score": min_score,
        "engine": "ray",
        "actors": cluster.actors,
        "shards": shards,
        "shards_reused": store.reused,
        "shards_computed": store.written,
    }
