import json

import pytest
import zstandard

from draw_megatron.data.pile import (BadInputLog, expand_inputs, iter_documents, iter_raw_lines,
                                     parse_line, slugify)


def _line(text, domain="A"):
    return json.dumps({"text": text, "meta": {"pile_set_name": domain}}).encode() + b"\n"


BAD_LINES = {
    "invalid_json": b'{"text": "broken\n',
    "not_an_object": b"[1, 2]\n",
    "missing_text": json.dumps({"meta": {"pile_set_name": "A"}}).encode() + b"\n",
    "empty_text": _line(""),
    "missing_pile_set_name": json.dumps({"text": "x", "meta": {}}).encode() + b"\n",
    "invalid_utf8": b'{"text": "\xff\xfe", "meta": {"pile_set_name": "A"}}\n',
}


def test_every_bad_kind_is_counted_and_good_documents_survive(tmp_path):
    path = tmp_path / "mixed.jsonl"
    body = b""
    for i, bad in enumerate(BAD_LINES.values()):
        body += _line(f"good {i}") + bad
    body += json.dumps({"text": 5, "meta": {"pile_set_name": "A"}}).encode() + b"\n"
    body += b'{"text": "\\ud800 lone surrogate", "meta": {"pile_set_name": "A"}}\n'
    path.write_bytes(body)
    log = BadInputLog()
    docs = list(iter_documents([str(path)], log))
    assert [t for _, t in docs] == [f"good {i}" for i in range(len(BAD_LINES))]
    for reason in BAD_LINES:
        assert log.counts[reason] >= 1, reason
    assert log.counts["missing_text"] == 2  # missing and non-string
    assert log.counts["invalid_utf8"] == 2  # bad bytes and a lone surrogate escape
    assert log.locations["invalid_json"] == [f"{path}:2"]


def test_truncated_zst_keeps_complete_lines(tmp_path):
    data = b"".join(_line(f"doc {i} " + "x" * 50) for i in range(20000))
    comp = zstandard.ZstdCompressor(level=3).compress(data)
    path = tmp_path / "cut.jsonl.zst"
    path.write_bytes(comp[: len(comp) // 2])
    log = BadInputLog()
    docs = list(iter_documents([str(path)], log))
    assert log.counts == {"truncated_zst": 1}
    assert 0 < len(docs) < 20000
    assert [t for _, t in docs] == [f"doc {i} " + "x" * 50 for i in range(len(docs))]


def test_multi_frame_zst_is_read_whole(tmp_path):
    cctx = zstandard.ZstdCompressor()
    path = tmp_path / "frames.jsonl.zst"
    path.write_bytes(cctx.compress(_line("one")) + cctx.compress(_line("two", "B")))
    log = BadInputLog()
    assert list(iter_documents([str(path)], log)) == [("A", "one"), ("B", "two")]
    assert log.total == 0


def test_last_line_without_newline_and_blank_lines(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(_line("one") + b"\n" + _line("two").rstrip(b"\n"))
    log = BadInputLog()
    assert [t for _, t in iter_documents([str(path)], log)] == ["one", "two"]
    assert log.total == 0
    assert [n for n, _ in iter_raw_lines(str(path), log)] == [1, 2, 3]


def test_parse_line_keeps_meta_display_name():
    log = BadInputLog()
    assert parse_line(_line("t", "Wikipedia (en)"), "f:1", log) == ("Wikipedia (en)", "t")


def test_log_keeps_first_locations_only():
    log = BadInputLog()
    for i in range(10):
        log.add("empty_text", f"f:{i}")
    other = BadInputLog()
    other.add("empty_text", "g:1")
    log.merge(other)
    assert log.counts["empty_text"] == 11 and len(log.locations["empty_text"]) == 5
    assert "11 empty_text" in log.describe()


def test_slugs():
    assert slugify("Wikipedia (en)") == "wikipedia_en"
    assert slugify("DM Mathematics") == "dm_mathematics"
    assert slugify("Gutenberg (PG-19)") == "gutenberg_pg_19"
    assert slugify("日本語").startswith("domain_") and slugify("日本語") != slugify("中文")


def test_expand_inputs_names_a_missing_pattern(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.jsonl"):
        expand_inputs([str(tmp_path / "nothing.jsonl")])
