"""tools/bench_convert_scale.py --smoke: generates a Pile-format input, trains a tokenizer,
runs the real converter with 1 and 2 workers at two sizes, prints every figure, and leaves
nothing behind."""

from __future__ import annotations

import os
import re

from tests.unit.tools.conftest import load_tool

_RUN = re.compile(r"^size (?P<size>[0-9.]+) GB \((?P<mb>[0-9.]+) MB text, \d+ train files\), "
                  r"workers (?P<w>\d+): (?P<s>[0-9.]+) s \([0-9.]+ s with the process start\), "
                  r"(?P<total>[0-9.]+) MB/s total, (?P<per>[0-9.]+) MB/s per worker, peak RSS "
                  r"tree (?P<tree>\d+) MB \(largest process (?P<one>\d+) MB, up to "
                  r"(?P<procs>\d+) processes\)$")


def test_smoke_prints_throughput_and_peak_rss(tmp_path, capsys):
    assert load_tool("bench_convert_scale").main(["--smoke", "--tmp", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    runs = [m.groupdict() for m in map(_RUN.match, out.splitlines()) if m]
    assert sorted((r["size"], r["w"]) for r in runs) == [
        ("0.001", "1"), ("0.001", "2"), ("0.002", "1"), ("0.002", "2")], out
    for r in runs:
        assert float(r["mb"]) >= float(r["size"]) * 1e3 * 0.99
        assert float(r["total"]) > 0
        assert abs(float(r["per"]) * int(r["w"]) - float(r["total"])) < 0.02
        # The tree's sum covers the largest process, and with 2 workers the converter, its
        # 2 workers (and the resource tracker) were seen.
        assert int(r["tree"]) >= int(r["one"]) > 50
        assert int(r["procs"]) >= 1 + 2 * (r["w"] == "2")
    assert re.search(r"^input: [0-9.]+ MB of text in \d+ train files \+ val \+ test, 8 domains",
                     out, re.MULTILINE)
    assert "tokenizer: 600-piece BPE trained" in out
    for workers in (1, 2):
        assert re.search(rf"^peak RSS growth 0.001 -> 0.002 GB, workers {workers}: [+-]\d+ MB",
                         out, re.MULTILINE), out
    assert os.listdir(tmp_path) == []  # the generated input and outputs are deleted
