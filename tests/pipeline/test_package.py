"""package: name and version checked before anything is built, a different model under an existing
name+version refused (unless forced), and a failed build leaves no half-built folder."""

import json
import os
import subprocess
import sys

import pytest
import spacy
from support.paths import ROOT

from iob_ner.pipeline import packaging as package
from iob_ner.pipeline.packaging import FINGERPRINT_FILE, package_pipeline
from iob_ner.util.errors import PackageError
from iob_ner.util.outputs import content_sha256

SCRIPT = ROOT / "scripts" / "package.py"
REFUSAL = "a different model: raise --vars.package_version or pass --vars.package_force true"


def tiny_pipeline(path, word):
    """A blank English pipeline whose entity_ruler finds `word`: two words, two different models."""
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns([{"label": "X", "pattern": word}])
    nlp.to_disk(path)
    return path


@pytest.fixture
def models(tmp_path):
    return tiny_pipeline(tmp_path / "model-a", "alpha"), tiny_pipeline(tmp_path / "model-b", "beta")


@pytest.fixture
def fake_build(monkeypatch):
    """Stand in for `spacy package` + `python -m build` (seconds each): a folder with a wheel, or a failure."""
    calls = []

    def build(*, model, staging, name, version, model_name):
        calls.append(model)
        folder = staging / f"{model_name}-{version}"
        (folder / "dist").mkdir(parents=True)
        (folder / "half-built").write_text("x")
        if model.name == "broken":
            raise PackageError("python -m build --wheel failed (exit status 1): boom", "boom")
        (folder / "dist" / f"{model_name}-{version}-py3-none-any.whl").write_text(str(model))
        return folder

    monkeypatch.setattr(package, "build_package", build)
    return calls


def run_script(*args):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "WASABI_LOG_FRIENDLY": "1"},
    )
    return result.returncode, " ".join((result.stdout + result.stderr).split())


@pytest.mark.parametrize(
    "option,value,sentence",
    [
        ("--version", "1.0 beta", "package version '1.0 beta' is not a PEP 440 version"),
        ("--version", "v1..2", "package version 'v1..2' is not a PEP 440 version"),
        ("--version", "1.0-beta", "not in its normal form: use '1.0b0'"),
        ("--name", "my model", "package name 'my model' is not usable"),
        ("--name", "1st", "package name '1st' is not usable"),
        ("--force", "maybe", "--force (--vars.package_force): expected true or false, not 'maybe'"),
    ],
)
def test_bad_name_or_version_fails_fast_and_builds_nothing(tmp_path, models, option, value, sentence):
    out = tmp_path / "packages"
    code, output = run_script(models[0], out, option, value)
    assert code == 1 and sentence in output and "Traceback" not in output, output
    assert not out.exists() or not list(out.iterdir())


def test_same_model_rebuilds_and_different_model_is_refused_unless_forced(tmp_path, models, fake_build):
    a, b = models
    out = tmp_path / "packages"
    wheel, status = package_pipeline(model=a, output_dir=out, name="tiny", version="0.1.0")
    folder = out / "en_tiny-0.1.0"
    assert status == "built" and wheel == folder / "dist" / "en_tiny-0.1.0-py3-none-any.whl"
    assert json.loads((folder / FINGERPRINT_FILE).read_text())["sha256"] == content_sha256(a)

    assert package_pipeline(model=a, output_dir=out, name="tiny", version="0.1.0")[1] == "unchanged model, rebuilt"
    with pytest.raises(PackageError) as refused:
        package_pipeline(model=b, output_dir=out, name="tiny", version="0.1.0")
    assert str(refused.value) == f"{folder} holds {REFUSAL}"
    assert len(fake_build) == 2  # refused before building anything
    assert wheel.read_text() == str(a)  # the package of model a is untouched

    assert package_pipeline(model=b, output_dir=out, name="tiny", version="0.1.0", force=True)[1].startswith("replaced")
    assert json.loads((folder / FINGERPRINT_FILE).read_text())["sha256"] == content_sha256(b)
    assert package_pipeline(model=b, output_dir=out, name="tiny", version="0.2.0")[1] == "built"
    assert sorted(p.name for p in out.iterdir()) == ["en_tiny-0.1.0", "en_tiny-0.2.0"]  # no staging left


def test_package_without_fingerprint_is_not_overwritten(tmp_path, models, fake_build):
    (tmp_path / "packages" / "en_tiny-0.1.0").mkdir(parents=True)
    with pytest.raises(PackageError, match="without a model fingerprint .* or pass --vars.package_force true"):
        package_pipeline(model=models[0], output_dir=tmp_path / "packages", name="tiny", version="0.1.0")


def test_failed_build_leaves_no_folder_and_keeps_the_previous_one(tmp_path, fake_build):
    out = tmp_path / "packages"
    broken = tiny_pipeline(tmp_path / "broken", "alpha")
    with pytest.raises(PackageError, match="failed"):
        package_pipeline(model=broken, output_dir=out, name="tiny", version="0.1.0")
    assert list(out.iterdir()) == []
    ok = tiny_pipeline(tmp_path / "ok", "alpha")  # the same files: the same fingerprint as `broken`
    package_pipeline(model=ok, output_dir=out, name="tiny", version="0.1.0")
    with pytest.raises(PackageError):
        package_pipeline(model=broken, output_dir=out, name="tiny", version="0.1.0")
    assert [p.name for p in out.iterdir()] == ["en_tiny-0.1.0"]
    assert (out / "en_tiny-0.1.0" / "dist" / "en_tiny-0.1.0-py3-none-any.whl").read_text() == str(ok)  # ok's build


def test_spacy_package_failure_is_one_sentence(tmp_path):
    """A folder that is no pipeline (meta.json but no config): spaCy's traceback becomes one sentence."""
    model = tmp_path / "not-a-pipeline"
    model.mkdir()
    (model / "meta.json").write_text('{"lang": "en", "name": "x", "version": "0.0.0"}')
    code, output = run_script(model, tmp_path / "packages", "--name", "tiny")
    assert code == 1 and "✘ spacy package failed (exit status 1): OSError: [E053] Could not read config" in output
    assert list((tmp_path / "packages").iterdir()) == []


@pytest.mark.slow
def test_real_build_makes_a_wheel_records_the_model_and_rebuilds(tmp_path, models):
    """Two real builds (spacy package + python -m build, several seconds each)."""
    out = tmp_path / "packages"
    code, output = run_script(models[0], out, "--name", "tiny", "--version", "0.1.0")
    assert code == 0, output
    folder = out / "en_tiny-0.1.0"
    assert list((folder / "dist").glob("en_tiny-0.1.0-*.whl"))
    assert (folder / "en_tiny" / "token_ner.py").exists()
    assert not any(r.startswith("iob-ner") for r in json.loads((folder / "meta.json").read_text())["requirements"])
    assert json.loads((folder / FINGERPRINT_FILE).read_text())["sha256"] == content_sha256(models[0])
    code, output = run_script(models[0], out, "--name", "tiny", "--version", "0.1.0")
    assert code == 0 and "unchanged model, rebuilt" in output, output
    code, output = run_script(models[1], out, "--name", "tiny", "--version", "0.1.0")
    assert code == 1 and f"{folder} holds {REFUSAL}" in output
    assert [p.name for p in out.iterdir()] == ["en_tiny-0.1.0"]
