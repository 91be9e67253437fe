"""create-config: a complete config from the base, and a user's edits are never overwritten."""
from spacy.util import load_config

from conftest import ROOT
from iob_ner.config_file import was_edited, write_config

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
    assert write_config(BASE, out, "transition") == "kept"
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
