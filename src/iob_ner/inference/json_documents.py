"""The one way user-supplied JSON is parsed (predict's JSONL lines, serve's request bodies): every failure,
deep nesting included, is a reason that names the problem, never an exception that ends the run."""

from __future__ import annotations

import json
from typing import Any, Tuple


class NotJson(ValueError):
    """A text that is not usable JSON; the message says why, with line and column where json gives them."""


def parse_json(text: str) -> Any:
    """The value of `text`, or NotJson. Python's parser recurses: 2 KB of [[[[...]]]] raise RecursionError,
    which is no parse error to `except ValueError`, and would end the run with a traceback."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise NotJson(f"not JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    except RecursionError:
        raise NotJson("not JSON that can be read: arrays or objects nested too deeply") from None


def parse_json_or_reason(text: str) -> Tuple[Any, str]:
    """(value, "") or (None, why)."""
    try:
        return parse_json(text), ""
    except NotJson as err:
        return None, str(err)
