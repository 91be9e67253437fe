"""Transformer and device selection fail with one sentence that says what to do."""

import pytest

from iob_ner.util.cli import parse_bool, parse_gpu_id
from iob_ner.util.runtime import EMBEDDED, SetupError, resolve_transformer, select_device


def test_embedded_model_resolves_to_a_local_folder():
    from pathlib import Path

    path = Path(resolve_transformer(EMBEDDED))
    assert (path / "config.json").exists() and (path / "tokenizer.json").exists()


def test_unknown_model_is_one_clear_sentence(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SetupError) as err:
        resolve_transformer("no-such-org/no-such-model")
    text = str(err.value)
    assert "cannot load the transformer 'no-such-org/no-such-model'" in text
    assert "--vars.transformer" in text and "\n" not in text


def test_local_folder_is_accepted(tmp_path):
    import shutil

    shutil.copytree(resolve_transformer(EMBEDDED), tmp_path / "model")
    assert resolve_transformer(str(tmp_path / "model")) == str((tmp_path / "model").resolve())


def test_gpu_ids():
    assert parse_gpu_id("auto", "") is None
    assert parse_gpu_id("auto", "1") == 1
    assert parse_gpu_id("0", "1") == 0
    assert parse_gpu_id("cpu") == -1
    with pytest.raises(SetupError, match="gpu_id must be"):
        parse_gpu_id("gpu0")


def test_asking_for_a_missing_gpu_says_so():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SetupError, match="GPU 0 was asked for, but torch sees no CUDA GPU"):
        select_device(0)
    gpu, description = select_device(None)
    assert gpu == -1 and description.startswith("CPU")


def test_parse_bool():
    assert parse_bool("True") is True and parse_bool("false") is False
    with pytest.raises(SetupError):
        parse_bool("maybe")
