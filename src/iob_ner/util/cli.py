"""What every command script shares: user errors as one `msg.fail` line, Ctrl-C as exit code 130.

The commands in scripts/ are thin: they parse options with Typer, call one library function inside
`user_errors()`, and print its result. Library functions stay quiet about failures: they raise a
`UserError` (iob_ner.util.errors) and this is the one place that turns it into a message.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional, Tuple, Type

from wasabi import msg

from .errors import SetupError, UserError, first_line

INTERRUPTED = 130  # the shell's exit code for Ctrl-C


@contextmanager
def user_errors(*also: Type[BaseException], prefix: str = "", interrupted: Optional[str] = None) -> Iterator[None]:
    """Run a command's work: a UserError (and the exception types in `also`, such as OSError) becomes one
    `msg.fail` line and exit code 1; Ctrl-C exits with 130, after `interrupted` where it is given (a command
    that prints its own Ctrl-C line passes None)."""
    caught: Tuple[Type[BaseException], ...] = (UserError, *also)
    try:
        yield
    except caught as err:
        detail = getattr(err, "detail", "")
        if detail:
            print(detail)  # as the failed tool wrote it: wasabi would re-wrap a traceback
        text = str(err) if isinstance(err, UserError) else first_line(err)
        msg.fail(f"{prefix}{text}", exits=1)
    except KeyboardInterrupt:
        if interrupted:
            msg.fail(interrupted, exits=INTERRUPTED)
        raise SystemExit(INTERRUPTED) from None


def print_read_report(report: "ReadReport") -> None:
    """What the converter read and repaired in one IOB file (convert and convert-file print it)."""
    msg.table(
        [
            ("documents", report.documents),
            ("sentences", report.sentences),
            ("tokens", report.tokens),
            ("longest document (tokens)", report.longest_document),
            ("scheme", report.scheme),
            ("separator", f"{report.separator}, {report.columns} columns"),
            ("encoding", "UTF-8 with BOM" if report.bom else "UTF-8"),
            ("line endings", report.line_endings),
        ],
        header=("", Path(report.path).name),
        divider=True,
    )
    entities = sorted(report.entities.items(), key=lambda item: -item[1])
    msg.table(entities + [("total", sum(report.entities.values()))], header=("label", "entities"), divider=True)
    for repair in report.repairs.values():
        lines = ", ".join(map(str, repair["lines"]))
        msg.warn(f"repaired {repair['count']}x: {repair['what']} (first lines: {lines})")
    for note in report.notes:
        msg.info(note)


if TYPE_CHECKING:  # the IOB reader pulls in spaCy: not needed to print a report
    from ..iob.report import ReadReport


# -- the options every command shares (light: the command that starts serve imports no torch) ----------


def parse_gpu_id(value: Optional[str], env_value: Optional[str] = None) -> Optional[int]:
    """The GPU asked for: an int >= 0, -1 for the CPU, or None for 'a GPU if there is one'."""
    for raw in (value, env_value):
        text = (raw or "").strip().lower()
        if text in ("", "auto", "none"):
            continue
        if text in ("cpu",):
            return -1
        try:
            return int(text)
        except ValueError:
            raise SetupError(f"gpu_id must be a number, 'cpu' or 'auto', not {raw!r}") from None
    return None


def gpu_id_option(gpu_id: Optional[int]) -> str:
    """parse_gpu_id's result as a --gpu-id option again, for a command started as a child process."""
    return "auto" if gpu_id is None else "cpu" if gpu_id < 0 else str(gpu_id)


def parse_bool(value: str) -> bool:
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise SetupError(f"expected true or false, not {value!r}")
