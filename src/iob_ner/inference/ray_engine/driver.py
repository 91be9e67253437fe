"""The Ray engine's driver: `predict_ray` reads the input as predict does, sends windows of shards through
Ray Data, writes each finished shard, and concatenates them through predict's own writer."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from tqdm import tqdm

from ...util.errors import SetupError
from ..inputs import InputProblems, NothingRead, Text, check_something_read, input_files, read_texts
from ..pipeline import BATCH_CHARS, check_settings, entity_reading, load_pipeline
from ..writers import write_outputs
from .actor import PipelineActor
from .cluster import Cluster, connect
from .shards import ShardStore, shard_folder, shards_of, stat_signature

SHARDS_PER_ACTOR = 4  # shards in flight per actor: enough to keep each busy, few enough to bound memory


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
    store = ShardStore(shard_folder(output), stat_signature(files, model, settings))
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
