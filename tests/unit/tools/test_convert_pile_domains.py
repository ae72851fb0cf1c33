"""tools/convert_pile.py --domains @FILE, and the shipped list of DRAW's 17 Pile domains."""

import json
import os

import pytest

from draw_megatron.data.manifest import Manifest
from draw_megatron.data.pile import PILE_EPOCHS
from tests.unit.tools.conftest import REPO, load_tool

EXCLUDED = {"Books3", "OpenWebText2", "OpenSubtitles", "BookCorpus2", "YoutubeSubtitles"}


@pytest.fixture(scope="module")
def tool():
    return load_tool("convert_pile")


def _corpus(path, domains):
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(6):
            for d in domains:
                fh.write(json.dumps({"text": f"document {i} of {d}. " * 4,
                                     "meta": {"pile_set_name": d}}) + "\n")
    return str(path)


def test_pile17_is_every_component_but_the_five_copyrighted(tool):
    names, files = tool.expand_domains(["@" + os.path.join(REPO, "configs", "data", "pile17.txt")])
    assert len(names) == 17 and len(files) == 1
    assert set(names) == set(PILE_EPOCHS) - EXCLUDED  # the exact pile_set_name spellings


def test_at_file_selects_its_domains(tool, demo_tokenizer_path, tmp_path):
    src = _corpus(tmp_path / "a.jsonl", ["Wikipedia (en)", "DM Mathematics", "Github"])
    names = tmp_path / "names.txt"
    names.write_text("# two of three\n\nWikipedia (en)\n  DM Mathematics  \n")
    out = tmp_path / "o"
    rc = tool.main(["--split", f"train={src}", "--tokenizer", demo_tokenizer_path,
                    "--seq-len", "8", "--out", str(out), "--domains", f"@{names}"])
    assert rc == 0
    assert sorted(Manifest.load(str(out)).domain_names) == ["DM Mathematics", "Wikipedia (en)"]
    # a file and a plain name together
    assert tool.expand_domains([f"@{names}", "Github"])[0] == [
        "Wikipedia (en)", "DM Mathematics", "Github"]


def test_unknown_name_in_the_file_is_named(tool, demo_tokenizer_path, tmp_path, capsys):
    src = _corpus(tmp_path / "a.jsonl", ["Wikipedia (en)", "Github"])
    names = tmp_path / "names.txt"
    names.write_text("Wikipedia (en)\nWikipedia\n")
    rc = tool.main(["--split", f"train={src}", "--tokenizer", demo_tokenizer_path,
                    "--seq-len", "8", "--out", str(tmp_path / "o"), "--domains", f"@{names}"])
    err = capsys.readouterr().err
    assert rc == 1 and "['Wikipedia']" in err and str(names) in err
    assert not os.path.exists(tmp_path / "o")


@pytest.mark.parametrize("content,message", [("# only a comment\n\n", "names no domain"),
                                             ("A\nB\nA\n", "more than once")])
def test_bad_domain_files_are_one_line_errors(tool, tmp_path, content, message):
    path = tmp_path / "names.txt"
    path.write_text(content)
    with pytest.raises(SystemExit, match=message):
        tool.expand_domains([f"@{path}"])
    with pytest.raises(SystemExit, match="cannot read"):
        tool.expand_domains([f"@{tmp_path / 'missing.txt'}"])
