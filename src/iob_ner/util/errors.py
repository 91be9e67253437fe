"""Every error a user can fix, in one place: what each kind means, and the one base class they share.

A `UserError`'s message is one sentence that names the file (and line, where there is one) and says what to
change. The commands turn it into one `msg.fail` line (`iob_ner.util.cli.user_errors`), never a traceback;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A problem the user fixes by changing an input or a setting; the message says which and how."""


class SetupError(UserError, RuntimeError):
    """A setting, a missing install or a device that cannot do what was asked."""


class IobError(UserError, ValueError):
    """Bad IOB input, located: `str(err)` reads `path:line: message`."""

    def __init__(self, path: Path | str, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path, self.line, self.message = str(path), line, message


class CorpusError(UserError, ValueError):
    """A file that reads without error but cannot serve its purpose (a training file without entities)."""


class SplitError(UserError, ValueError):
    """A split that cannot be made as asked; the message says what to change."""


class CheckpointError(UserError, ValueError):
    """A damaged training checkpoint; the message names the damaged file and says how to start over."""


class ConfigFileError(UserError, ValueError):
    """A config file that cannot be read; the message names the file and the parse error."""


class DataError(UserError):
    """A corpus that `debug-data` cannot check; the message names the file."""


class ReportError(UserError):
    """A missing or stale input of `report`; the message names the file and the command that makes it."""


class PackageError(UserError):
    """A pipeline that cannot be packaged; `detail` holds the tail of a failed command's output."""

    def __init__(self, sentence: str, detail: str = "") -> None:
        super().__init__(sentence)
        self.detail = detail


def first_line(err: BaseException, limit: int = 200) -> str:
    """An exception's first line, short enough for a one-line message."""
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def not_utf8_hint(head: bytes) -> str:
    """What a file that is not UTF-8 probably is, from its first bytes, as advice ("" when unrecognised).

    UTF-16 (Windows' "Unicode" in Notepad and Excel) starts with a byte-order mark or, for Latin text, has a
    zero byte in every other position.
    """
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or (len(head) >= 8 and head.count(0) >= len(head) // 4):
        return "; it looks like UTF-16: save it as UTF-8 (e.g. iconv -f UTF-16 -t UTF-8 FILE > NEW)"
    return ""
