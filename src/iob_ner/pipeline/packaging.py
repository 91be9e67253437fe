"""Building an installable package of a trained pipeline, the token_ner code included.

The package is built in a staging folder beside its destination and moved into place only once its wheel
exists: an error or a Ctrl-C leaves no half-built folder. The package folder records a fingerprint of the
model (sha256 over the model folder's files): rebuilding the same model is fine, but a different model under
a name and version that already exist is refused unless forced, because pip treats two wheels with one
name and version as the same release and would keep whichever it installed first.
"""

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Tuple

from packaging.version import InvalidVersion, Version
from thinc.api import Config

from ..util.errors import PackageError
from ..util.outputs import atomic_output, content_sha256, remove
from .layers.speedups import without_speedups

COMPONENT_CODE = Path(__file__).parent / "token_ner.py"  # self-contained: it imports nothing of this package
OWN_DISTRIBUTION = "iob-ner"  # this project: its component ships as code, not as a requirement
FINGERPRINT_FILE = "model-fingerprint.json"
# spaCy wants an identifier that is also a permitted distribution name; runs of "_" collapse in wheel names.
NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*")
TAIL_LINES = 10


def check_name_and_version(name: str, version: str) -> None:
    """Refuse what `spacy package` or `build` would reject only after creating a folder (or never)."""
    if not NAME.fullmatch(name):
        raise PackageError(
            f"package name {name!r} is not usable: use ASCII letters, digits and single "
            f"underscores, starting with a letter (--vars.package_name)"
        )
    try:
        normal = str(Version(version))
    except InvalidVersion:
        raise PackageError(
            f"package version {version!r} is not a PEP 440 version: use one like 0.1.0, "
            f"1.0b1 or 2.0.post1 (--vars.package_version)"
        ) from None
    # spaCy names the folder after the version as given, the wheel after its normal form: keep them one.
    if normal != version:
        raise PackageError(
            f"package version {version!r} is valid but not in its normal form: use {normal!r} (--vars.package_version)"
        )


def recorded_model_sha256(package_dir: Path) -> Optional[str]:
    try:
        return json.loads((package_dir / FINGERPRINT_FILE).read_text(encoding="utf8"))["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_step(command: List[str], what: str) -> None:
    """Run a build step quietly; its failure is one PackageError with the tail of its output."""
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        last = lines[-1].strip() if lines else "no output"
        raise PackageError(f"{what} failed (exit status {result.returncode}): {last}", "\n".join(lines[-TAIL_LINES:]))


def read_lang(model: Path) -> str:
    try:
        return json.loads((model / "meta.json").read_text(encoding="utf8"))["lang"]
    except (OSError, ValueError, KeyError, TypeError):
        raise PackageError(
            f'{model / "meta.json"} is missing or has no "lang": is {model} a trained '
            f"pipeline (`spacy project run train` writes training/model-best)?"
        ) from None


def build_package(*, model: Path, staging: Path, name: str, version: str, model_name: str) -> Path:
    """`spacy package --code token_ner.py` into `staging`, minus the requirement on this project and its
    architectures' names (spacy-transformers' own in their place: the same layers and weights), and its wheel."""
    run_step(
        [
            sys.executable,
            "-m",
            "spacy",
            "package",
            str(model),
            str(staging),
            "--name",
            name,
            "--version",
            version,
            "--code",
            str(COMPONENT_CODE),
            "--build",
            "none",
        ],
        "spacy package",
    )
    package_dir = staging / f"{model_name}-{version}"
    for config_path in package_dir.glob("**/config.cfg"):  # loads without this project: token_ner ships alone
        config = Config().from_disk(config_path, interpolate=False)
        without_speedups(config).to_disk(config_path)
    for meta_path in [package_dir / "meta.json", *package_dir.glob(f"{model_name}/meta.json")]:
        meta = json.loads(meta_path.read_text(encoding="utf8"))
        meta["requirements"] = [r for r in meta.get("requirements", []) if not re.match(rf"{OWN_DISTRIBUTION}\b", r)]
        meta_path.write_text(json.dumps(meta, indent=2), encoding="utf8")
    run_step([sys.executable, "-m", "build", "--wheel", "--no-isolation", str(package_dir)], "python -m build --wheel")
    if not list((package_dir / "dist").glob("*.whl")):
        raise PackageError(f"python -m build made no wheel in {package_dir / 'dist'}")
    return package_dir


def existing_status(final: Path, model_sha256: str, force: bool) -> str:
    """What rebuilding `final` means; a different model, unless forced, is a PackageError."""
    if not final.exists():
        return "built"
    recorded = recorded_model_sha256(final)
    if recorded == model_sha256:
        return "unchanged model, rebuilt"
    if not force:
        what = "a different model" if recorded else "a package without a model fingerprint (an older build)"
        raise PackageError(f"{final} holds {what}: raise --vars.package_version or pass --vars.package_force true")
    return "replaced a different model, as forced"


def package_pipeline(
    *, model: Path, output_dir: Path, name: str, version: str, force: bool = False
) -> Tuple[Path, str]:
    """Build `output_dir/<lang>_<name>-<version>` with its wheel; returns (wheel, what happened)."""
    check_name_and_version(name, version)
    lang = read_lang(model)
    model_name = name if name.startswith(f"{lang}_") else f"{lang}_{name}"  # as spaCy names it
    final = output_dir / f"{model_name}-{version}"
    model_sha256 = content_sha256(model)
    status = existing_status(final, model_sha256, force)
    output_dir.mkdir(parents=True, exist_ok=True)
    with atomic_output(final) as tmp:
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=output_dir))
        try:
            built = build_package(model=model, staging=staging, name=name, version=version, model_name=model_name)
            record = {"sha256": model_sha256, "model": str(model), "name": name, "version": version}
            (built / FINGERPRINT_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf8")
            built.rename(tmp)
        finally:
            remove(staging)
    return sorted((final / "dist").glob("*.whl"))[-1], status
