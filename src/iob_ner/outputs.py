"""Outputs that appear whole or not at all: every command writes under a temporary name, then renames.

An error or a Ctrl-C while a command writes leaves the previous output in place, never a half-written
or empty file that looks like a result. Outputs that belong together (convert's train, dev, test and
split.json) are written inside `outputs_together()`: none replaces its predecessor before all are written.
"""

from __future__ import annotations

import hashlib
import shutil
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

PathLike = Union[str, Path]
# The (temporary, final) pairs of the innermost outputs_together() block, replaced when it ends well
_TOGETHER: ContextVar[Optional[List[Tuple[Path, Path]]]] = ContextVar("outputs_together", default=None)


def temporary_name(path: PathLike) -> Path:
    """The hidden name beside `path` that an output is written under before it is complete."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp")


def remove(path: PathLike) -> None:
    """Remove a file or a folder if it exists."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def replace(tmp: PathLike, final: PathLike) -> None:
    """Put `tmp` (a file or a folder) in the place of `final`.

    A file is replaced atomically (os.replace). A folder cannot be: the old one is first renamed aside,
    so at every moment `final` is either the old folder, briefly absent, or the new one, never a mix.
    """
    tmp, final = Path(tmp), Path(final)
    if tmp.is_dir() and final.exists():
        old = final.with_name(f".{final.name}.old")
        remove(old)
        final.rename(old)
        tmp.rename(final)
        remove(old)
    else:
        if final.is_dir():
            remove(final)
        tmp.replace(final)


@contextmanager
def atomic_outputs(*paths: PathLike) -> Iterator[List[Path]]:
    """Yield a temporary path for each output; all replace their outputs once the block succeeds.

    On any exception, KeyboardInterrupt included, the temporary paths are removed and the outputs are
    left as they were. A temporary path that the block did not create leaves its output untouched.
    """
    finals = [Path(p) for p in paths]
    temps = [temporary_name(p) for p in finals]
    for final, tmp in zip(finals, temps):
        final.parent.mkdir(parents=True, exist_ok=True)
        remove(tmp)
    try:
        yield temps
    except BaseException:
        for tmp in temps:
            remove(tmp)
        raise
    pending = _TOGETHER.get()
    for tmp, final in zip(temps, finals):
        if tmp.exists():
            if pending is None:
                replace(tmp, final)
            else:
                pending.append((tmp, final))


@contextmanager
def outputs_together() -> Iterator[None]:
    """Outputs written with atomic_outputs inside the block replace theirs only when the whole block succeeds.

    An error in the third of four outputs leaves all four as they were, so a corpus is never half this
    run's and half the last one's. The renames at the end are quick, but not one atomic step: a kill -9
    between two of them is the one way left to mix runs.
    """
    pending: List[Tuple[Path, Path]] = []
    token = _TOGETHER.set(pending)
    try:
        yield
    except BaseException:
        for tmp, _ in pending:
            remove(tmp)
        raise
    finally:
        _TOGETHER.reset(token)
    for tmp, final in pending:
        replace(tmp, final)


@contextmanager
def atomic_output(path: PathLike) -> Iterator[Path]:
    """`atomic_outputs` for one output."""
    with atomic_outputs(path) as (tmp,):
        yield tmp


def write_text_atomic(path: PathLike, text: str) -> None:
    """Write a UTF-8 text file whole or not at all."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf8")


def fingerprint(path: PathLike) -> str:
    """sha256 of a file's bytes, or over the relative paths and contents of every file of a folder (a model,
    a sharded corpus): what says that an input is still the one a result was made from."""
    path = Path(path)
    digest = hashlib.sha256()
    if not path.is_dir():
        _hash_file(path, digest)
        return digest.hexdigest()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode("utf8") + b"\0")
        _hash_file(file, digest)
        digest.update(b"\0")
    return digest.hexdigest()


def _hash_file(path: Path, digest) -> None:
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)


def check_outputs(
    source: Path, outputs: Sequence[Optional[Path]], names: Sequence[str] = (), folders: bool = False
) -> None:
    """The one check of output paths, before anything is read or written (convert, predict with either
    engine, review): no output is the input file, no two outputs are one file (JSONL and IOB would
    interleave), and no output is a folder unless `folders` (a sharded corpus is one). `names`: how each
    output is called in the message ("the --iob output")."""
    from .errors import SetupError

    given = [(path, names[i] if i < len(names) else "the output") for i, path in enumerate(outputs) if path is not None]
    seen: dict = {}
    for path, name in given:
        if path.is_dir() and not folders:
            raise SetupError(f"{name} {path} is a folder: give a file name")
        if source.is_file() and path.resolve() == source.resolve():
            raise SetupError(f"{name} {path} is the input file: it would be replaced (give the output another name)")
        if path.resolve() in seen:
            raise SetupError(f"{seen[path.resolve()]} and {name} are the same file {path}: give each its own name")
        seen[path.resolve()] = name
