"""create-config: a complete config from the base, and a user's edits are never overwritten."""

import importlib.util
import os
import subprocess
import sys

import pytest
from spacy.util import load_config, load_config_from_str
from support.paths import ROOT

from iob_ner.training.config_file import ConfigFileError, parse_error_line, was_edited, write_config

BASE = ROOT / "configs" / "base_config.cfg"


def test_generated_config_is_complete_and_marked(tmp_path):
    out = tmp_path / "config.cfg"
    assert write_config(BASE, out, "token") == "written"
    config = load_config(out)
    assert config["components"]["ner"]["factory"] == "token_ner"
    assert config["corpora"]["train"]["max_length"] == 0
    assert "frozen_components" in config["training"]  # filled in by spacy init fill-config
    assert not was_edited(out)
    assert write_config(BASE, out, "token") == "unchanged"


def test_edited_config_is_kept_unless_forced(tmp_path):
    out = tmp_path / "config.cfg"
    write_config(BASE, out, "token")
    edited = out.read_text(encoding="utf8").replace("dropout = 0.1", "dropout = 0.2")
    out.write_text(edited, encoding="utf8")
    assert was_edited(out)
    assert write_config(BASE, out, "token") == "kept"
    assert out.read_text(encoding="utf8") == edited
    with pytest.raises(ConfigFileError, match="has the token head in \\[components.ner\\], not the transition head"):
        write_config(BASE, out, "transition")  # kept, it would train the head not asked for
    assert out.read_text(encoding="utf8") == edited
    assert write_config(BASE, out, "transition", force=True) == "written"
    assert load_config(out)["components"]["ner"]["factory"] == "ner"


def test_hand_written_config_without_header_is_kept(tmp_path):
    out = tmp_path / "config.cfg"
    out.write_text((ROOT / "configs" / "base_config.cfg").read_text(encoding="utf8"), encoding="utf8")
    assert write_config(BASE, out, "token") == "kept"


def test_committed_config_is_what_create_config_writes(tmp_path):
    """configs/config.cfg in the repository is the generated one, unedited."""
    committed = ROOT / "configs" / "config.cfg"
    assert not was_edited(committed)
    assert write_config(BASE, tmp_path / "config.cfg", "token") == "written"
    assert (tmp_path / "config.cfg").read_text(encoding="utf8") == committed.read_text(encoding="utf8")


# --- A broken base config is one sentence naming the file; config.cfg is written whole or not at all ---


def broken_copy(tmp_path, old, new):
    base = tmp_path / "base_config.cfg"
    text = BASE.read_text(encoding="utf8")
    assert old in text
    base.write_text(text.replace(old, new, 1), encoding="utf8")
    (tmp_path / "ner_transition.cfg").write_text((ROOT / "configs" / "ner_transition.cfg").read_text(encoding="utf8"))
    return base


@pytest.mark.parametrize(
    "old,new,first_line",
    [
        ("[nlp]", "[nlp", "Source contains parsing errors: the file (line "),
        ("rate = 800", "rate = 800\nrate = 3", "option 'rate' in section 'training.batcher.size' already exists"),
        ("path = ${paths.train}", "path = ${paths.nope}", "contains an interpolation key 'paths.nope'"),
    ],
)
def test_broken_base_config_is_one_sentence_and_keeps_the_output(tmp_path, old, new, first_line):
    base = broken_copy(tmp_path, old, new)
    out = tmp_path / "config.cfg"
    out.write_text("previous\n", encoding="utf8")
    with pytest.raises(ConfigFileError) as err:
        write_config(base, out, "token", force=True)
    message = str(err.value)
    assert message.startswith(f"{base} is not a valid config: ") and first_line in message
    assert "\n" not in message
    assert out.read_text(encoding="utf8") == "previous\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_parse_error_line_of_the_first_bad_line():
    with pytest.raises(Exception) as err:
        load_config_from_str("[a]\nx = 1\n[b\ny = 2\n")
    assert parse_error_line(err.value) == "Source contains parsing errors: the file (line 3)"


def test_unknown_factory_is_spacys_first_sentence(tmp_path):
    base = broken_copy(tmp_path, 'factory = "token_ner"', 'factory = "nope_ner"')
    first_sentence = r"\[E002\] Can't find factory for 'nope_ner' for language English \(en\)\.$"
    with pytest.raises(ConfigFileError, match=r"spacy init fill-config cannot fill .*: " + first_sentence):
        write_config(base, tmp_path / "config.cfg", "token")
    assert not (tmp_path / "config.cfg").exists()


def test_cli_broken_base_config_is_one_sentence(tmp_path):
    base = broken_copy(tmp_path, "[nlp]", "[nlp")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "create_config.py"), str(base), str(tmp_path / "config.cfg")],
        capture_output=True,
        text=True,
        env={**os.environ, "WASABI_LOG_FRIENDLY": "1"},
    )
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 1 and "Traceback" not in output, output
    line = BASE.read_text(encoding="utf8").splitlines().index("[nlp]") + 1
    assert f"✘ {base} is not a valid config: Source contains parsing errors: the file (line {line})" in output


# --- The pipeline's language (--vars.lang) reaches [nlp] lang, and with it spaCy's tokenizer for raw text ---


def test_lang_makes_the_pipeline_of_that_language_with_its_own_tokenizer(tmp_path):
    out = tmp_path / "config.cfg"
    assert write_config(BASE, out, "token", lang="zh") == "written"
    config = load_config(out)
    assert config["nlp"]["lang"] == "zh"
    assert config["nlp"]["tokenizer"] == {"@tokenizers": "spacy.zh.ChineseTokenizer", "segmenter": "char"}
    assert write_config(BASE, out, "token", lang="zh") == "unchanged"
    assert write_config(BASE, out, "token", lang="de") == "written"  # unedited: regenerated for the new language
    assert load_config(out)["nlp"]["lang"] == "de"


def test_an_edited_config_of_another_language_is_refused_and_a_missing_package_named(tmp_path):
    from iob_ner.util.errors import SetupError

    out = tmp_path / "config.cfg"
    write_config(BASE, out, "token", lang="de")
    out.write_text(out.read_text(encoding="utf8").replace("dropout = 0.1", "dropout = 0.2"), encoding="utf8")
    assert write_config(BASE, out, "token", lang="de") == "kept"
    with pytest.raises(ConfigFileError, match="has lang = 'de' in \\[nlp\\], not the 'en' that lang asks for"):
        write_config(BASE, out, "token", lang="en")
    with pytest.raises(SetupError, match="'ja' tokenizer needs a package that is not installed: .*SudachiPy"):
        write_config(BASE, tmp_path / "ja.cfg", "token", lang="ja")
    assert not (tmp_path / "ja.cfg").exists()


@pytest.mark.skipif(importlib.util.find_spec("spacy_pkuseg") is not None, reason="spacy-pkuseg is installed here")
def test_a_chinese_word_segmenter_without_its_package_is_one_sentence_before_training(tmp_path):
    from iob_ner.training.config_file import check_pipeline

    out = tmp_path / "config.cfg"
    write_config(BASE, out, "token", lang="zh")
    check_pipeline(out, {})  # characters: no package
    out.write_text(
        out.read_text(encoding="utf8").replace('segmenter = "char"', 'segmenter = "pkuseg"'), encoding="utf8"
    )
    with pytest.raises(
        ConfigFileError, match='segmenter = "pkuseg" in \\[nlp.tokenizer\\] needs the spacy-pkuseg package'
    ):
        check_pipeline(out, {})
