"""Run a trained pipeline on new text: .txt files, a folder of them, or JSONL ({"text": ...} per line).

Writes JSONL (one document a line: id, text, entities with characters offsets) and, optionally, an IOB
.tsv in the UBIAI export shape for re-import into an annotation tool. Streams: memory stays bounded.
"""
import json
from pathlib import Path
from typing import IO, Iterator, List, Optional, Tuple

import spacy
import typer
from spacy.tokens import Doc
from wasabi import msg

from iob_ner.iob import write_iob
from iob_ner.runtime import SetupError, parse_gpu_id, select_device


class InputProblems:
    """Bad input lines: reported with file and line, skipped, counted."""

    def __init__(self) -> None:
        self.count = 0

    def skip(self, where: str, why: str) -> None:
        self.count += 1
        msg.warn(f"{where}: skipped, {why}")


def read_texts(source: Path, problems: InputProblems, *, lines: bool = False) -> Iterator[Tuple[str, str]]:
    """(id, text) pairs from a .jsonl file, a .txt file, or a folder of .txt/.jsonl files, lazily."""
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.suffix in (".txt", ".jsonl") and p.is_file())
        if not files:
            raise SetupError(f"{source} holds no .txt or .jsonl files")
    else:
        files = [source]
    for path in files:
        if path.suffix == ".jsonl":
            yield from _read_jsonl(path, problems)
        elif lines:
            with path.open(encoding="utf-8-sig") as f:
                for lineno, line in enumerate(f, 1):
                    if line.strip():
                        yield f"{path.name}:{lineno}", line.rstrip("\r\n")
        else:
            text = path.read_text(encoding="utf-8-sig")
            if text.strip():
                yield path.name, text
            else:
                problems.skip(str(path), "the file is empty")


def _read_jsonl(path: Path, problems: InputProblems) -> Iterator[Tuple[str, str]]:
    with path.open(encoding="utf-8-sig", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                problems.skip(where, f"not JSON ({err.msg})")
                continue
            text = record.get("text") if isinstance(record, dict) else None
            if not isinstance(text, str):
                problems.skip(where, 'no "text" string')
                continue
            yield str(record.get("id", f"{path.name}:{lineno}")), text


def doc_record(doc_id: str, doc: Doc) -> dict:
    return {"id": doc_id, "text": doc.text, "entities": [
        {"text": ent.text, "label": ent.label_, "start": ent.start_char, "end": ent.end_char} for ent in doc.ents]}


def iob_document(doc: Doc) -> Tuple[List[str], List[Tuple[int, int, str]], List[int]]:
    """Words and entity spans without whitespace tokens, which IOB lines cannot hold."""
    keep = [i for i, token in enumerate(doc) if not token.is_space]
    index = {old: new for new, old in enumerate(keep)}
    spans = []
    for ent in doc.ents:
        inside = [index[i] for i in range(ent.start, ent.end) if i in index]
        if inside:
            spans.append((inside[0], inside[-1] + 1, ent.label_))
    return [doc[i].text for i in keep], spans, [0]


def predict(*, model: Path, source: Path, output: Path, iob_output: Optional[Path] = None,
            gpu_id: Optional[int] = -1, batch_size: int = 64, lines: bool = False) -> dict:
    _, device = select_device(gpu_id)
    nlp = spacy.load(model)
    problems = InputProblems()
    counts = {"documents": 0, "entities": 0}
    output.parent.mkdir(parents=True, exist_ok=True)
    from tqdm import tqdm

    def iob_documents(out: IO[str]) -> Iterator[Tuple[List[str], List[Tuple[int, int, str]], List[int]]]:
        """Write each document's JSONL line; yield its IOB form for write_iob."""
        pairs = ((text, doc_id) for doc_id, text in read_texts(source, problems, lines=lines))
        for doc, doc_id in tqdm(nlp.pipe(pairs, as_tuples=True, batch_size=batch_size), unit="doc", desc="predict",
                                leave=False, mininterval=2):
            out.write(json.dumps(doc_record(doc_id, doc), ensure_ascii=False) + "\n")
            counts["documents"] += 1
            counts["entities"] += len(doc.ents)
            words, spans, starts = iob_document(doc)
            if words:
                yield words, spans, starts

    with output.open("w", encoding="utf8") as out:
        if iob_output is None:
            for _ in iob_documents(out):
                pass
        else:
            with iob_output.open("w", encoding="utf8", newline="") as iob_file:
                write_iob(iob_file, iob_documents(out))
    return {**counts, "skipped": problems.count, "device": device}


def main(
    model: Path = typer.Argument(..., exists=True, file_okay=False),
    source: Path = typer.Argument(..., exists=True, help=".txt file, .jsonl file, or a folder of them"),
    output: Path = typer.Argument(..., help="JSONL output"),
    iob: Optional[Path] = typer.Option(None, help="Also write an IOB .tsv (UBIAI export shape)"),
    gpu_id: str = typer.Option("cpu", help="GPU id, 'cpu' or 'auto'"),
    batch_size: int = typer.Option(64),
    lines: bool = typer.Option(False, "--lines", help="Each line of a .txt file is one document"),
) -> None:
    try:
        result = predict(model=model, source=source, output=output, iob_output=iob, gpu_id=parse_gpu_id(gpu_id),
                         batch_size=batch_size, lines=lines)
    except SetupError as err:
        msg.fail(str(err), exits=1)
    msg.good(f"{result['documents']} documents, {result['entities']} entities, {result['skipped']} input "
             f"line(s) skipped, on {result['device']} -> {output}" + (f", {iob}" if iob else ""))


if __name__ == "__main__":
    typer.run(main)
