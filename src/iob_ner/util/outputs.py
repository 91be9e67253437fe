"""Outputs that appear whole or not at all: every command writes under a temporary name, then renames.

An error or a Ctrl-C while a command writes leaves the previous output in place, never a half-written
or empty file that looks like a result. Outputs that belong together (convert's train, dev, test and
split.json) are written inside `outputs_together()`: none replaces its predecessor before all are written.
Outputs that must replace theirs together even across a kill -9 (train's pipelines, log and calibration) go
through `replace_together`, whose record the next run finishes (`finish_replacing`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sys
import time
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

from wasabi import msg

from .errors import SetupError

PathLike = Union[str, Path]
# The (temporary, final) pairs of the innermost outputs_together() block, replaced when it ends well
_TOGETHER: ContextVar[Optional[List[Tuple[Path, Path]]]] = ContextVar("outputs_together", default=None)


def temporary_name(path: PathLike) -> Path:
    """The hidden name beside `path` that an output is written under before it is complete."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp")


def aside_name(path: PathLike) -> Path:
    """The hidden name that `replace` moves an old folder to while the new one takes its place."""
    path = Path(path)
    return path.with_name(f".{path.name}.old")


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
        old = aside_name(final)
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
    between two of them is the one way left to mix runs (`replace_together` closes it, with a record).
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


def replace_together(
    pairs: Sequence[Tuple[PathLike, PathLike]],
    record: PathLike,
    removed: Sequence[PathLike] = (),
    note: Optional[dict] = None,
) -> None:
    """Put each complete `tmp` of `pairs` in the place of its `final`, then remove `removed`, as one step that
    not even kill -9 splits.

    A record of what is to be done is written first (whole: `write_text_atomic`), then each `replace`, then
    each removal, and the record is removed last. A kill before the record is in place leaves every output
    as it was; a kill after it leaves the record, and `finish_replacing` (the next run, before anything
    else) carries it out to the end: the outputs are then all the new ones, never a mix, and no `.old`
    folder is left. Each step can be done again after a kill (a `tmp` already moved is skipped). `note`
    (JSON) is kept in the record for the run that finishes it. A `tmp` that does not exist is left out.
    """
    record = Path(record)
    base = record.parent.absolute()
    data = {
        "replace": [[_relative(tmp, base), _relative(final, base)] for tmp, final in pairs if Path(tmp).exists()],
        "remove": [_relative(path, base) for path in removed],
        "note": note or {},
    }
    write_text_atomic(record, json.dumps(data, indent=1))
    _carry_out(record, data)


def finish_replacing(record: PathLike) -> Optional[dict]:
    """Finish what a killed `replace_together` with this `record` began; return its `note`, or None where
    there was nothing to finish (no record: the outputs are as they were before it, or it had finished)."""
    record = Path(record)
    remove(temporary_name(record))  # killed while the record was written: nothing was replaced yet
    if not record.is_file():
        return None
    try:
        data = json.loads(record.read_text(encoding="utf8"))
        if not isinstance(data, dict) or not isinstance(data.get("replace"), list):
            raise ValueError("it lists no replacements")
    except (ValueError, UnicodeDecodeError) as err:
        raise SetupError(
            f"{record}, the record of outputs being replaced, is damaged ({err}): delete it and run the command again"
        ) from None
    _carry_out(record, data)
    return data.get("note") or {}


def _relative(path: PathLike, base: Path) -> str:
    """`path` relative to the record's folder: the record still holds if the project folder is moved."""
    return os.path.relpath(Path(path).absolute(), base)


def _carry_out(record: Path, data: dict) -> None:
    base = record.parent
    for tmp, final in ((base / tmp, base / final) for tmp, final in data["replace"]):
        if tmp.exists() or tmp.is_symlink():  # else already in place, before a kill
            final.parent.mkdir(parents=True, exist_ok=True)
            replace(tmp, final)
        remove(aside_name(final))  # a kill inside `replace` leaves the old folder here
    for path in data.get("remove", ()):
        remove(base / path)
    record.unlink()


@contextmanager
def atomic_output(path: PathLike) -> Iterator[Path]:
    """`atomic_outputs` for one output."""
    with atomic_outputs(path) as (tmp,):
        yield tmp


def write_text_atomic(path: PathLike, text: str) -> None:
    """Write a UTF-8 text file whole or not at all."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf8")


@contextmanager
def one_run_at_a_time(folder: PathLike, command: str) -> Iterator[Path]:
    """Hold `folder/.COMMAND.lock` while the block runs: a second run of `command` on the same folder is
    refused in one sentence (a SetupError) that names the running one's pid, host and start.

    The lock is the kernel's (fcntl.flock on the file): it ends with the process that holds it, whatever
    ends that (normal end, error, Ctrl-C, kill -9), so a lock left by a killed run is never an obstacle; the
    file it leaves (pid, host, start, command line) is taken over with a one-line note. Normal ends remove
    the file. Where the file system cannot lock (fcntl missing, ENOLCK) the block runs unlocked, said in one
    line.
    """
    path = Path(folder) / f".{command}.lock"
    created = not path.parent.exists()  # removed again if the block leaves it empty (a refused config)
    fd = _lock(path, command)
    if fd is None:
        yield path
        return
    try:
        if os.fstat(fd).st_size:
            holder = _lock_holder(fd)
            msg.warn(
                f"Taking over {path}: the {command} run that held it ({holder}) ended without removing it (killed?)"
            )
        os.ftruncate(fd, 0)
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": started, "command": sys.argv}
        os.pwrite(fd, json.dumps(holder).encode("utf8"), 0)
        yield path
    finally:
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                path.unlink()
        except FileNotFoundError:
            pass
        os.close(fd)  # releases the lock
        if created and not any(path.parent.iterdir()):
            try:
                path.parent.rmdir()
            except OSError:  # another run's file came meanwhile
                pass


def _lock(path: Path, command: str) -> Optional[int]:
    """An open descriptor of `path` holding its exclusive flock; None where the system cannot lock."""
    try:  # imported here: fcntl exists on POSIX systems only, and without it the block runs unlocked
        import fcntl
    except ImportError:  # not a POSIX system
        return None
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # the folder, empty, was removed by a run that ended meanwhile
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            os.close(fd)
            raise SetupError(
                f"{path.parent} is in use by another {command} run ({holder}): wait for it to end, or stop it "
                f"(Ctrl-C, or kill its pid) and run the command again, which goes on from where it stopped"
            ) from None
        except OSError as err:
            os.close(fd)
            msg.warn(f"{path} cannot be locked on this file system ({err.strerror}): two runs are not kept apart")
            return None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # its holder ended and removed the file between our open and lock: lock the new one


def _lock_holder(fd: int) -> str:
    """Who holds (or held) a lock file, as its content says: "pid 123 on host, started ..."."""
    try:
        data = json.loads(os.pread(fd, 1 << 16, 0).decode("utf8"))
        return f"pid {data['pid']} on {data['host']}, started {data['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "its pid not yet written"


def content_sha256(path: PathLike) -> str:
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
