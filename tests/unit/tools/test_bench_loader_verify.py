"""tools/bench_loader.py --verify-cost: loader tokens/s with shard verification on and off,
their ratios and the xxh64 rate, printed from one small run."""

from __future__ import annotations

import re

from tests.unit.data.synthetic import make_synthetic_root
from tests.unit.tools.conftest import load_tool


def test_verify_cost_prints_both_modes_and_the_hash_rate(tmp_path, capsys):
    root = make_synthetic_root(str(tmp_path / "data"), [60, 40], seq_len=32, shard_size=1500)
    argv = ["--data", root, "--verify-cost", "--global-batch", "8", "--steps", "3", "--rounds", "1"]
    assert load_tool("bench_loader").main(argv) == 0
    out = capsys.readouterr().out
    assert re.search(r"2 domains, 100 sequences of 32 tokens, \d+ shards", out), out
    for mode in ("off", "on"):
        for phase in ("first round", "steady"):
            assert re.search(rf"loader, verify {mode}, +{phase} +: +[0-9.]+ M tokens/s", out), out
    assert re.search(r"ratio first round on/off +: +[0-9.]+", out)
    assert re.search(r"ratio steady on/off +: +[0-9.]+", out)
    assert re.search(r"xxh64 over the split's shards +: +[0-9.]+ MB/s", out)
