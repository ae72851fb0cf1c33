"""tools/bench_attention.py runs its CPU smoke path: every CPU row, timed and compared."""

import pytest

from tests.unit.tools.conftest import load_tool


def test_cpu_smoke(capsys):
    assert load_tool("bench_attention").main(["--smoke", "--iters", "2", "--seq-len", "64"]) == 0
    out = capsys.readouterr().out
    assert "T=64" in out and "forward only" in out
    rows = {tuple(line[:32].split()): line.split()[-3:] for line in out.splitlines()[2:]}
    assert set(rows) == {("sdpa,", "torch's", "order", "causal"), ("sdpa", "causal"),
                         ("flex", "causal"), ("flex", "document"),
                         ("sdpa", "per", "document", "document")}
    assert rows[("sdpa", "causal")][1] == "1.00"  # the baseline of the ratios
    assert all(float(ms) > 0 for ms, _, _ in rows.values())


def test_bad_shape_is_one_error_line(capsys):
    with pytest.raises(SystemExit):
        load_tool("bench_attention").main(["--heads", "0"])
    assert "--heads must be > 0" in capsys.readouterr().err
