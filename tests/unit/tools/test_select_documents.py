"""tools/select_documents.py: one domain's documents out of Pile files, bad lines skipped."""

import json

import zstandard

from tests.unit.tools.conftest import load_tool


def _doc(text, domain):
    return json.dumps({"text": text, "meta": {"pile_set_name": domain}}) + "\n"


def test_selects_domains_and_skips_bad_lines(tmp_path, capsys):
    (tmp_path / "a.jsonl").write_text(_doc("one", "A") + _doc("two", "B") + "{not json\n")
    (tmp_path / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(
        (_doc("three", "A") + _doc("four", "C")).encode()))
    out = tmp_path / "out" / "sel.jsonl"
    tool = load_tool("select_documents")
    assert tool.main([str(tmp_path), "--domain", "A", "--domain", "C", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["text"], r["meta"]["pile_set_name"]) for r in rows] == [
        ("one", "A"), ("three", "A"), ("four", "C")]
    out_text = capsys.readouterr().out
    assert "3 documents" in out_text and "skipped bad lines" in out_text
    # An existing output is kept unless --overwrite; an unknown domain names the ones there.
    assert tool.main([str(tmp_path), "--domain", "B", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and len(out.read_text().splitlines()) == 3
    assert tool.main([str(tmp_path), "--domain", "Z", "--out", str(tmp_path / "z.jsonl")]) == 2
    assert "no document of ['Z']" in capsys.readouterr().err
    assert not (tmp_path / "z.jsonl").exists()
    assert tool.main([str(tmp_path / "nothing*"), "--domain", "A", "--out",
                      str(tmp_path / "n.jsonl")]) == 2
