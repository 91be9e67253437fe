"""A copy of the project (without what its commands generate), run with `spacy project run`."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from support.paths import ROOT

GENERATED = (
    "corpus",
    "training",
    "packages",
    "project.lock",
    ".git",
    ".pytest_cache",
    ".hypothesis",
    "__pycache__",
    "*.egg-info",
    ".venv",
    "venv",
    "build",
)


def copy_project(target: Path) -> Path:
    shutil.copytree(ROOT, target, ignore=shutil.ignore_patterns(*GENERATED))
    return target


def run_project(project: Path, *args: str, env=None) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "spacy", "project", "run", *args],
        cwd=project,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output
