"""Serving: the HTTP application (`app`, needs requirements-serve.txt), loading a pipeline into it
(`server`), the server in a process of its own that Ctrl-C under `spacy project run` cannot kill
(`session`), and the load test that measures it on loopback (`loadtest`). This module imports nothing heavy,
so that `serve` can say what to install before anything else loads."""

import importlib

LOOPBACK = "127.0.0.1"
SERVING_STACK = ("uvicorn", "fastapi", "fastapi_offline")


def serving_stack_missing() -> str:
    """ "" when the serving stack is installed, else the one line that says what to install."""
    for name in SERVING_STACK:
        try:
            importlib.import_module(name)
        except ImportError as err:
            return f"serving needs {err.name or name}: pip install -r requirements-serve.txt"
    return ""
