"""The Ray engine's finished shards on disk, and the signature that keeps a changed input from reusing them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Sequence

import spacy
from wasabi import msg

from ...util.outputs import atomic_output, remove, write_text_atomic
from ..inputs import InputProblems, Text
from ..pipeline import Prediction
from .actor import Skip, from_result


@dataclass
class ShardStore:
    """Finished shards: shard-NNNNN.jsonl (a result a line) written whole, then shard-NNNNN.done (its
    document count, size and skips). A shard is complete when both exist and agree; manifest.json holds
    the stat signature of the input, pipeline and settings, so a changed one never reuses stale shards."""

    folder: Path
    signature: str
    reused: int = 0
    written: int = 0

    def open(self) -> None:
        manifest = self.folder / "manifest.json"
        if manifest.exists():
            try:
                # why "fingerprint": the manifest's key since the first release, so that shards left by an
                # earlier version are still recognised
                same = json.loads(manifest.read_text(encoding="utf8")).get("fingerprint") == self.signature
            except ValueError:
                same = False
            if not same:
                msg.warn(f"{self.folder} holds shards of another input, pipeline or setting: starting over")
                remove(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(manifest, json.dumps({"fingerprint": self.signature}) + "\n")

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


def stat_signature(files: Sequence[Path], model: Path, settings: dict) -> str:
    """A digest of what decides the outputs: the input files and the pipeline (by path, size and
    modification time, not content: cheap on terabytes) and the settings."""

    def stat(path: Path) -> list:
        info = path.stat()
        return [str(path.resolve()), info.st_size, info.st_mtime_ns]

    if model.is_dir():
        pipeline = [stat(p) for p in sorted(model.rglob("*")) if p.is_file()]
    else:
        pipeline = [str(model), spacy.util.get_package_version(str(model))]
    state = {"inputs": [stat(p) for p in files], "pipeline": pipeline, "settings": settings}
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode("utf8")).hexdigest()


def shard_folder(output: Path) -> Path:
    """Hidden, beside the output: never read back as input from a folder (input_files skips hidden names)."""
    return output.with_name(f".{output.name}.shards")


def shards_of(texts: Iterable[Text], shard_size: int, batch_size: int) -> Iterator[List[List[Text]]]:
    """Consecutive shards of `shard_size` documents, each cut into predict's batches of `batch_size`."""
    texts = iter(texts)
    while True:
        shard = list(islice(texts, shard_size))
        if not shard:
            return
        yield [shard[i : i + batch_size] for i in range(0, len(shard), batch_size)]
