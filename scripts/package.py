"""Build an installable package of a trained pipeline, the token_ner code included."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import typer
from wasabi import msg

COMPONENT_CODE = Path(__file__).parent / "iob_ner" / "token_ner.py"
OWN_DISTRIBUTION = "iob-ner"  # this project: its component ships as code, not as a requirement


def package_pipeline(*, model: Path, output_dir: Path, name: str, version: str) -> Path:
    """`spacy package --code token_ner.py`, minus the requirement on this project, built as a wheel."""
    output_dir.mkdir(parents=True, exist_ok=True)
    lang = json.loads((model / "meta.json").read_text(encoding="utf8"))["lang"]
    package_dir = output_dir / f"{lang}_{name}-{version}"
    if package_dir.exists():
        shutil.rmtree(package_dir)
    subprocess.run([sys.executable, "-m", "spacy", "package", str(model), str(output_dir), "--name", name,
                    "--version", version, "--code", str(COMPONENT_CODE), "--build", "none", "--force"], check=True)
    for meta_path in [package_dir / "meta.json", *package_dir.glob(f"{lang}_{name}/meta.json")]:
        meta = json.loads(meta_path.read_text(encoding="utf8"))
        meta["requirements"] = [r for r in meta.get("requirements", []) if not re.match(rf"{OWN_DISTRIBUTION}\b", r)]
        meta_path.write_text(json.dumps(meta, indent=2), encoding="utf8")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", str(package_dir)], check=True,
                   stdout=subprocess.DEVNULL)
    wheels = sorted((package_dir / "dist").glob("*.whl"))
    if not wheels:
        raise RuntimeError(f"no wheel was built in {package_dir / 'dist'}")
    return wheels[-1]


def main(
    model: Path = typer.Argument(..., exists=True, file_okay=False),
    output_dir: Path = typer.Argument(...),
    name: str = typer.Option("ner_model"),
    version: str = typer.Option("0.1.0"),
) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        msg.fail(f"package name {name!r}: use letters, digits and underscores only", exits=1)
    wheel = package_pipeline(model=model, output_dir=output_dir, name=name, version=version)
    msg.good(f"Built {wheel}: pip install {wheel}, then spacy.load(\"{wheel.name.split('-')[0]}\")")


if __name__ == "__main__":
    typer.run(main)
